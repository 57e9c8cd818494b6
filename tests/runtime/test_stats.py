"""``PluginStats``: a call appends its latency; the histogram is folded from them when
read, and by the folder thread, with no call lost between threads."""

from __future__ import annotations

import threading

from hostwire._runtime import Limits, Plugin
from hostwire._runtime.stats import _FOLDER, BUCKETS, LATENCY_BUCKETS_S, ExportStats


def test_fold_puts_each_latency_in_its_bucket_and_sums_them() -> None:
    stats = ExportStats()
    # One on a bound goes in that bound's bucket (Prometheus's le); past the last, +Inf.
    latencies = [0.000001, LATENCY_BUCKETS_S[0], 0.00002, 0.3, 10.0, 11.0, 99.0]
    for seconds in latencies:
        stats.record(seconds)
    assert stats.pending == latencies  # nothing is bucketed by the call itself
    expected = [0] * BUCKETS
    expected[0] = 2
    expected[LATENCY_BUCKETS_S.index(0.000025)] = 1
    expected[LATENCY_BUCKETS_S.index(0.5)] = 1
    expected[LATENCY_BUCKETS_S.index(10.0)] = 1
    expected[-1] = 2
    assert stats.buckets == expected
    assert stats.pending == []
    assert abs(stats.sum_s - sum(latencies)) < 1e-9
    assert stats.timed == len(latencies)
    assert [seen for _, seen in stats.cumulative()][-1] == len(latencies)


def test_more_latencies_than_one_sorted_chunk_all_count() -> None:
    stats = ExportStats()
    for i in range(5000):
        stats.record(0.00001 if i % 2 else 1.5)
    assert stats.timed == 5000
    assert stats.buckets[0] == 2500
    assert stats.buckets[LATENCY_BUCKETS_S.index(2.5)] == 2500


def test_calls_from_many_threads_while_folding_lose_none(hostile_wasm: bytes) -> None:
    from conftest import echo_host_function

    threads, calls = 4, 300
    with Plugin(
        "busy",
        hostile_wasm,
        host_functions=[echo_host_function()],
        limits=Limits(max_instances=threads),
    ) as plugin:
        stats = plugin.stats.export("echo")
        go = threading.Barrier(threads + 1)

        def caller() -> None:
            go.wait()
            for _ in range(calls):
                plugin.call("echo", b"hi")

        workers = [threading.Thread(target=caller) for _ in range(threads)]
        for worker in workers:
            worker.start()
        go.wait()
        folds = 0
        while any(worker.is_alive() for worker in workers):
            stats.fold()  # folds racing the appends
            folds += 1
        for worker in workers:
            worker.join()
        assert stats.timed == threads * calls
        assert plugin.stats.snapshot()["exports"]["echo"]["calls"] == threads * calls
        assert folds > 0


def test_the_folder_thread_watches_every_export_and_empties_them() -> None:
    stats = ExportStats()
    stats.record(0.001)
    assert any(t.name == "hostwire-stats" and t.daemon for t in threading.enumerate())
    _FOLDER.fold_all()  # what the thread runs every FOLD_EVERY_S
    assert stats.pending == []
    assert stats.timed == 1


def test_a_forked_child_folds_in_a_thread_of_its_own() -> None:
    import os

    ExportStats()  # the parent's folder thread runs
    pid = os.fork()
    if pid == 0:  # the child: threads do not survive a fork, so the folder starts again
        try:
            stats = ExportStats()
            stats.record(0.002)
            thread = _FOLDER._thread
            ok = (
                thread is not None
                and thread.is_alive()
                and thread.ident != threading.main_thread().ident
            )
            os._exit(0 if ok and stats.timed == 1 else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
