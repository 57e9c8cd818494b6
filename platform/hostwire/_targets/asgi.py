"""The in-process target: an ASGI app called in process, no socket.

A call runs on the event loop that serves the app: the plug-in's thread hands
the request to that loop (``call_soon_threadsafe``) and blocks on a lock until
it is answered. That hop is two thread wake-ups, the largest cost of a host call
(about 70 µs on a 2-core VM). Operations the app names in ``caller_thread``
skip it: they run on the plug-in's own thread, in an event loop of that
thread's own, and blocking work there (``hostwire.to_thread``) runs in place.
"""

from __future__ import annotations

import _thread
import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Collection, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any
from urllib.parse import unquote, urlencode

import anyio
import anyio.from_thread
import anyio.lowlevel
from starlette.types import ASGIApp, Message

from hostwire._errors import DispatchError
from hostwire._runtime import CHAIN, ON_CALLER_THREAD, log_safe
from hostwire._targets.call import (
    MAX_RESPONSE_BYTES,
    Caller,
    HttpCall,
    Reply,
    header_map,
    plugin_headers,
)

log = logging.getLogger("hostwire.dispatch")
ASGI_EXTENSION = "hostwire"


def calling_plugin(scope: Mapping[str, Any]) -> str | None:
    """The plug-in behind an in-process host call, or None for any other request.

    ``AsgiTarget`` marks its requests with the ``hostwire`` scope extension, which
    no network client can send: an app may trust it, e.g. to know who is calling.
    """
    extension = (scope.get("extensions") or {}).get(ASGI_EXTENSION)
    return str(extension["plugin"]) if extension else None


