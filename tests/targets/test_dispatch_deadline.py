"""An in-process host call never outlives the calling plug-in's remaining time."""

from __future__ import annotations

import threading
import time

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hostwire import AsgiTarget, Caller, DispatchError, HttpCall


def test_a_host_call_waiting_for_a_blocked_worker_thread_ends_at_the_deadline() -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(30)  # a lock held by someone else, a slow disk...
        finished.set()

    async def slow(request: Request) -> JSONResponse:
        # A worker thread cannot be cancelled: the app's own timeout waits for it.
        await anyio.to_thread.run_sync(blocking)
        return JSONResponse({})

    app = Starlette(routes=[Route("/slow", slow)])
    with anyio.from_thread.start_blocking_portal() as portal:
        target = AsgiTarget(app, timeout_s=30)
        portal.call(_bind, target)
        caller = Caller("impatient", deadline=time.monotonic() + 0.5)
        try:
            with pytest.raises(DispatchError) as caught:
                target.send(HttpCall("GET", "/slow"), caller)
            assert started.is_set()
            assert not finished.is_set()  # the answer came before the app was done
        finally:
            release.set()
    assert (caught.value.status, caught.value.code) == (504, "upstream_timeout")


async def _bind(target: AsgiTarget) -> None:
    target.bind()
