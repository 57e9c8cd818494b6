"""SQLAlchemy models' lifecycle events (Contract 2) through ModelTracker, with a
sync Session on SQLite (file and in memory) and PostgreSQL, real wasm plug-ins
and an outbox stand-in that records after-events in the app's transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import PendingRollbackError
from sqlalchemy.orm import Session

from hostwire import (
    CallContext,
    EventBus,
    EventHandlerError,
    EventRejected,
    HostFunction,
    Plugin,
    Subscriber,
)
from hostwire._errors import RecordInvalid, RecordReentrant, UntrackedChange
from hostwire._events import ModelTracker, sync_engine
from tracking_support import (
    TASK_EXPORTS,
    Base,
    FakeOutbox,
    Recorder,
    Status,
    Task,
    bus_for,
    handler,
)

NEW = {
    "id": None,
    "title": "write tests",
    "done": False,
    "status": "OPEN",
    "created_at": "2026-01-02T03:04:05Z",
    "origin": None,
    "cost": None,
}
STORED = {**NEW, "id": 1, "origin": "app"}


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sync_engine(database_url)
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        FakeOutbox.create(connection)
    yield engine
    engine.dispose()


@pytest.fixture
def tracker() -> Iterator[ModelTracker]:
    tracker = ModelTracker()
    tracker.track(Task)
    yield tracker
    tracker.close()


class World:
    """A tracker bound to one task plug-in and a stand-in outbox."""

    def __init__(self, tracker: ModelTracker, engine: sa.Engine, plugin: Plugin, recorder: Recorder,
                 bus: EventBus) -> None:  # fmt: skip
        self.tracker, self.engine, self.plugin, self.recorder = tracker, engine, plugin, recorder
        self.outbox = FakeOutbox()
        tracker.bind(bus, self.outbox)

    def rows(self) -> list[dict[str, Any]]:
        return self.outbox.rows(self.engine)

    def tasks(self) -> list[tuple[int, str]]:
        with self.engine.connect() as connection:
            return [(i, t) for i, t in connection.execute(sa.select(Task.id, Task.title))]


@pytest.fixture
def world_factory(tracker: ModelTracker, engine: sa.Engine, tmp_path: Path) -> Iterator[Any]:
    plugins: list[Plugin] = []

    def make(answers: dict[str, Any] | None = None, *, spec: bool = True) -> World:
        recorder = Recorder()
        plugin = handler("tasks-plugin", recorder, answers)
        plugins.append(plugin)
        bus = bus_for(tracker, [plugin], tmp_path) if spec else EventBus([Subscriber(plugin)])
        return World(tracker, engine, plugin, recorder, bus)

    yield make
    for plugin in plugins:
        plugin.close()


def create_task(engine: sa.Engine, title: str = "write tests") -> None:
    with Session(engine) as session:
        session.add(Task(title=title))
        session.commit()


# -- the steps and their records -------------------------------------------------


def test_a_create_runs_every_step_in_order_with_the_values_written(world_factory: Any) -> None:
    world = world_factory()
    create_task(world.engine)
    assert world.recorder.types == [
        "task.before_validation",
        "task.before_save",
        "task.before_create",
    ]
    for envelope in world.recorder.seen:
        # The Python default (done, status, created_at) is there before the write;
        # what the database makes (id, origin) is null until then.
        assert envelope["data"]["record"] == NEW
        assert envelope["data"]["previous"] is None
        assert envelope["data"]["changes"]["title"] == {"from": None, "to": "write tests"}
    rows = world.rows()
    assert [r["type"] for r in rows] == [
        "task.after_validation",
        "task.after_create",
        "task.after_save",
    ]
    assert {r["subject"] for r in rows} == {"task/1"}
    assert [r["targets"] for r in rows] == [
        [["tasks-plugin", "task_after_validation"]],
        [["tasks-plugin", "task_after_create"]],
        [["tasks-plugin", "task_after_save"]],
    ]
    # After the write every record is the row as stored, server default included.
    assert [r["envelope"]["data"]["record"] for r in rows] == [STORED] * 3
    assert world.outbox.notified == 1
    assert world.tasks() == [(1, "write tests")]


def test_an_update_has_the_committed_values_as_previous(world_factory: Any) -> None:
    world = world_factory()
    create_task(world.engine)
    world.recorder.seen.clear()
    with Session(world.engine) as session:
        task = session.get(Task, 1)
        assert task is not None
        task.done = True
        task.cost = Decimal("12.50")
        session.commit()
        # Expired by the commit: set without reading, the old value comes from the row.
        task.title = "tests written"
        session.commit()
    first, second = world.recorder.seen[:3], world.recorder.seen[3:]
    assert [e["type"] for e in first] == [
        "task.before_validation",
        "task.before_save",
        "task.before_update",
    ]
    assert first[0]["data"]["previous"] == STORED
    assert first[0]["data"]["record"] == {**STORED, "done": True, "cost": "12.50"}
    assert first[0]["data"]["changes"] == {
        "done": {"from": False, "to": True},
        "cost": {"from": None, "to": "12.50"},
    }
    assert second[0]["data"]["previous"] == {**STORED, "done": True, "cost": "12.50"}
    assert second[0]["data"]["changes"] == {"title": {"from": "write tests", "to": "tests written"}}
    updates = [r for r in world.rows() if r["type"] == "task.after_update"]
    assert [u["envelope"]["data"]["record"]["title"] for u in updates] == [
        "write tests",
        "tests written",
    ]
    assert world.outbox.notified == 3


def test_an_update_with_no_net_change_raises_no_event(world_factory: Any) -> None:
    world = world_factory()
    create_task(world.engine)
    world.recorder.seen.clear()
    with Session(world.engine) as session:
        task = session.get(Task, 1)
        assert task is not None
        task.title = "write tests"
        session.commit()
    assert world.recorder.seen == []
    assert len(world.rows()) == 3  # the create's


def test_a_destroy_runs_before_and_after_destroy(world_factory: Any) -> None:
    world = world_factory()
    create_task(world.engine)
    world.recorder.seen.clear()
    with Session(world.engine) as session:
        task = session.get(Task, 1)
        session.delete(task)
        session.commit()
    assert world.recorder.types == ["task.before_destroy"]
    assert world.recorder.seen[0]["data"]["record"] == STORED
    assert world.recorder.seen[0]["data"]["previous"] == STORED
    destroyed = world.rows()[-1]
    assert destroyed["type"] == "task.after_destroy"
    assert destroyed["envelope"]["data"]["record"] == STORED
    assert world.tasks() == []


def test_a_plugin_replaces_fields_and_the_written_row_has_them(world_factory: Any) -> None:
    tidied = {**NEW, "title": "Write tests", "cost": "3.00"}
    world = world_factory({"task_before_save": {"record": tidied}})
    create_task(world.engine)
    with Session(world.engine) as session:
        task = session.get(Task, 1)
        assert task is not None
        assert (task.title, task.cost, task.status) == ("Write tests", Decimal("3.00"), Status.OPEN)
    # before_create saw the replaced record; after_validation the record as validated.
    assert world.recorder.seen[2]["data"]["record"] == tidied
    validated, created, _ = world.rows()
    assert validated["envelope"]["data"]["record"] == STORED
    assert created["envelope"]["data"]["record"] == {
        **STORED,
        "title": "Write tests",
        "cost": "3.00",
    }


# -- refusing a change -------------------------------------------------------------


def test_a_rejection_rolls_the_whole_transaction_back(world_factory: Any) -> None:
    world = world_factory({"task_before_create": {"reject": {"reason": "no tasks on Sundays"}}})
    with Session(world.engine) as session:
        session.add(Task(title="first"))
        with pytest.raises(EventRejected) as caught:
            session.commit()
        assert caught.value.plugin == "tasks-plugin"
        assert caught.value.reason == "no tasks on Sundays"
    assert world.tasks() == []
    assert world.rows() == []
    assert world.outbox.notified == 0


def test_a_rejection_in_a_flush_undoes_the_earlier_flushes_too(world_factory: Any) -> None:
    world = world_factory({"task_before_update": {"reject": {"reason": "frozen"}}})
    with Session(world.engine) as session:
        session.add(Task(title="first"))
        session.flush()  # written, with its after-events, in the open transaction
        task = session.get(Task, 1)
        assert task is not None
        task.title = "renamed"
        with pytest.raises(EventRejected):
            session.flush()
        # As after a database error in a flush: the transaction is gone.
        with pytest.raises(PendingRollbackError):
            session.commit()
    assert world.tasks() == []
    assert world.rows() == []
    assert world.outbox.notified == 0


def test_a_failing_handler_refuses_the_change(world_factory: Any) -> None:
    world = world_factory({"task_before_save": "not json"})
    with Session(world.engine) as session:
        session.add(Task(title="first"))
        with pytest.raises(EventHandlerError):
            session.commit()
    assert world.tasks() == []


def test_an_invalid_record_is_refused_with_details(world_factory: Any) -> None:
    world = world_factory()
    with Session(world.engine) as session:
        session.add(Task(title="x" * 51))
        with pytest.raises(RecordInvalid) as caught:
            session.commit()
    assert caught.value.model == "task"
    assert caught.value.details[0]["field"] == "/title"
    assert "too long" in caught.value.details[0]["message"]
    assert world.recorder.seen == []  # refused before any event
    assert world.tasks() == []


def test_a_replaced_record_is_validated_again(world_factory: Any) -> None:
    world = world_factory(
        {"task_before_create": {"record": {**NEW, "title": "x" * 51}}}, spec=False
    )
    with Session(world.engine) as session:
        session.add(Task(title="fine"))
        with pytest.raises(RecordInvalid) as caught:
            session.commit()
    assert str(caught.value).startswith(
        "A plug-in made the task invalid (after task.before_create)"
    )
    assert world.tasks() == []


def test_a_plugin_may_not_change_the_primary_key(world_factory: Any) -> None:
    world = world_factory({"task_before_update": {"record": {**STORED, "id": 7}}})
    create_task(world.engine)
    with Session(world.engine) as session:
        task = session.get(Task, 1)
        assert task is not None
        task.done = True
        with pytest.raises(RecordInvalid, match="primary key"):
            session.commit()
    assert world.tasks() == [(1, "write tests")]


# -- after-events and the transaction ------------------------------------------------


def test_after_events_wait_for_the_commit_and_vanish_with_a_rollback(
    world_factory: Any,
) -> None:
    world = world_factory()
    with Session(world.engine) as session:
        session.add(Task(title="first"))
        session.flush()
        assert world.outbox.notified == 0
        session.rollback()
    assert world.rows() == []
    assert world.outbox.notified == 0
    create_task(world.engine)
    assert world.outbox.notified == 1
    assert len(world.rows()) == 3


def test_a_savepoint_rollback_drops_only_its_own_events(world_factory: Any) -> None:
    world = world_factory()
    with Session(world.engine) as session:
        session.add(Task(title="kept"))
        session.flush()
        with session.begin_nested() as savepoint:
            session.add(Task(title="dropped"))
            session.flush()
            savepoint.rollback()
        session.commit()
    assert world.tasks() == [(1, "kept")]
    assert {r["subject"] for r in world.rows()} == {"task/1"}
    assert world.outbox.notified == 1


# -- what the tracker does not see ---------------------------------------------------------


def test_before_bind_writes_go_through_with_one_warning(
    tracker: ModelTracker, engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "hostwire.tracking"):
        create_task(engine, "one")
        create_task(engine, "two")
    assert [r.getMessage() for r in caplog.records] == [
        "Task objects changed before hostwire started; those changes have no lifecycle events."
    ]
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(Task)).scalar() == 2


def test_bulk_statements_are_reported_once_per_kind(
    world_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    world = world_factory()
    create_task(world.engine)
    with caplog.at_level(logging.WARNING, "hostwire.tracking"), Session(world.engine) as session:
        session.execute(sa.update(Task).values(done=True))
        session.execute(sa.update(Task).values(done=False))
        session.execute(sa.delete(Task).where(Task.id == 5))
        session.execute(sa.select(Task))  # reads are fine
        session.commit()
    assert [r.getMessage().split(" changes")[0] for r in caplog.records] == [
        "session.execute(update(Task))",
        "session.execute(delete(Task))",
    ]


def test_a_strict_tracker_refuses_bulk_statements(engine: sa.Engine) -> None:
    tracker = ModelTracker(strict=True)
    tracker.track(Task)
    try:
        with Session(engine) as session, pytest.raises(UntrackedChange, match="without lifecycle"):
            session.execute(sa.insert(Task).values(title="sneaky"))
    finally:
        tracker.close()


def test_a_closed_tracker_leaves_sessions_alone(engine: sa.Engine) -> None:
    tracker = ModelTracker()
    tracker.track(Task)
    answers = {"task_before_create": {"reject": {"reason": "never"}}}
    with handler("guard", Recorder(), answers) as guard:
        tracker.bind(EventBus([Subscriber(guard)]), FakeOutbox())
        tracker.close()
        tracker.close()
        create_task(engine)  # nobody is tracking: no event, no rejection
    with engine.connect() as connection:
        assert connection.execute(sa.select(Task.title)).scalars().all() == ["write tests"]


# -- re-entrant changes ------------------------------------------------------------


# In-memory SQLite has one connection: a second transaction on the same thread
# cannot have one, so this in-thread stand-in for an in-process call needs a file.
@pytest.mark.parametrize("database_url", ["sqlite-file", "postgresql"], indirect=True)
def test_a_plugin_changing_its_own_record_fails_at_once(
    tracker: ModelTracker, engine: sa.Engine, tmp_path: Path
) -> None:
    inner: list[RecordReentrant] = []

    class Reentrant(Recorder):
        def host_function(self) -> HostFunction:
            plain = super().host_function()

            def note(context: CallContext, data: bytes) -> bytes:
                plain.handler(context, data)
                with Session(engine) as session:  # as an in-process call into the app would
                    task = session.get(Task, 1)
                    assert task is not None
                    task.title = "from the plug-in"
                    try:
                        session.commit()
                    except RecordReentrant as exc:
                        inner.append(exc)
                return b"{}"

            return HostFunction("note", note)

    create_task(engine)
    recorder = Reentrant()
    with handler("loop", recorder, exports=["task_before_update"]) as plugin:
        tracker.bind(bus_for(tracker, [plugin], tmp_path), FakeOutbox())
        with Session(engine) as session:
            task = session.get(Task, 1)
            assert task is not None
            task.done = True
            session.commit()
    assert len(inner) == 1
    assert inner[0].key == "task/1"
    assert "cannot change while a change of it is under way" in str(inner[0])
    with engine.connect() as connection:
        assert connection.execute(sa.select(Task.title, Task.done)).one() == ("write tests", True)


def test_tracking_a_class_twice_or_an_unmapped_one_is_refused(tracker: ModelTracker) -> None:
    with pytest.raises(ValueError, match="already tracked"):
        tracker.track(Task, name="other")
    with pytest.raises(TypeError, match="not a mapped SQLAlchemy class"):
        tracker.track(Recorder)
    assert tracker.models == {"task": Task}
    assert set(TASK_EXPORTS) == {f"task_{s.replace('.', '_')}" for s in _steps()}


def _steps() -> list[str]:
    return [
        f"{phase}_{step}"
        for phase in ("before", "after")
        for step in ("validation", "save", "create", "update", "destroy")
    ]
