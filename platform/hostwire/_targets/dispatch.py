"""Where host-function calls go: an ASGI app in process, or a base URL over HTTP.

Both targets take a validated ``HttpCall`` and the ``Caller`` (which plug-in,
its credentials, the chain of nested calls) and return a ``Reply``. Failures of
the platform itself raise ``DispatchError`` with the status the plug-in sees:
502 when the app cannot be reached or fails, 504 when it is too slow.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlencode

import anyio
import anyio.from_thread
import anyio.lowlevel
import httpx
from starlette.types import ASGIApp, Message

from hostwire._errors import DispatchError
from hostwire._runtime import CHAIN, log_safe

log = logging.getLogger("hostwire.dispatch")
PLUGIN_HEADER = "x-hostwire-plugin"
ASGI_EXTENSION = "hostwire"


def calling_plugin(scope: Mapping[str, Any]) -> str | None:
    """The plug-in behind an in-process host call, or None for any other request.

    ``AsgiTarget`` marks its requests with the ``hostwire`` scope extension, which
    no network client can send: an app may trust it, e.g. to know who is calling.
    """
    extension = (scope.get("extensions") or {}).get(ASGI_EXTENSION)
    return str(extension["plugin"]) if extension else None


MAX_RESPONSE_BYTES = 1024 * 1024

# Headers a plug-in may never set: the host decides who it is and where it goes.
RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "forwarded",
        "host",
        "proxy-authorization",
        "transfer-encoding",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    }
)
RESERVED_PREFIX = "x-hostwire-"


@dataclass(slots=True)
class HttpCall:
    """A validated request, ready for a target to send."""

    method: str
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    content_type: str | None = None
    operation: str = ""  # the host function's name, for targets that route by it


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a host-function call."""

    plugin: str
    token: str | None = None
    chain: tuple[str, ...] = ()
    deadline: float | None = None  # time.monotonic() by which the plug-in needs an answer

    def timeout(self, limit_s: float) -> float:
        """The time this call may take: the target's limit or what the plug-in has left."""
        if self.deadline is None:
            return limit_s
        # Keep a little of the plug-in's time for it to read the answer.
        left = self.deadline - time.monotonic()
        left -= min(0.05, left / 10)
        if left <= 0:
            raise DispatchError(
                504, "upstream_timeout", "The plug-in's own time (timeout_ms) is already up."
            )
        return min(limit_s, left)


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class Target(Protocol):
    """Sends validated calls somewhere and returns the app's reply."""

    def send(self, call: HttpCall, caller: Caller) -> Reply: ...

    def close(self) -> None: ...


def header_map(raw: Sequence[tuple[bytes, bytes]], *, lower: bool = False) -> dict[str, str]:
    """Raw ASGI/HTTP headers as one JSON object; repeated ones joined with ", "."""
    merged: dict[str, str] = {}
    for key, value in raw:
        name, text = key.decode("latin-1"), value.decode("latin-1")
        if lower:
            name = name.lower()
        merged[name] = f"{merged[name]}, {text}" if name in merged else text
    return merged


def _plugin_headers(call: HttpCall, caller: Caller) -> list[tuple[str, str]]:
    # The validator already refuses reserved headers; dropping them again here
    # keeps the guarantee local to the code that sends.
    headers = [
        (k, v)
        for k, v in call.headers
        if k.lower() not in RESERVED_HEADERS and not k.lower().startswith(RESERVED_PREFIX)
    ]
    headers.append((PLUGIN_HEADER, caller.plugin))
    if call.content_type and call.body is not None:
        headers.append(("content-type", call.content_type))
    if caller.token:
        headers.append(("authorization", f"Bearer {caller.token}"))
    return headers


