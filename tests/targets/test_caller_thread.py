"""Operations an app names in ``caller_thread`` run on the calling plug-in's thread (no hop
to the app's loop); the others, and nested calls, still reach the app's loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hostwire import (
    AsgiTarget,
    Caller,
    ConfigError,
    DispatchError,
    Hostwire,
    HttpCall,
    Reply,
    run_app,
    to_thread,
)

CALLER = Caller("tester")


def _where() -> dict[str, Any]:
    return {"thread": threading.get_ident(), "loop": id(asyncio.get_running_loop())}


class App:
    """A small app that tells where each request ran; ``nested`` calls the app again from
    sync code, as a before-hook plug-in inside a write would."""

    def __init__(self) -> None:
        self.target: AsgiTarget | None = None

        async def where(request: Request) -> JSONResponse:
            return JSONResponse(_where())

        async def blocking(request: Request) -> JSONResponse:
            worker = await to_thread(threading.get_ident)
            return JSONResponse({**_where(), "worker": worker})

        async def nested(request: Request) -> JSONResponse:
            assert self.target is not None
            inner = await to_thread(self.target.send, _call("where"), CALLER)
            return JSONResponse({**_where(), "inner": _json(inner)})

        async def stuck(request: Request) -> JSONResponse:
            await asyncio.Event().wait()  # never answers: the deadline must end it
            return JSONResponse({})

        self.app = Starlette(
            routes=[
                Route(f"/{name}", endpoint)
                for name, endpoint in {
                    "where": where,
                    "blocking": blocking,
                    "nested": nested,
                    "stuck": stuck,
                }.items()
            ]
        )


def _call(name: str) -> HttpCall:
    return HttpCall("GET", f"/{name}", operation=name, operation_id=f"op_{name}")


def _json(reply: Reply) -> dict[str, Any]:
    assert reply.status == 200, reply
    value: dict[str, Any] = json.loads(reply.body)
    return value


@pytest.fixture
def served() -> Iterator[tuple[App, AsgiTarget, dict[str, Any]]]:
    app = App()
    with run_app(app.app, caller_thread={"where", "op_blocking", "nested", "stuck"}) as target:
        app.target = target
        # Where the app's own loop runs: a request not named in caller_thread.
        _, reply = _send_from_a_worker(target, HttpCall("GET", "/where", operation="other"))
        yield app, target, _json(reply)


def _send_from_a_worker(target: AsgiTarget, call: HttpCall, caller: Caller = CALLER) -> Any:
    found: list[Any] = []

    def run() -> None:
        try:
            found.append((threading.get_ident(), target.send(call, caller)))
        except DispatchError as exc:
            found.append((threading.get_ident(), exc))

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(30)
    (result,) = found
    return result


def test_a_named_operation_runs_on_the_calling_thread_and_others_on_the_apps_loop(
    served: tuple[App, AsgiTarget, dict[str, Any]],
) -> None:
    _, target, on_loop = served
    thread, reply = _send_from_a_worker(target, _call("where"))
    here = _json(reply)
    assert here["thread"] == thread  # no hop
    assert here["loop"] != on_loop["loop"]
    assert on_loop["thread"] != thread


def test_operations_are_named_by_host_function_or_operation_id_or_star() -> None:
    target = AsgiTarget(Starlette(), caller_thread={"op_blocking", "where"})
    assert target.runs_on_caller_thread(_call("blocking"))  # by its operationId
    assert target.runs_on_caller_thread(_call("where"))  # by its host-function name
    assert not target.runs_on_caller_thread(_call("stuck"))
    assert AsgiTarget(Starlette(), caller_thread={"*"}).runs_on_caller_thread(_call("stuck"))
    assert not AsgiTarget(Starlette()).runs_on_caller_thread(_call("where"))


def test_to_thread_runs_in_place_on_the_calling_thread(
    served: tuple[App, AsgiTarget, dict[str, Any]],
) -> None:
    _, target, _ = served
    thread, reply = _send_from_a_worker(target, _call("blocking"))
    assert _json(reply)["worker"] == thread


def test_a_nested_call_from_sync_code_in_such_a_request_goes_to_the_apps_loop(
    served: tuple[App, AsgiTarget, dict[str, Any]],
) -> None:
    _, target, on_loop = served
    thread, reply = _send_from_a_worker(target, _call("nested"))
    answer = _json(reply)
    assert answer["thread"] == thread
    # Its own loop is blocked in sync code: the inner call hopped to the app's loop.
    assert answer["inner"]["thread"] == on_loop["thread"]


def test_a_request_on_the_calling_thread_ends_at_the_plugins_deadline(
    served: tuple[App, AsgiTarget, dict[str, Any]],
) -> None:
    _, target, _ = served
    caller = Caller("impatient", deadline=time.monotonic() + 0.3)
    _, failure = _send_from_a_worker(target, _call("stuck"), caller)
    assert isinstance(failure, DispatchError)
    assert (failure.status, failure.code) == (504, "upstream_timeout")
    # The thread's loop is usable again.
    _, reply = _send_from_a_worker(target, _call("where"))
    assert reply.status == 200


def test_after_the_app_stopped_a_call_gets_502_app_not_running() -> None:
    app = App()
    with run_app(app.app, caller_thread={"*"}) as target:
        pass
    _, failure = _send_from_a_worker(target, _call("where"))
    assert isinstance(failure, DispatchError)
    assert (failure.status, failure.code) == (502, "app_not_running")


def test_hostwire_refuses_a_caller_thread_name_that_is_no_operation(tmp_path: Path) -> None:
    app = Starlette()
    document = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/where": {
                "get": {"operationId": "getWhere", "responses": {"200": {"description": "ok"}}}
            }
        },
    }
    hw = Hostwire(app, spec=document, caller_thread=["getWhere", "getWehre"])
    with pytest.raises(ConfigError) as caught:
        hw.start()
    assert str(caught.value).startswith(
        "caller_thread names getWehre, which is not an operation of"
    )
    assert "(operations: getWhere)" in str(caught.value)
    Hostwire(Starlette(), spec=document, caller_thread=["getWhere", "*"]).start()


def test_until_the_app_has_started_named_operations_hop_to_its_loop(
    served: tuple[App, AsgiTarget, dict[str, Any]],
) -> None:
    # An event delivered at startup must not reach routes whose state the app's
    # startup has not set yet: the loop answers it when the startup lets it.
    _, target, on_loop = served
    target.serving = False
    try:
        _, reply = _send_from_a_worker(target, _call("where"))
    finally:
        target.serving = True
    assert _json(reply)["thread"] == on_loop["thread"]


class _CountingSelector:
    """Counts the loop's polls of its selector (epoll) and passes them on."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.polls = 0
        inner = loop._selector  # type: ignore[attr-defined]
        inner_select = inner.select

        def select(timeout: float | None = None) -> Any:
            self.polls += 1
            return inner_select(timeout)

        self.restore = lambda: setattr(inner, "select", inner_select)
        inner.select = select