class _TooLarge(Exception):
    pass


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _OwnLoop:
    """A thread's own event loop, closed when the thread ends (its locals go)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __del__(self) -> None:
        if not self.loop.is_running():
            self.loop.close()


class _ThreadLoop(threading.local):
    """Each thread's own event loop for requests run on the caller's thread."""

    own: _OwnLoop | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        if self.own is None or self.own.loop.is_closed():
            self.own = _OwnLoop()
        return self.own.loop


_THREAD_LOOP = _ThreadLoop()


# Passes over the ready callbacks before a request that has not finished gets the
# loop's full steps (a pass runs the callbacks that were ready when it began).
_READY_PASSES = 16


def _run_here(
    loop: asyncio.AbstractEventLoop, request: Coroutine[Any, Any, Reply], limit: float
) -> Reply:
    """``loop.run_until_complete(request)`` within ``limit`` seconds, at half the cost.

    The loop runs only until the request's task is done (no start and stop of
    run_forever, whose set-up is most of the cost of a request that hardly
    waits). First it runs only the callbacks that are ready, in their order, as
    the loop would: a request that never waits for I/O, a timer or a thread
    (most in-process answers) is done then, with no ``epoll`` call and no timer.
    A request that waits gets the deadline, one timer that cancels its task
    (cheaper than ``asyncio.timeout``), and the loop's full steps. A request
    cannot be cut before it first waits, with a timer or without. Loops without
    ``_run_once`` and ``_ready`` (not asyncio's own) run as usual.
    """
    step = getattr(loop, "_run_once", None)
    ready: deque[asyncio.Handle] | None = getattr(loop, "_ready", None)
    if step is None or ready is None or asyncio.events._get_running_loop() is not None:
        return loop.run_until_complete(_within(request, limit))
    begun = loop.time()
    asyncio.events._set_running_loop(loop)
    try:
        task = loop.create_task(request)
        passes = _READY_PASSES
        while ready and passes and not task.done():
            passes -= 1  # callbacks that keep adding callbacks get the full steps
            for _ in range(len(ready)):  # a pass, as one step of the loop runs it
                handle = ready.popleft()
                if not handle._cancelled:
                    handle._run()
        if not task.done():
            expiry = loop.call_at(begun + limit, task.cancel)
            while not task.done():
                step()
            expiry.cancel()
    finally:
        asyncio.events._set_running_loop(None)
    if task.cancelled():
        raise _late(limit)
    return task.result()


async def _within(request: Coroutine[Any, Any, Reply], limit: float) -> Reply:
    try:
        async with asyncio.timeout(limit):
            return await request
    except TimeoutError as exc:
        raise _late(limit) from exc


def _late(limit: float) -> DispatchError:
    return DispatchError(504, "upstream_timeout", f"The app did not answer within {limit:.3g} s.")


@asynccontextmanager
async def _anyio_deadline(limit: float) -> AsyncIterator[None]:
    with anyio.fail_after(limit):
        yield


_NO_DEADLINE = nullcontext()


class _Finished:
    """Set once the app's answer is complete; an event to wait on is made only when
    the app waits for the client to leave (streaming), which most requests never do."""

    __slots__ = ("_event", "_on_asyncio", "flag")

    def __init__(self, on_asyncio: bool) -> None:
        self.flag = False
        self._on_asyncio = on_asyncio
        self._event: asyncio.Event | anyio.Event | None = None

    def set(self) -> None:
        self.flag = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self.flag:
            return
        if self._event is None:
            self._event = asyncio.Event() if self._on_asyncio else anyio.Event()
        await self._event.wait()


def _deadline(limit: float, *, on_asyncio: bool) -> AbstractAsyncContextManager[object]:
    # asyncio's own timeout costs a fraction of AnyIO's cancel scope; other
    # backends (trio through AnyIO) get AnyIO's.
    return asyncio.timeout(limit) if on_asyncio else _anyio_deadline(limit)


class AsgiTarget:
    """Calls an ASGI app in process, on the event loop that serves it (no socket).

    Plug-ins run in worker threads; each call hops onto the app's loop with
    ``anyio.from_thread.run``. From an AnyIO worker thread no setup is needed;
    other threads need the loop's token: call ``bind()`` on the loop (for
    example in the app's lifespan), or run the app with ``hostwire.run_app``.
    The app sees the plug-in in the ``X-Hostwire-Plugin`` header and in the
    scope extension ``hostwire`` (which no network client can forge).
    ``path_prefix`` is where the API lives in the app (its ``servers`` path).

    ``caller_thread`` names operations (host-function names or operationIds,
    ``*`` for all) that run on the calling plug-in's thread instead, with no hop.
    Name only operations whose whole path, middleware included, does not need
    the app's own loop (no loop-bound connection pools, locks or queues shared
    with other requests) and is thread-safe, and that leave no task running
    after their response; blocking work in them that goes through
    ``hostwire.to_thread`` runs in place.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        path_prefix: str = "",
        timeout_s: float = 30.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        host: str = "hostwire.internal",
        caller_thread: Collection[str] = (),
    ) -> None:
        self.app = app
        self.caller_thread = frozenset(caller_thread)
        self.path_prefix = path_prefix.rstrip("/")
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self.host = host
        # The app's lifespan state, copied into every request as servers do.
        self.state: dict[str, Any] = {}
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None
        # True once the app has started (its lifespan's startup done) until it stops:
        # before, calls hop to the loop, which answers them only when the startup
        # lets it, as a request from a client would be.
        self.serving = False

    def bind(self, token: anyio.lowlevel.EventLoopToken | None = None) -> None:
        """Remember the running event loop so any thread can reach the app."""
        self._token = token or anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()

    def unbind(self) -> None:
        self.serving = False
        self._token = None
        self._loop_thread = None

    def runs_on_caller_thread(self, call: HttpCall) -> bool:
        """True if ``call`` runs on the plug-in's thread (see ``caller_thread``)."""
        names = self.caller_thread
        return bool(names) and (
            "*" in names or call.operation in names or call.operation_id in names
        )

    def send(self, call: HttpCall, caller: Caller) -> Reply:
        # Inside a request this thread runs for a plug-in (caller_thread), blocked in
        # sync code: its loop cannot run another request, the app's loop can.
        nested = ON_CALLER_THREAD.get()
        if not nested and (self._loop_thread == threading.get_ident() or _loop_running_here()):
            raise DispatchError(
                500,
                "blocking_call_on_event_loop",
                "The plug-in was called on the event loop's own thread, so the app cannot "
                "answer it; run plug-ins with hostwire.to_thread or anyio.to_thread.run_sync.",
            )
        try:
            loop = self._token.native_token if self._token is not None else None
            if isinstance(loop, asyncio.AbstractEventLoop):
                if not nested and self.serving and self.runs_on_caller_thread(call):
                    return self._send_here(call, caller)
                return self._send_bounded(loop, call, caller)
            return anyio.from_thread.run(self._request, call, caller, token=self._token)
        except anyio.NoEventLoopError as exc:
            raise DispatchError(
                502,
                "app_not_running",
                "The in-process app has no running event loop to answer on (call bind() "
                "in its lifespan, or use hostwire.run_app).",
            ) from exc
        except anyio.RunFinishedError as exc:
            raise DispatchError(502, "app_not_running", "The in-process app has stopped.") from exc

    def _send_here(self, call: HttpCall, caller: Caller) -> Reply:
        """Run the request on this thread's own loop (no other request shares it)."""
        loop = _THREAD_LOOP.get()
        token = ON_CALLER_THREAD.set(True)
        try:
            request = self._request(call, caller, on_asyncio=True, deadline=False)
            return _run_here(loop, request, caller.timeout(self.timeout_s))
        finally:
            ON_CALLER_THREAD.reset(token)

    def _send_bounded(
        self, loop: asyncio.AbstractEventLoop, call: HttpCall, caller: Caller
    ) -> Reply:
        """Hand the request to the app's loop and wait for it on a plain lock.

        The app's own timeout (the deadline in ``_request``) cannot cut a request
        that waits for a worker thread, so this thread waits at most the plug-in's
        remaining time itself, then gives up on the request.
        """
        limit = caller.timeout(self.timeout_s)
        answered = _thread.allocate_lock()
        answered.acquire()
        tasks: list[asyncio.Task[Reply]] = []

        def start() -> None:
            task = loop.create_task(self._request(call, caller, on_asyncio=True))
            task.add_done_callback(lambda _: answered.release())
            tasks.append(task)

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError as exc:  # the loop is closed
            raise anyio.RunFinishedError from exc
        if not answered.acquire(timeout=limit):
            loop.call_soon_threadsafe(lambda: [task.cancel() for task in tasks])
            raise DispatchError(
                504, "upstream_timeout", f"The app did not answer within {limit:.3g} s."
            )
        task = tasks[0]
        if task.cancelled():
            raise DispatchError(502, "app_not_running", "The in-process app has stopped.")
        return task.result()

    def _scope(self, call: HttpCall, caller: Caller) -> dict[str, Any]:
        headers = [(b"host", self.host.encode())]
        headers += [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in plugin_headers(call, caller)
        ]
        if call.body is not None:
            headers.append((b"content-length", str(len(call.body)).encode()))
        path = self.path_prefix + call.path
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": call.method,
            "scheme": "http",
            "path": unquote(path),
            "raw_path": path.encode("ascii"),
            "query_string": urlencode(call.query).encode("ascii") if call.query else b"",
            "root_path": "",
            "headers": headers,
            "client": None,
            "server": (self.host, 80),
            "state": dict(self.state),
            "extensions": {ASGI_EXTENSION: {"plugin": caller.plugin, "chain": list(caller.chain)}},
        }

    async def _request(
        self, call: HttpCall, caller: Caller, *, on_asyncio: bool = False, deadline: bool = True
    ) -> Reply:
        """The app's answer to ``call``; within the caller's time unless ``deadline`` is
        False (the one who runs it keeps the time: ``_run_here``)."""
        CHAIN.set(caller.chain)  # this task's context: nested calls see the chain
        scope = self._scope(call, caller)
        body = call.body or b""
        reply = Reply(0)
        chunks: list[bytes] = []
        size = 0
        done = _Finished(on_asyncio)
        sent_request = False

        async def receive() -> Message:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal size
            if message["type"] == "http.response.start":
                reply.status = int(message["status"])
                reply.headers = header_map(message.get("headers", []), lower=True)
            elif message["type"] == "http.response.body":
                chunk = bytes(message.get("body", b""))
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise _TooLarge
                chunks.append(chunk)
                if not message.get("more_body", False):
                    done.set()

        limit = caller.timeout(self.timeout_s) if deadline else 0.0
        try:
            async with _deadline(limit, on_asyncio=on_asyncio) if deadline else _NO_DEADLINE:
                await self.app(scope, receive, send)
        except TimeoutError as exc:
            raise _late(limit) from exc
        except _TooLarge as exc:
            raise DispatchError(
                502,
                "response_too_large",
                f"The app's response is over {self.max_response_bytes} bytes.",
            ) from exc
        except Exception as exc:
            if reply.status and done.flag:
                log.warning(
                    "the app failed after answering %s %s: %s",
                    call.method,
                    log_safe(call.path),
                    log_safe(repr(exc)),
                )
            else:
                log.exception("the app failed on %s %s", call.method, log_safe(call.path))
                raise DispatchError(
                    502, "app_error", f"The app failed on {call.method} {call.path}: {exc!r}"
                ) from exc
        finally:
            done.set()
        if not reply.status or not done.flag:
            raise DispatchError(502, "app_error", "The app returned without a whole response.")
        reply.body = b"".join(chunks)
        return reply

    def close(self) -> None:
        self.unbind()
