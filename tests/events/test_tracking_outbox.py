"""ModelTracker end to end with the outbox in the app's database: SQLite file,
in-memory SQLite and PostgreSQL, with a Session and an AsyncSession. After-events
are written in the app's transaction and delivered to the plug-in once it commits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from event_plugins import states, wait_for
from hostwire import EventRejected, Outbox
from hostwire._events import ModelTracker, sync_engine
from tracking_support import Base, Recorder, Task, bus_for, handler

DURABLE = ["sqlite-file", "postgresql"]
LIFE = [
    "task.after_validation",
    "task.after_create",
    "task.after_save",
    "task.after_validation",
    "task.after_update",
    "task.after_save",
    "task.after_destroy",
]


@pytest.fixture
def tracker() -> Iterator[ModelTracker]:
    tracker = ModelTracker()
    tracker.track(Task)
    yield tracker
    tracker.close()


def after_types(recorder: Recorder) -> list[str]:
    with recorder.lock:
        return [t for t in recorder.types if ".after_" in t]


def test_a_sessions_changes_reach_the_plugin_through_the_outbox(
    database_url: str, tracker: ModelTracker, tmp_path: Path
) -> None:
    engine = sync_engine(database_url)
    Base.metadata.create_all(engine)
    outbox = Outbox(engine, poll_s=0.05)
    recorder = Recorder()
    try:
        check_a_session(engine, outbox, recorder, tracker, tmp_path)
    finally:
        engine.dispose()


def check_a_session(
    engine: sa.Engine, outbox: Outbox, recorder: Recorder, tracker: ModelTracker, tmp_path: Path
) -> None:
    answers = {"task_before_destroy": {"reject": {"reason": "keep it"}}}
    with (
        handler("tasks", recorder) as plugin,
        handler("guard", Recorder(), answers, exports=["task_before_destroy"]) as guard,
    ):
        tracker.bind(bus_for(tracker, [plugin], tmp_path), outbox)
        outbox.start([plugin])
        try:
            with Session(engine) as session:
                session.add(Task(title="rolled back"))
                session.flush()
                session.rollback()
                task = Task(title="write tests")
                session.add(task)
                session.commit()
                task.done = True
                session.commit()
                session.delete(task)
                session.commit()
            wait_for(
                lambda: states(outbox, "tasks") == ["delivered"] * len(LIFE),
                "seven deliveries",
            )
            # A rejected destroy leaves no event and the row in place.
            tracker.bind(bus_for(tracker, [guard], tmp_path), outbox)
            with Session(engine) as session:
                session.add(Task(title="kept"))
                session.commit()
                kept = session.scalars(sa.select(Task)).one()
                session.delete(kept)
                with pytest.raises(EventRejected):
                    session.commit()
        finally:
            outbox.close()
    assert after_types(recorder) == LIFE
    created = next(e for e in recorder.seen if e["type"] == "task.after_create")
    assert created["data"]["record"]["title"] == "write tests"
    assert created["data"]["record"]["origin"] == "app"
    # One record throughout (SQLite reuses the rolled-back id, PostgreSQL does not).
    assert len({e["data"]["record"]["id"] for e in recorder.seen if ".after_" in e["type"]}) == 1
    with engine.connect() as connection:
        assert connection.execute(sa.select(Task.title)).scalars().all() == ["kept"]
    assert len(outbox.deliveries()) == len(LIFE)  # the guard subscribes to no after-event


@pytest.mark.parametrize("database_url", DURABLE, indirect=True)
def test_an_async_sessions_changes_reach_the_plugin_through_the_outbox(
    database_url: str, tracker: ModelTracker, tmp_path: Path
) -> None:
    url = database_url.replace("sqlite:", "sqlite+aiosqlite:", 1)
    engine = create_async_engine(url)
    outbox = Outbox(engine, poll_s=0.05)
    recorder = Recorder()

    async def app() -> None:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        async with AsyncSession(engine, expire_on_commit=False) as session:
            session.add(Task(title="rolled back"))
            await session.flush()
            await session.rollback()
            task = Task(title="write tests")
            session.add(task)
            await session.commit()
            task.done = True
            await session.commit()
            await session.delete(task)
            await session.commit()
        await engine.dispose()

    with handler("tasks", recorder) as plugin:
        tracker.bind(bus_for(tracker, [plugin], tmp_path), outbox)
        outbox.start([plugin])
        try:
            anyio.run(app)
            wait_for(
                lambda: states(outbox, "tasks") == ["delivered"] * len(LIFE),
                "seven deliveries",
            )
        finally:
            outbox.close()
    assert after_types(recorder) == LIFE
    record: dict[str, Any] = recorder.seen[-1]["data"]["record"]
    assert (record["title"], record["done"], record["origin"]) == ("write tests", True, "app")