def test_running_a_request_here_polls_for_io_only_once_it_waits() -> None:
    from hostwire._targets.asgi import _run_here

    async def answers_at_once() -> Reply:
        await asyncio.sleep(0)  # a yield, no timer: still no poll needed
        return Reply(200)

    async def waits_for_a_timer() -> Reply:
        await asyncio.sleep(0.001)
        return Reply(201)

    loop = asyncio.new_event_loop()
    counting = _CountingSelector(loop)
    try:
        assert _run_here(loop, answers_at_once(), 5.0).status == 200
        assert counting.polls == 0
        assert _run_here(loop, waits_for_a_timer(), 5.0).status == 201
        assert counting.polls > 0
        # The deadline timer is cancelled (the next full step drops it from the heap).
        assert all(timer.cancelled() for timer in loop._scheduled)  # type: ignore[attr-defined]
    finally:
        counting.restore()
        loop.close()


def test_callbacks_that_keep_adding_callbacks_do_not_hold_up_a_waiting_request() -> None:
    from hostwire._targets.asgi import _run_here

    loop = asyncio.new_event_loop()
    running = True

    def chatty() -> None:  # someone's background work, always ready again
        if running:
            loop.call_soon(chatty)

    async def waits_for_a_timer() -> Reply:
        await asyncio.sleep(0.001)
        return Reply(200)

    async def never_answers() -> Reply:
        await asyncio.Event().wait()
        return Reply(200)

    try:
        loop.call_soon(chatty)
        assert _run_here(loop, waits_for_a_timer(), 5.0).status == 200
        with pytest.raises(DispatchError) as late:
            _run_here(loop, never_answers(), 0.05)
        assert (late.value.status, late.value.code) == (504, "upstream_timeout")
    finally:
        running = False
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
