"""Lifecycle events (Contract 2): the generic bus and outbox, with test plug-ins."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import wat
from conftest import compile_wat
from hostwire import (
    CallContext,
    EventBus,
    EventHandlerError,
    EventRejected,
    HostFunction,
    Limits,
    Outbox,
    Plugin,
    Subscriber,
    load_openapi,
    new_envelope,
)

LIGHT = {
    "id": "default",
    "name": "Default light",
    "status": "on",
    "color": "white",
    "brightness": 100,
    "created_at": "2026-11-21T20:00:00.000Z",
    "updated_at": "2026-11-21T23:00:00.000Z",
    "revision": 2,
}


class Recorder:
    """Host function ``note``: remembers every envelope a handler received."""

    def __init__(self, fail_first: int = 0) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def host_function(self) -> HostFunction:
        def note(context: CallContext, data: bytes) -> bytes:
            with self.lock:
                self.seen.append((context.plugin, json.loads(data)))
                if len(self.seen) <= self.fail_first:
                    raise RuntimeError("the handler's downstream is not ready")
            return b"{}"

        return HostFunction("note", note)


def handler(
    name: str,
    recorder: Recorder,
    *,
    answer: Any = None,
    trap: bool = False,
    exports: tuple[str, ...] = ("light_before_save",),
) -> Plugin:
    config: dict[str, object] = {}
    if answer is not None:
        config["answer"] = answer if isinstance(answer, str) else json.dumps(answer)
    if trap:
        config["trap"] = "yes"
    return Plugin(
        name,
        compile_wat(wat.event_handler(*exports)),
        config=config,
        host_functions=[recorder.host_function()],
        limits=Limits(timeout_ms=2000),
    )


@pytest.fixture(scope="module")
def light_spec() -> Any:
    return load_openapi("openapi/light.yaml")


def before_save(bus: EventBus, record: dict[str, Any] | None = None) -> dict[str, Any]:
    return bus.before("light", "before_save", record or dict(LIGHT), dict(LIGHT), {})


# -- before-events --------------------------------------------------------------


def test_only_plugins_that_export_the_event_are_called(light_spec: Any) -> None:
    recorder = Recorder()
    with (
        handler("saver", recorder) as saver,
        handler("other", recorder, exports=("light_after_update",)) as other,
    ):
        bus = EventBus([Subscriber(saver), Subscriber(other)], spec=light_spec)
        assert bus.handlers("light", "before_save") == [Subscriber(saver)]
        assert bus.handlers("light", "before_destroy") == []
        assert before_save(bus) == LIGHT
    ((plugin, envelope),) = recorder.seen
    assert plugin == "saver"
    assert envelope["type"] == "light.before_save"
    assert envelope["id"].startswith("evt_")
    assert envelope["data"] == {"record": LIGHT, "previous": LIGHT, "changes": {}}
    assert bus.problems(envelope) == []  # it matches the webhook declared in light.yaml


def test_handlers_run_in_order_and_see_replaced_records(light_spec: Any) -> None:
    recorder = Recorder()
    red = {**LIGHT, "color": "red"}
    dim = {**LIGHT, "color": "red", "brightness": 10}
    with (
        handler("first", recorder, answer={"record": red}) as first,
        handler("second", recorder, answer={}) as second,
        handler("third", recorder, answer={"record": dim}) as third,
    ):
        bus = EventBus([Subscriber(p) for p in (first, second, third)], spec=light_spec)
        assert before_save(bus) == dim
    assert [p for p, _ in recorder.seen] == ["first", "second", "third"]
    assert [e["data"]["record"]["color"] for _, e in recorder.seen] == ["white", "red", "red"]
    # One event: every handler got the same id.
    assert len({e["id"] for _, e in recorder.seen}) == 1


def test_a_rejection_stops_the_chain_and_names_the_plugin(light_spec: Any) -> None:
    recorder = Recorder()
    with (
        handler("guard", recorder, answer={"reject": {"reason": "too bright at night"}}) as guard,
        handler("after-guard", recorder) as later,
    ):
        bus = EventBus([Subscriber(guard), Subscriber(later)], spec=light_spec)
        with pytest.raises(EventRejected) as caught:
            before_save(bus)
    assert str(caught.value) == 'Plug-in "guard" rejected the change: too bright at night'
    assert (caught.value.plugin, caught.value.reason) == ("guard", "too bright at night")
    assert [p for p, _ in recorder.seen] == ["guard"]


@pytest.mark.parametrize(
    ("answer", "trap", "message"),
    [
        pytest.param(None, True, "trapped", id="trap"),
        pytest.param("not json", False, "returned invalid JSON", id="garbage"),
        pytest.param({"ok": True}, False, "must answer {}", id="unknown-answer"),
        pytest.param(
            {"record": [1]}, False, "replaced the record with list", id="record-not-object"
        ),
        pytest.param(
            {"record": {**LIGHT, "color": "purple"}},
            False,
            "returned an invalid record: /data/record/color",
            id="invalid-record",
        ),
    ],
)
def test_failing_handlers_follow_their_policy(
    light_spec: Any, answer: Any, trap: bool, message: str
) -> None:
    recorder = Recorder()
    with handler("flaky", recorder, answer=answer, trap=trap) as flaky:
        closed = EventBus([Subscriber(flaky, "fail_closed")], spec=light_spec)
        with pytest.raises(EventHandlerError) as caught:
            before_save(closed)
        assert message in str(caught.value)
        assert 'plug-in "flaky" is fail_closed' in str(caught.value)
        assert caught.value.plugin == "flaky"
        opened = EventBus([Subscriber(flaky, "fail_open")], spec=light_spec)
        assert before_save(opened) == LIGHT  # the change goes on, unchanged


def test_a_timeout_follows_the_policy(light_spec: Any) -> None:
    slow = Plugin(
        "slow",
        compile_wat(
            '(module (memory (export "memory") 1)'
            ' (func (export "light_before_save") (result i32) (loop $l (br $l)) (i32.const 0)))'
        ),
        limits=Limits(timeout_ms=50),
    )
    with slow:
        with pytest.raises(EventHandlerError, match="timed out after 50 ms"):
            before_save(EventBus([Subscriber(slow)], spec=light_spec))
        assert before_save(EventBus([Subscriber(slow, "fail_open")], spec=light_spec)) == LIGHT


# -- the outbox ------------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


def write_event(outbox: Outbox, subject: str, targets: list[tuple[str, str]], **fields: Any) -> str:
    envelope = new_envelope("light", "after_update", {**LIGHT, **fields}, LIGHT, {})
    with outbox.engine.begin() as conn:
        Outbox.add(conn, envelope, subject=subject, targets=targets)
    outbox.notify()
    event_id: str = envelope["id"]
    return event_id


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)  # polling a condition, not timing anything


@pytest.fixture
def outbox(db_path: Path) -> Iterator[Outbox]:
    box = Outbox(db_path, max_attempts=3, backoff_s=0.01, max_backoff_s=0.05, poll_s=0.05)
    yield box
    box.stop()


def states(outbox: Outbox, plugin: str) -> list[str]:
    return [d["state"] for d in reversed(outbox.deliveries(plugin=plugin))]


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


def test_backoff_is_exponential_capped_and_jittered(db_path: Path) -> None:
    low = Outbox(db_path, backoff_s=1, max_backoff_s=10, jitter=lambda: 0.0)
    high = Outbox(db_path, backoff_s=1, max_backoff_s=10, jitter=lambda: 1.0)
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


def test_a_restart_retries_pending_deliveries_at_once(db_path: Path) -> None:
    first = Outbox(db_path, backoff_s=3600, max_backoff_s=3600, poll_s=0.05)
    recorder = Recorder(fail_first=1)
    with handler("p", recorder, exports=("light_after_update",)) as plugin:
        write_event(first, "light/default", [("p", "light_after_update")])
        first.start([plugin])
        wait_for(lambda: first.deliveries()[0]["attempts"] == 1, "the failed attempt")
        first.stop()
        assert states(first, "p") == ["pending"]  # an hour of backoff ahead
        second = Outbox(db_path, backoff_s=3600, max_backoff_s=3600, poll_s=0.05)
        second.start([plugin])
        try:
            wait_for(lambda: states(second, "p") == ["delivered"], "delivery after the restart")
        finally:
            second.stop()


def test_outbox_tables_live_in_the_apps_database(db_path: Path, outbox: Outbox) -> None:
    tables = {
        row[0]
        for row in sqlite3.connect(db_path).execute(
            "SELECT name FROM sqlite_master WHERE type='table'"
        )
    }
    assert {"hostwire_events", "hostwire_deliveries"} <= tables


def test_old_deliveries_are_pruned_but_dead_ones_kept(outbox: Outbox) -> None:
    done = write_event(outbox, "light/default", [("p", "light_after_update")])
    dead = write_event(outbox, "light/default", [("p", "light_after_update")])
    with outbox.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE hostwire_deliveries SET state = 'delivered', delivered_at = 1000"
        )
        conn.exec_driver_sql(
            "UPDATE hostwire_deliveries SET state = 'dead' WHERE event_seq = "
            "(SELECT seq FROM hostwire_events WHERE id = ?)",
            (dead,),
        )
    assert outbox.prune() == 1
    assert [d["event_id"] for d in outbox.deliveries()] == [dead]
    assert outbox.deliveries(event_id=done) == []


# -- hardening (issue 11) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        pytest.param(None, TypeError, "not None", id="none"),
        pytest.param("", ValueError, "not an empty one", id="empty"),
    ],
)
def test_an_outbox_needs_a_database_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: Any, error: type, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message):
        Outbox(path)
    assert list(tmp_path.iterdir()) == []  # no file named "None" (or anything else)


class Gate:
    """Host function ``note`` that blocks each delivery until the test lets it go."""

    def __init__(self, parties: int = 0) -> None:
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = False
        self.barrier = threading.Barrier(parties, timeout=10) if parties else None

    def host_function(self) -> HostFunction:
        def note(context: CallContext, data: bytes) -> bytes:
            envelope = json.loads(data)
            first = False
            with self.lock:
                first = not any(
                    e["data"]["record"]["id"] == envelope["data"]["record"]["id"] for e in self.seen
                )
                self.seen.append(envelope)
            self.entered.set()
            if self.barrier is not None and first:
                self.barrier.wait()  # the first events of every record are in flight together
            elif self.barrier is None:
                assert self.release.wait(30), "the test never released the delivery"
                if self.fail:
                    raise RuntimeError("the app went away under the handler")
            return b"{}"

        return HostFunction("note", note)


def gated_handler(gate: Gate) -> Plugin:
    return Plugin(
        "gated",
        compile_wat(wat.event_handler("light_after_update")),
        host_functions=[gate.host_function()],
        limits=Limits(timeout_ms=60_000),
    )


TARGET = [("gated", "light_after_update")]


def test_records_are_delivered_concurrently_and_in_order_per_record(db_path: Path) -> None:
    outbox = Outbox(db_path, concurrency=4, poll_s=0.05, backoff_s=0.01, max_backoff_s=0.05)
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


def test_stop_lets_a_delivery_in_flight_finish_within_the_grace_period(db_path: Path) -> None:
    outbox = Outbox(db_path, poll_s=0.05)
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


def test_a_delivery_still_running_after_the_grace_period_stays_pending(db_path: Path) -> None:
    outbox = Outbox(db_path, poll_s=0.05)
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
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(db_path, warn_lag_s=30)
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


@pytest.mark.parametrize(
    ("output", "message"),
    [
        pytest.param(b"\xff\xfe", "returned invalid JSON: it is not UTF-8", id="bad-utf8"),
        pytest.param(b"[" * 100_000, "is JSON nested too deeply", id="deep-json"),
    ],
)
def test_unreadable_before_answers_are_plugin_errors(
    light_spec: Any, output: bytes, message: str
) -> None:
    class Answers(Plugin):
        def call(self, export: str, data: bytes | str = b"", **extra: Any) -> bytes:
            return output

    recorder = Recorder()
    with handler("odd", recorder) as plugin:
        plugin.__class__ = Answers
        with pytest.raises(EventHandlerError, match=message) as caught:
            before_save(EventBus([Subscriber(plugin)], spec=light_spec))
    assert caught.value.plugin == "odd"
    assert "codec" not in str(caught.value)


def test_a_fail_open_failure_is_logged_on_one_escaped_line(
    light_spec: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The export fails with error_set(config "message"): its own words reach the log.
    module = f"""(module
{wat.KERNEL}
  (memory (export "memory") 1)
  (data (i32.const 0) "message")
{wat.TO_BLOCK}
  (func (export "light_before_save") (result i32)
    (call $error_set (call $config_get (call $to_block (i32.const 0) (i32.const 7))))
    (i32.const 1)))"""
    words = "no \x1b[31mred\x1b[0m today \u202eeulb"
    failing = Plugin("flaky", compile_wat(module), config={"message": words})
    with failing, caplog.at_level("WARNING", logger="hostwire"):
        assert before_save(EventBus([Subscriber(failing, "fail_open")], spec=light_spec)) == LIGHT
    (line,) = [r.getMessage() for r in caplog.records if "fail_open" in r.getMessage()]
    assert line.isprintable()
    assert "no \\x1b[31mred\\x1b[0m today \\u202eeulb" in line
