"""ModelTracker with an AsyncSession (aiosqlite, file and in memory): the flush runs
in SQLAlchemy's greenlet on the loop's thread, the plug-ins on hostwire's threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import StaticPool

from hostwire import CallContext, EventRejected, HostFunction
from hostwire._events import ModelTracker
from tracking_support import Base, FakeOutbox, Recorder, Task, bus_for, handler


@pytest.fixture(params=["sqlite-file", "sqlite-memory"])
def make_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    def make() -> AsyncEngine:
        if request.param == "sqlite-file":
            return create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
        return create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)

    return make


@pytest.fixture
def tracker() -> Iterator[ModelTracker]:
    tracker = ModelTracker()
    tracker.track(Task)
    yield tracker
    tracker.close()


class LoopReacher(Recorder):
    """``note`` also reaches the event loop from the plug-in's thread, as an
    in-process host call does: it works only if the loop is free meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.reached: list[int] = []

    def host_function(self) -> HostFunction:
        plain = super().host_function()

        def note(context: CallContext, data: bytes) -> bytes:
            self.reached.append(anyio.from_thread.run_sync(threading.get_ident))
            return plain.handler(context, data)

        return HostFunction("note", note)


async def setup(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
        await connection.run_sync(FakeOutbox.create)


def test_plugins_run_off_the_loop_and_after_events_commit_with_the_rows(
    tracker: ModelTracker, make_engine: Any, tmp_path: Path
) -> None:
    recorder = LoopReacher()
    outbox = FakeOutbox()

    async def scenario() -> tuple[int, list[dict[str, Any]], list[tuple[Any, ...]]]:
        engine = make_engine()
        await setup(engine)
        async with AsyncSession(engine, expire_on_commit=False) as session:
            task = Task(title="write tests")
            session.add(task)
            await session.commit()
            task.done = True
            await session.commit()
            await session.delete(task)
            await session.commit()
        async with engine.connect() as connection:
            rows = await connection.run_sync(outbox.rows_on)
            tasks = (await connection.execute(sa.select(Task.id))).all()
        await engine.dispose()
        return threading.get_ident(), rows, [tuple(t) for t in tasks]

    with handler("tasks-plugin", recorder) as plugin:
        tracker.bind(bus_for(tracker, [plugin], tmp_path), outbox)
        loop_thread, rows, tasks = anyio.run(scenario)
    assert recorder.types == [
        "task.before_validation",
        "task.before_save",
        "task.before_create",
        "task.before_validation",
        "task.before_save",
        "task.before_update",
        "task.before_destroy",
    ]
    assert loop_thread not in {t.ident for t in recorder.threads}
    assert set(recorder.reached) == {loop_thread}
    assert recorder.seen[0]["data"]["record"]["id"] is None
    assert [r["type"] for r in rows] == [
        "task.after_validation",
        "task.after_create",
        "task.after_save",
        "task.after_validation",
        "task.after_update",
        "task.after_save",
        "task.after_destroy",
    ]
    assert rows[1]["envelope"]["data"]["record"]["origin"] == "app"
    assert rows[4]["envelope"]["data"]["changes"] == {"done": {"from": False, "to": True}}
    assert outbox.notified == 3
    assert tasks == []


def test_a_rejection_comes_out_of_the_awaited_commit_and_nothing_is_written(
    tracker: ModelTracker, make_engine: Any, tmp_path: Path
) -> None:
    outbox = FakeOutbox()
    answers = {"task_before_save": {"reject": {"reason": "not today"}}}

    async def scenario() -> tuple[str, int, int]:
        engine = make_engine()
        await setup(engine)
        async with AsyncSession(engine) as session:
            session.add(Task(title="write tests"))
            with pytest.raises(EventRejected) as caught:
                await session.commit()
        async with engine.connect() as connection:
            tasks = (await connection.execute(sa.select(sa.func.count()).select_from(Task))).one()
            rows = await connection.run_sync(outbox.rows_on)
        await engine.dispose()
        return caught.value.reason, tasks[0], len(rows)

    with handler("guard", Recorder(), answers) as plugin:
        tracker.bind(bus_for(tracker, [plugin], tmp_path), outbox)
        assert anyio.run(scenario) == ("not today", 0, 0)
    assert outbox.notified == 0
