"""ModelTracker in a FastAPI app whose plug-ins call the same app in process.

FastAPI runs ``def`` routes in AnyIO's default thread pool (40 threads). A
before-handler running on such a thread that calls a ``def`` route of the same
app needs a second thread of that pool: 40 requests in flight used to hold
every thread while waiting for one (timeouts, 28 s requests). And a handler
changing its own record through the app must fail at once, not deadlock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import wat
from conftest import compile_wat
from hostwire import (
    AsgiTarget,
    CallContext,
    EventBus,
    EventRejected,
    HostApi,
    HostFunction,
    HostwireError,
    Limits,
    Plugin,
    Subscriber,
    load_openapi,
)
from hostwire._errors import RecordReentrant
from hostwire._events import ModelTracker
from tracking_support import Base, FakeOutbox, Task

CONCURRENT = 60
HANG_GUARD_S = 120  # only against a hang; the requests take well under a second each


class TaskIn(BaseModel):
    title: str


def build_app(path: Path) -> FastAPI:
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 30})
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        FakeOutbox.create(connection)
    app = FastAPI()

    @app.get("/health", operation_id="health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/tasks", operation_id="createTask")
    def create_task(body: TaskIn) -> dict[str, int]:
        with Session(engine) as session:
            task = Task(title=body.title)
            session.add(task)
            session.commit()
            return {"id": task.id}

    @app.post("/async/tasks", operation_id="createTaskAsync")
    async def create_task_async(body: TaskIn) -> dict[str, int]:
        async with AsyncSession(async_engine, expire_on_commit=False) as session:
            task = Task(title=body.title)
            session.add(task)
            await session.commit()
            return {"id": task.id}

    @app.patch("/tasks/{task_id}", operation_id="updateTask")
    def update_task(task_id: int, body: TaskIn) -> dict[str, str]:
        with Session(engine) as session:
            task = session.get(Task, task_id)
            assert task is not None
            task.title = body.title
            session.commit()
            return {"title": task.title}

    @app.patch("/async/tasks/{task_id}", operation_id="updateTaskAsync")
    async def update_task_async(task_id: int, body: TaskIn) -> dict[str, str]:
        async with AsyncSession(async_engine, expire_on_commit=False) as session:
            task = await session.get(Task, task_id)
            assert task is not None
            task.title = body.title
            await session.commit()
            return {"title": task.title}

    @app.exception_handler(HostwireError)
    async def hostwire_error(request: Request, exc: HostwireError) -> JSONResponse:
        status = 409 if isinstance(exc, RecordReentrant) else 422
        if not isinstance(exc, RecordReentrant | EventRejected):
            status = 502
        return JSONResponse({"error": str(exc)}, status_code=status)

    app.state.engine = engine
    app.state.async_engine = async_engine
    return app


def calling_plugin(export: str, function: str) -> str:
    """A plug-in whose ``export`` calls host function ``function`` with config
    ``call`` as input, hands the answer to ``note`` and goes on."""
    return f"""(module
{wat.KERNEL}
  (import "extism:host/user" "{function}" (func $call (param i64) (result i64)))
  (import "extism:host/user" "note" (func $note (param i64) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "call")
{wat.TO_BLOCK}
  (func (export "{export}") (result i32)
    (drop (call $note (call $call (call $config_get (call $to_block (i32.const 0) (i32.const 4))))))
    (i32.const 0))
)"""


class Answers:
    """Host function ``note``: the statuses of the plug-in's calls into the app."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.lock = threading.Lock()

    def host_function(self) -> HostFunction:
        def note(context: CallContext, data: bytes) -> bytes:
            with self.lock:
                self.statuses.append(json.loads(data)["status"])
            return b"{}"

        return HostFunction("note", note)


@pytest.fixture
def tracker() -> Iterator[ModelTracker]:
    tracker = ModelTracker()
    tracker.track(Task)
    yield tracker
    tracker.close()


class Hosted:
    """The app, its host API and one plug-in, wired to the tracker."""

    def __init__(self, tmp_path: Path, tracker: ModelTracker, export: str, function: str,
                 call: dict[str, Any]) -> None:  # fmt: skip
        self.app = build_app(tmp_path / "app.db")
        spec_path = tmp_path / "openapi.json"
        spec_path.write_text(json.dumps(self.app.openapi()))
        self.target = AsgiTarget(self.app)
        api = HostApi(load_openapi(spec_path), self.target)
        self.answers = Answers()
        self.plugin = Plugin(
            "caller",
            compile_wat(calling_plugin(export, function)),
            config={"call": json.dumps(call)},
            host_functions=[*api.host_functions("caller", ["*"]), self.answers.host_function()],
            limits=Limits(timeout_ms=60_000, max_instances=CONCURRENT + 4),
        )
        self.outbox = FakeOutbox()
        tracker.bind(EventBus([Subscriber(self.plugin)], spec=api.spec), self.outbox)

    def close(self) -> None:
        self.plugin.close()
        self.app.state.engine.dispose()

    async def requests(self, calls: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
        self.target.bind()  # as the app's lifespan would
        transport = httpx.ASGITransport(app=self.app)
        responses: list[httpx.Response] = []
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:

                async def one(method: str, url: str, body: dict[str, Any]) -> None:
                    responses.append(await client.request(method, url, json=body))

                with anyio.fail_after(HANG_GUARD_S):
                    async with anyio.create_task_group() as group:
                        for method, url, body in calls:
                            group.start_soon(one, method, url, body)
        finally:
            await self.app.state.async_engine.dispose()
            self.target.unbind()
        return responses


@pytest.fixture
def hosted(tmp_path: Path, tracker: ModelTracker) -> Iterator[Any]:
    made: list[Hosted] = []

    def make(export: str, function: str, call: dict[str, Any]) -> Hosted:
        made.append(Hosted(tmp_path, tracker, export, function, call))
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.mark.parametrize("route", ["/tasks", "/async/tasks"], ids=["def", "async-def"])
def test_concurrent_writes_whose_plugins_call_a_def_route_all_finish(
    hosted: Any, route: str
) -> None:
    app = hosted("task_before_save", "health", {})

    async def scenario() -> tuple[list[httpx.Response], float]:
        responses = await app.requests(
            [("POST", route, {"title": f"task {i}"}) for i in range(CONCURRENT)]
        )
        return responses, anyio.to_thread.current_default_thread_limiter().total_tokens

    responses, tokens = anyio.run(scenario)
    assert sorted(r.status_code for r in responses) == [200] * CONCURRENT
    assert sorted(r.json()["id"] for r in responses) == list(range(1, CONCURRENT + 1))
    # Every plug-in reached the inner route; none timed out waiting for a thread.
    assert app.answers.statuses == [200] * CONCURRENT
    assert tokens == 40  # every lent thread went back
    assert len(app.outbox.rows(app.app.state.engine)) == 0  # no after-handlers subscribed


@pytest.mark.parametrize("route", ["/tasks/1", "/async/tasks/1"], ids=["def", "async-def"])
def test_a_plugin_changing_its_own_record_in_process_gets_409_at_once(
    hosted: Any, route: str
) -> None:
    app = hosted(
        "task_before_update", "update_task", {"path": {"task_id": 1}, "body": {"title": "inner"}}
    )
    with Session(app.app.state.engine) as session:
        session.add(Task(title="first"))
        session.commit()

    async def scenario() -> list[httpx.Response]:
        responses: list[httpx.Response] = await app.requests([("PATCH", route, {"title": "outer"})])
        return responses

    (response,) = anyio.run(scenario)
    assert (response.status_code, response.json()) == (200, {"title": "outer"})
    assert app.answers.statuses == [409]
    with app.app.state.engine.connect() as connection:
        assert connection.execute(sa.select(Task.title)).scalar() == "outer"
