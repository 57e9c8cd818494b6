"""What recording a call's metrics costs: a 100-byte echo with and without it.

One plug-in, its one instance, called in batches with its export's recording on
(as every hostwire plug-in calls) and off (what ``Plugin(..., stats=False)``
resolves at load: no append of the latency), switched between batches. The same
instance and the same memory serve both, so the difference is the recording
alone, not where two plug-ins' instances happen to sit in memory (which moved
two separate plug-ins' ratio by 2% from run to run). Batches of the two go back
to back in alternating order, so that machine noise hits both alike; a sample is
the mean of a batch, so that the benchmark's own clock readings do not blur a
difference of some tens of nanoseconds; the ratio is the median of the pairs'
ratios. An A/A pair (recording off in both) shows the method's own noise. Goal
(issue 18): with / without <= 1.02.

    make bench          # or: .venv/bin/python benchmarks/bench_metrics.py [--pairs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "platform"))

from _bench import ECHO_WAT, print_table, summary
from hostwire import Limits, Plugin
from hostwire._runtime.module import to_binary

GOAL = 1.02
RECORDING = "Plugin.call, metrics recorded"
NOT_RECORDING = "Plugin.call, recording off"


Variant = tuple[Callable[[], object], Callable[[], object]]  # (switch to it, one call)


def batch_mean(variant: Variant, batch: int) -> float:
    """The mean time of one of ``batch`` calls, in µs."""
    switch, call = variant
    switch()
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(batch):
        call()
    return (clock() - start) / batch / 1000


def paired(
    with_metrics: Variant,
    without: Variant,
    *,
    pairs: int,
    batch: int,
    max_seconds: float,
) -> tuple[list[float], list[float], list[float]]:
    """Batches of both variants back to back, in alternating order: each pair's ratio
    sees the same moment of the machine. (with µs, without µs, ratios)."""
    for _ in range(20):  # warm up
        batch_mean(with_metrics, batch)
        batch_mean(without, batch)
    timed_with, timed_without, ratios = [], [], []
    deadline = time.monotonic() + max_seconds
    for i in range(pairs):
        if i and time.monotonic() > deadline:
            break
        if i % 2:
            b = batch_mean(without, batch)
            a = batch_mean(with_metrics, batch)
        else:
            a = batch_mean(with_metrics, batch)
            b = batch_mean(without, batch)
        timed_with.append(a)
        timed_without.append(b)
        ratios.append(a / b)
    return timed_with, timed_without, ratios


def floor_ns(calls: int = 200_000, rounds: int = 7) -> float:
    """What recording costs outside a plug-in call: Plugin.call's own lines (a clock
    reading, a subtraction, an append) in a plain loop, minus the loop without them."""
    clock = time.perf_counter

    def loop(record: Callable[[float], None] | None) -> float:
        kept: list[float] = []
        if record is not None:
            record = kept.append
        begin = time.perf_counter_ns()
        for n in range(calls):
            start = clock()
            if record is not None:
                record(clock() - start)
            if n & 16383 == 0:
                kept.clear()  # as the folder does, so the list stays small
        return (time.perf_counter_ns() - begin) / calls

    return statistics.median(loop(print) - loop(None) for _ in range(rounds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=4000, help="pairs of batches")
    parser.add_argument("--batch", type=int, default=50, help="calls per batch")
    parser.add_argument("--max-seconds", type=float, default=40.0)
    args = parser.parse_args()

    wasm = to_binary(ECHO_WAT.encode(), "echo.wat")
    payload = json.dumps({"id": "light-1", "name": "kitchen", "on": True, "hue": 120}).encode()
    payload = payload + b" " * (100 - len(payload))
    plugin = Plugin("echo", wasm, limits=Limits(max_instances=1))
    entries = plugin._entries
    name, record = entries["echo"]
    if record is None:
        print("the plug-in does not record its calls")
        return 1

    def on() -> None:
        entries["echo"] = (name, record)

    def off() -> None:
        entries["echo"] = (name, None)

    def call() -> None:
        plugin.call("echo", payload)

    try:
        timed_with, timed_without, ratios = paired(
            (on, call), (off, call), pairs=args.pairs, batch=args.batch,
            max_seconds=args.max_seconds,
        )  # fmt: skip
        counted = plugin.stats.export("echo").calls
        _, _, noise = paired(
            (off, call), (off, call), pairs=args.pairs // 4, batch=args.batch,
            max_seconds=args.max_seconds / 4,
        )  # fmt: skip
    finally:
        plugin.close()
    # Every call with recording on is counted, and none of the others.
    expected = (20 + len(ratios)) * args.batch
    if counted != expected:
        print(f"recording is not what it should be: {counted} calls counted, not {expected}")
        return 1

    calls = len(ratios) * args.batch
    print(f"100-byte echo, {calls} calls each, in {len(ratios)} pairs of {args.batch}-call batches")
    print_table({RECORDING: summary(timed_with), NOT_RECORDING: summary(timed_without)}, 32)
    ratio = statistics.median(ratios)
    cost_ns = (ratio - 1) * statistics.median(timed_without) * 1000
    print(f"metrics cost per call: {cost_ns:.0f} ns (the median ratio of a pair)")
    print(f"A/A (recording off in both), median of the pairs: {statistics.median(noise):.3f}")
    floor = floor_ns()
    echo_ns = statistics.median(timed_without) * 1000
    print(
        f"floor: the same lines outside a call cost {floor:.0f} ns = {floor / echo_ns:.1%} "
        "of an echo (a clock reading is most of it)"
    )
    print(f"with / without metrics, median of the pairs: {ratio:.3f}  (goal <= {GOAL:.2f})")
    print("goal met" if ratio <= GOAL else "goal missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
