"""The outbox's guarantees (Contract 2's after-events), on every database it supports.

Each test runs on an SQLite file, on in-memory SQLite and on PostgreSQL (the
``database_url`` fixture). The outboxes of one test share one engine, as an
app and its outbox share the app's database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text

from event_plugins import (
    LIGHT,
    TARGET,
    Gate,
    Recorder,
    gated_handler,
    handler,
    states,
    wait_for,
    write_event,
)
from hostwire import Outbox, StorageError, new_envelope
from hostwire._events import sync_engine


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = sync_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def outbox(engine: Engine) -> Iterator[Outbox]:
    box = Outbox(engine, max_attempts=3, backoff_s=0.01, max_backoff_s=0.05, poll_s=0.05)
    yield box
    box.stop()


def test_deliveries_happen_once_per_plugin_and_in_order(outbox: Outbox) -> None:
    recorder = Recorder(fail_first=1)  # the first attempt fails: later events must wait
    targets = [("follower", "light_after_update")]
    with handler("follower", recorder, exports=("light_after_update",)) as follower:
        ids = [write_event(outbox, "light/default", targets, brightness=n) for n in (1, 2, 3)]
        other = write_event(outbox, "light/lamp", targets, brightness=9)
        outbox.start([follower])
        wait_for(lambda: states(outbox, "follower") == ["delivered"] * 4, "four deliveries")
    seen = [e["id"] for _, e in recorder.seen]
    failed = seen[0]  # the two records go out concurrently: either may be first
    assert failed in (ids[0], other)
    default_order = [i for i in seen if i in ids]
    if failed == ids[0]:
        assert default_order == [ids[0], ids[0], ids[1], ids[2]]  # retried, then in order
        assert seen.count(other) == 1
    else:
        assert default_order == ids
        assert seen.count(other) == 2
    first = outbox.deliveries(event_id=failed)[0]
    assert first["attempts"] == 2
    assert first["last_error"] is None
    assert first["delivered_at"] is not None


def test_failing_deliveries_back_off_then_go_dead_and_can_be_replayed(outbox: Outbox) -> None:
    recorder = Recorder(fail_first=3)
    with handler("broken", recorder, exports=("light_after_update",)) as broken:
        event = write_event(outbox, "light/default", [("broken", "light_after_update")])
        outbox.start([broken])
        wait_for(lambda: states(outbox, "broken") == ["dead"], "the dead letter")
        (dead,) = outbox.deliveries(state="dead")
        assert dead["attempts"] == 3
        assert "the handler's downstream is not ready" in dead["last_error"]
        assert outbox.replay(event) == 1
        wait_for(lambda: states(outbox, "broken") == ["delivered"], "the replayed delivery")
    assert outbox.replay("evt_unknown") == 0
    assert len(recorder.seen) == 4


def test_backoff_is_exponential_capped_and_jittered(tmp_path: Path) -> None:
    low = Outbox(tmp_path / "app.db", backoff_s=1, max_backoff_s=10, jitter=lambda: 0.0)
    high = Outbox(tmp_path / "app.db", backoff_s=1, max_backoff_s=10, jitter=lambda: 1.0)
    assert [low.backoff(n) for n in (1, 2, 3, 4, 5, 6)] == [0.5, 1, 2, 4, 5, 5]
    assert [high.backoff(n) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]


def test_an_event_added_in_a_rolled_back_transaction_does_not_exist(outbox: Outbox) -> None:
    with outbox.engine.connect() as conn, conn.begin() as transaction:
        Outbox.add(
            conn,
            new_envelope("light", "after_update", LIGHT, LIGHT, {}),
            subject="s",
            targets=[("p", "light_after_update")],
        )
        transaction.rollback()
    assert outbox.deliveries() == []


def test_a_restart_retries_pending_deliveries_at_once(engine: Engine) -> None:
    first = Outbox(engine, backoff_s=3600, max_backoff_s=3600, poll_s=0.05)
    recorder = Recorder(fail_first=1)
    with handler("p", recorder, exports=("light_after_update",)) as plugin:
        write_event(first, "light/default", [("p", "light_after_update")])
        first.start([plugin])
        wait_for(lambda: first.deliveries()[0]["attempts"] == 1, "the failed attempt")
        first.stop()
        assert states(first, "p") == ["pending"]  # an hour of backoff ahead
        second = Outbox(engine, backoff_s=3600, max_backoff_s=3600, poll_s=0.05)
        second.start([plugin])
        try:
            wait_for(lambda: states(second, "p") == ["delivered"], "delivery after the restart")
        finally:
            second.stop()


def test_outbox_tables_live_in_the_apps_database(engine: Engine, outbox: Outbox) -> None:
    assert outbox.engine is engine
    tables = set(inspect(engine).get_table_names())
    assert {"hostwire_events", "hostwire_deliveries", "hostwire_schema"} <= tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM hostwire_schema")).scalars().all() == [2]


def test_old_deliveries_are_pruned_but_dead_ones_kept(outbox: Outbox) -> None:
    done = write_event(outbox, "light/default", [("p", "light_after_update")])
    dead = write_event(outbox, "light/default", [("p", "light_after_update")])
    with outbox.engine.begin() as conn:
        conn.execute(
            text("UPDATE hostwire_deliveries SET state = 'delivered', delivered_at = 1000")
        )
        conn.execute(
            text(
                "UPDATE hostwire_deliveries SET state = 'dead' WHERE event_seq = "
                "(SELECT seq FROM hostwire_events WHERE id = :id)"
            ),
            {"id": dead},
        )
    assert outbox.prune() == 1
    assert [d["event_id"] for d in outbox.deliveries()] == [dead]
    assert outbox.deliveries(event_id=done) == []


def test_records_are_delivered_concurrently_and_in_order_per_record(engine: Engine) -> None:
    outbox = Outbox(engine, concurrency=4, poll_s=0.05, backoff_s=0.01, max_backoff_s=0.05)
    gate = Gate(parties=3)  # one worker at a time could never meet three at the barrier
    records = ["a", "b", "c"]
    with gated_handler(gate) as plugin:
        for n in range(1, 5):
            for record in records:
                write_event(outbox, f"light/{record}", TARGET, id=record, brightness=n)
        outbox.start([plugin])
        try:
            wait_for(lambda: states(outbox, "gated") == ["delivered"] * 12, "twelve deliveries")
        finally:
            outbox.stop()
    assert not gate.barrier.broken  # type: ignore[union-attr]
    for record in records:
        order = [
            e["data"]["record"]["brightness"]
            for e in gate.seen
            if e["data"]["record"]["id"] == record
        ]
        assert order == [1, 2, 3, 4]
    assert all(d["attempts"] == 1 for d in outbox.deliveries())


def test_stop_lets_a_delivery_in_flight_finish_within_the_grace_period(engine: Engine) -> None:
    outbox = Outbox(engine, poll_s=0.05)
    gate = Gate()
    with gated_handler(gate) as plugin:
        write_event(outbox, "light/default", TARGET)
        outbox.start([plugin])
        assert gate.entered.wait(20)
        stopper = threading.Thread(target=outbox.stop, kwargs={"grace_s": 30})
        stopper.start()
        gate.release.set()
        stopper.join(30)
        assert not stopper.is_alive()
    assert [(d["state"], d["attempts"]) for d in outbox.deliveries()] == [("delivered", 1)]


def test_a_delivery_still_running_after_the_grace_period_stays_pending(engine: Engine) -> None:
    outbox = Outbox(engine, poll_s=0.05)
    gate = Gate()
    gate.fail = True  # it fails once let go: the shutdown, not the handler, is to blame
    with gated_handler(gate) as plugin:
        write_event(outbox, "light/default", TARGET)
        outbox.start([plugin])
        assert gate.entered.wait(20)
        outbox.stop(grace_s=0.05)
        gate.release.set()
        workers = [t for t in threading.enumerate() if t.name.startswith("hostwire-deliver-gated")]
        for worker in workers:
            worker.join(30)
            assert not worker.daemon  # the interpreter waits for it: no teardown inside wasm
    (delivery,) = outbox.deliveries()
    assert (delivery["state"], delivery["attempts"], delivery["last_error"]) == ("pending", 0, None)


def test_the_summary_and_the_log_say_when_deliveries_lag(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(engine, warn_lag_s=30)
    write_event(outbox, "light/default", [("slow", "light_after_update")])
    write_event(outbox, "light/lamp", [("slow", "light_after_update")])
    (fresh,) = outbox.summary()
    assert (fresh["plugin"], fresh["pending"], fresh["dead"], fresh["lagging"]) == (
        "slow",
        2,
        0,
        False,
    )
    later = time.time() + 45
    (late,) = outbox.summary(now=later)
    assert late["lagging"] is True
    assert late["oldest_pending_age_s"] >= 45
    with caplog.at_level("WARNING", logger="hostwire.outbox"):
        outbox.check_lag(now=later)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "hostwire.outbox"]
    assert line.startswith('deliveries to "slow" lag: the oldest of 2 pending is')
    assert "warn_lag_s is 30" in line


def test_every_add_records_its_deliveries(outbox: Outbox) -> None:
    # Issue 13: on PostgreSQL, every add failed ("the query has 0 placeholders but
    # 6 parameters were passed").
    targets = [("a", "light_after_update"), ("b", "light_after_save")]
    first = write_event(outbox, "light/default", targets)
    second = write_event(outbox, "light/default", targets, brightness=5)
    unheard = write_event(outbox, "light/lamp", [])  # no plug-in subscribes: no delivery
    found = outbox.deliveries()
    assert [(d["event_id"], d["plugin"], d["export"]) for d in found] == [
        (second, "a", "light_after_update"),
        (second, "b", "light_after_save"),
        (first, "a", "light_after_update"),
        (first, "b", "light_after_save"),
    ]
    assert {(d["state"], d["attempts"], d["subject"]) for d in found} == {
        ("pending", 0, "light/default")
    }
    assert outbox.deliveries(event_id=unheard) == []
    (only,) = outbox.deliveries(event_id=first, plugin="b")
    assert only["type"] == "light.after_update"


def test_tables_of_a_newer_hostwire_are_refused(engine: Engine, outbox: Outbox) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE hostwire_schema SET version = 3"))
    with pytest.raises(StorageError) as caught:
        Outbox(engine)
    assert caught.value.kind == "schema_too_new"
    assert "have schema version 3, newer than this hostwire knows (2)" in str(caught.value)


def _bulk_deliveries(outbox: Outbox, rows: list[tuple[str, str]], created_at: float) -> None:
    """One event and one delivery per (plugin, state), as a long-running app leaves them."""
    from hostwire._events.tables import deliveries, events

    with outbox.engine.begin() as conn:
        first = conn.execute(text("SELECT coalesce(max(seq), 0) FROM hostwire_events")).scalar()
        seqs = range(int(first or 0) + 1, int(first or 0) + 1 + len(rows))
        conn.execute(
            events.insert(),
            [
                {
                    "seq": seq,
                    "id": f"bulk-{seq}",
                    "type": "t",
                    "subject": f"s{seq % 7}",
                    "payload": "{}",
                    "chain": "[]",
                    "created_at": created_at + seq * 1e-3,
                }
                for seq in seqs
            ],
        )
        conn.execute(
            deliveries.insert(),
            [
                {
                    "event_seq": seq,
                    "plugin": plugin,
                    "export": "on",
                    "subject": f"s{seq % 7}",
                    "state": state,
                    "attempts": 1,
                    "next_attempt_at": created_at,
                }
                for seq, (plugin, state) in zip(seqs, rows, strict=True)
            ],
        )


def test_the_summary_counts_undelivered_rows_and_never_reads_the_delivered_ones(
    engine: Engine, outbox: Outbox
) -> None:
    # /metrics and every open console read the summary every few seconds, in an
    # app whose outbox keeps a week of delivered rows: its cost must not grow with them.
    start = time.time() - 100
    rows = [("busy", "delivered")] * 2000 + [("done", "delivered")] * 50
    rows += [("busy", "pending")] * 3 + [("busy", "dead")] * 2 + [("gone", "dead")]
    _bulk_deliveries(outbox, rows, created_at=start)
    by_plugin = {entry["plugin"]: entry for entry in outbox.summary(now=start + 100)}
    assert sorted(by_plugin) == ["busy", "gone"]  # "done" has nothing waiting
    busy, gone = by_plugin["busy"], by_plugin["gone"]
    assert (busy["pending"], busy["dead"], gone["pending"], gone["dead"]) == (3, 2, 0, 1)
    # The oldest pending is the first pending event (seq 2051), not a delivered one.
    assert busy["oldest_pending_age_s"] == pytest.approx(100 - 2051e-3, abs=1e-3)
    assert gone["oldest_pending_age_s"] == 0.0
    statement = outbox._summary.text
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = [row[3] for row in conn.execute(text("EXPLAIN QUERY PLAN " + statement))]
            scans = [step for step in plan if step.startswith("SCAN") and step != "SCAN names"]
        else:  # every read of the deliveries is an index search, not a filtered walk
            conn.execute(text("SET enable_seqscan = off"))
            plan = [row[0] for row in conn.execute(text("EXPLAIN " + statement))]
            scans = [
                step
                for step, then in zip(plan, [*plan[1:], ""], strict=True)
                if " on hostwire_deliveries" in step and "Index Cond" not in then
            ]
    assert scans == [], plan


def test_metrics_and_the_console_share_a_summary_read_less_than_a_second_ago(
    outbox: Outbox,
) -> None:
    write_event(outbox, "light/default", [("slow", "light_after_update")])
    first = outbox.recent_summary()
    write_event(outbox, "light/lamp", [("slow", "light_after_update")])
    assert outbox.recent_summary() is first  # read once for a scrape and a poll at once
    (fresh,) = outbox.recent_summary(max_age_s=0)
    assert fresh["pending"] == 2


def test_a_pending_delivery_whose_event_is_gone_is_counted_without_an_age(
    tmp_path: Path,
) -> None:
    # Only on SQLite, which does not enforce foreign keys by default (PostgreSQL does).
    from hostwire._events.tables import deliveries

    outbox = Outbox(tmp_path / "app.db")
    try:
        with outbox.engine.begin() as conn:
            conn.execute(
                deliveries.insert(),
                {"event_seq": 999, "plugin": "orphan", "export": "on", "subject": "s",
                 "state": "pending", "attempts": 0, "next_attempt_at": 0.0},
            )  # fmt: skip
        (entry,) = outbox.summary()
    finally:
        outbox.close()
    assert (entry["plugin"], entry["pending"], entry["oldest_pending_age_s"]) == ("orphan", 1, 0.0)