class _TooLarge(Exception):
    pass


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class AsgiTarget:
    """Calls an ASGI app in process, on the event loop that serves it (no socket).

    Plug-ins run in worker threads; each call hops onto the app's loop with
    ``anyio.from_thread.run``. From an AnyIO worker thread no setup is needed;
    other threads need the loop's token: call ``bind()`` on the loop (for
    example in the app's lifespan), or run the app with ``hostwire.run_app``.
    The app sees the plug-in in the ``X-Hostwire-Plugin`` header and in the
    scope extension ``hostwire`` (which no network client can forge).
    ``path_prefix`` is where the API lives in the app (its ``servers`` path).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        path_prefix: str = "",
        timeout_s: float = 30.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        host: str = "hostwire.internal",
    ) -> None:
        self.app = app
        self.path_prefix = path_prefix.rstrip("/")
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self.host = host
        # The app's lifespan state, copied into every request as servers do.
        self.state: dict[str, Any] = {}
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None

    def bind(self, token: anyio.lowlevel.EventLoopToken | None = None) -> None:
        """Remember the running event loop so any thread can reach the app."""
        self._token = token or anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()

    def unbind(self) -> None:
        self._token = None
        self._loop_thread = None

    def send(self, call: HttpCall, caller: Caller) -> Reply:
        if self._loop_thread == threading.get_ident() or _loop_running_here():
            raise DispatchError(
                500,
                "blocking_call_on_event_loop",
                "The plug-in was called on the event loop's own thread, so the app cannot "
                "answer it; run plug-ins with hostwire.to_thread or anyio.to_thread.run_sync.",
            )
        try:
            loop = self._token.native_token if self._token is not None else None
            if isinstance(loop, asyncio.AbstractEventLoop):
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

    def _send_bounded(
        self, loop: asyncio.AbstractEventLoop, call: HttpCall, caller: Caller
    ) -> Reply:
        # The app's own timeout (fail_after in _request) cannot cut a request
        # that waits for a worker thread, so this thread waits at most the
        # plug-in's remaining time itself, then gives up on the request.
        limit = caller.timeout(self.timeout_s)
        if loop.is_closed():
            raise anyio.RunFinishedError
        future = asyncio.run_coroutine_threadsafe(self._request(call, caller), loop)
        try:
            return future.result(limit)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise DispatchError(
                504, "upstream_timeout", f"The app did not answer within {limit:.3g} s."
            ) from exc
        except concurrent.futures.CancelledError as exc:
            raise DispatchError(502, "app_not_running", "The in-process app has stopped.") from exc

    def _scope(self, call: HttpCall, caller: Caller) -> dict[str, Any]:
        headers = [(b"host", self.host.encode())]
        headers += [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in _plugin_headers(call, caller)
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
            "query_string": urlencode(call.query).encode("ascii"),
            "root_path": "",
            "headers": headers,
            "client": None,
            "server": (self.host, 80),
            "state": dict(self.state),
            "extensions": {ASGI_EXTENSION: {"plugin": caller.plugin, "chain": list(caller.chain)}},
        }

    async def _request(self, call: HttpCall, caller: Caller) -> Reply:
        CHAIN.set(caller.chain)  # this task's context: nested calls see the chain
        scope = self._scope(call, caller)
        body = call.body or b""
        reply = Reply(0)
        chunks: list[bytes] = []
        size = 0
        done = anyio.Event()
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

        limit = caller.timeout(self.timeout_s)
        try:
            with anyio.fail_after(limit):
                await self.app(scope, receive, send)
        except TimeoutError as exc:
            raise DispatchError(
                504, "upstream_timeout", f"The app did not answer within {limit:.3g} s."
            ) from exc
        except _TooLarge as exc:
            raise DispatchError(
                502,
                "response_too_large",
                f"The app's response is over {self.max_response_bytes} bytes.",
            ) from exc
        except Exception as exc:
            if reply.status and done.is_set():
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
        if not reply.status or not done.is_set():
            raise DispatchError(502, "app_error", "The app returned without a whole response.")
        reply.body = b"".join(chunks)
        return reply

    def close(self) -> None:
        self.unbind()


Credentials = Mapping[str, str] | Callable[[str], str | None]


class HttpTarget:
    """Calls the app at a fixed base URL over HTTP with each plug-in's bearer token.

    Redirects are not followed and the final URL is checked: a call can never
    leave the base URL's scheme, host, port or path prefix.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base = httpx.URL(base_url)
        if self.base.scheme not in {"http", "https"} or not self.base.host:
            raise ValueError(f"base URL must be http(s)://host[:port][/prefix], not {base_url!r}")
        self._prefix = self.base.raw_path.split(b"?")[0].rstrip(b"/")
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self._client = httpx.Client(
            timeout=timeout_s, follow_redirects=False, trust_env=False, transport=transport
        )

    def url_for(self, call: HttpCall) -> httpx.URL:
        raw = self._prefix + call.path.encode("ascii")
        if call.query:
            raw += b"?" + urlencode(call.query).encode("ascii")
        url = self.base.copy_with(raw_path=raw)
        same_origin = (url.scheme, url.host, url.port) == (
            self.base.scheme,
            self.base.host,
            self.base.port,
        )
        if not same_origin or not url.raw_path.startswith(self._prefix + b"/"):
            raise DispatchError(400, "invalid_request", f"{call.path!r} leaves the app's base URL.")
        return url

    def send(self, call: HttpCall, caller: Caller) -> Reply:
        limit = caller.timeout(self.timeout_s)
        try:
            url = self.url_for(call)
            request = self._client.build_request(
                call.method,
                url,
                headers=_plugin_headers(call, caller),
                content=call.body,
                timeout=limit,
            )
        except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
            raise DispatchError(400, "invalid_request", f"Cannot build the request: {exc}") from exc
        try:
            response = self._client.send(request, stream=True)
            try:
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        raise DispatchError(
                            502,
                            "response_too_large",
                            f"The app's response is over {self.max_response_bytes} bytes.",
                        )
                    chunks.append(chunk)
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise DispatchError(
                504, "upstream_timeout", f"{self.base} did not answer within {limit:.3g} s."
            ) from exc
        except httpx.HTTPError as exc:
            raise DispatchError(
                502, "upstream_unreachable", f"Cannot reach {self.base}: {exc!r}"
            ) from exc
        return Reply(
            response.status_code, header_map(response.headers.raw, lower=True), b"".join(chunks)
        )

    def close(self) -> None:
        self._client.close()
