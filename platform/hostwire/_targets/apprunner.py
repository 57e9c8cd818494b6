"""Run an ASGI app in process for synchronous callers (the CLI, tests, scripts)."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from starlette.types import ASGIApp, Message

from hostwire._errors import AppStartupError
from hostwire._targets.asgi import AsgiTarget

STEP_TIMEOUT_S = 60.0


class _Lifespan:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._to_app, self._app_inbox = anyio.create_memory_object_stream[Message](math.inf)
        self._from_app, self._outbox = anyio.create_memory_object_stream[Message](math.inf)

    async def run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        try:
            await self.app(scope, self._app_inbox.receive, self._from_app.send)
        except Exception as exc:  # an app without lifespan support raises here...
            await self._from_app.send({"type": "lifespan.unsupported", "message": repr(exc)})
        else:  # ...or simply returns
            await self._from_app.send({"type": "lifespan.unsupported", "message": "returned"})

    def close(self) -> None:
        for stream in (self._to_app, self._app_inbox, self._from_app, self._outbox):
            stream.close()

    async def step(self, kind: str) -> None:
        await self._to_app.send({"type": f"lifespan.{kind}"})
        with anyio.move_on_after(STEP_TIMEOUT_S):
            reply = await self._outbox.receive()
            if reply["type"].endswith(".failed"):
                raise AppStartupError(f"The app's {kind} failed: {reply.get('message', '')}")
            return
        raise AppStartupError(f"The app's {kind} did not finish within {STEP_TIMEOUT_S:g} s.")


@contextmanager
def run_app(
    app: ASGIApp,
    *,
    path_prefix: str = "",
    timeout_s: float = 30.0,
    caller_thread: Collection[str] | None = None,
) -> Iterator[AsgiTarget]:
    """Start ``app`` (its lifespan) on a private event loop; yield a bound ``AsgiTarget``.

    ``caller_thread`` (see ``AsgiTarget``) defaults to what the app's ``Hostwire``
    declares, if it has one.
    """
    if caller_thread is None:
        own = getattr(getattr(getattr(app, "state", None), "hostwire", None), "target", None)
        caller_thread = own.caller_thread if isinstance(own, AsgiTarget) else ()
    with anyio.from_thread.start_blocking_portal() as portal:
        lifespan = _Lifespan(app)
        task = portal.start_task_soon(lifespan.run)
        try:
            portal.call(lifespan.step, "startup")
        except BaseException:
            lifespan.close()
            raise
        target = AsgiTarget(
            app, path_prefix=path_prefix, timeout_s=timeout_s, caller_thread=caller_thread
        )
        target.state = lifespan.state
        portal.call(_bind, target)
        try:
            yield target
        finally:
            target.unbind()
            try:
                if not task.done():
                    portal.call(lifespan.step, "shutdown")
            finally:
                lifespan.close()


async def _bind(target: AsgiTarget) -> None:
    target.bind()
    target.serving = True  # the startup is done
