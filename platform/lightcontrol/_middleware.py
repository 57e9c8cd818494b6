"""Pure ASGI middleware: request ids and access log, body limit, load shedding."""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostwire import calling_plugin, current_request_id, log_safe

access_log = logging.getLogger("lightcontrol.access")
log = logging.getLogger("lightcontrol")

CLIENT_GONE = 499
"""nginx's "client closed request": only the access log sees it, nobody reads it."""


def log_client_gone(scope: Scope) -> None:
    """One line for a client that left before its body was complete (nothing ran)."""
    # Named by its request id (the access log line has it too), not its raw path.
    log.info(
        "request_id=%s: the client closed the connection before sending the whole body; "
        "nothing was done.",
        log_safe(str(scope.get("state", {}).get("request_id", "-"))),
    )


_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def error_body(
    code: str,
    message: str,
    details: list[dict[str, str]] | None = None,
    plugin: str | None = None,
) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    if plugin:
        error["plugin"] = plugin
    return json.dumps({"error": error}).encode()


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = error_body(code, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    """Gives every request an id (the client's X-Request-ID if sane) and logs it.

    The access log line holds the client's path, query and User-Agent: each
    goes through ``log_safe``, so no request can forge or disguise a line. A
    request that ended without a response (the client left) logs status ``-``.
    The line is built only when the access log is enabled, and then without the
    caller lookup ``Logger.info`` would do (it is always this module).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id").decode("latin-1")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = "-"
        failed = True
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        request_token = current_request_id.set(request_id)  # for the JSON log lines
        try:
            await self.app(scope, receive, send_with_id)
            failed = False
        finally:
            if access_log.isEnabledFor(logging.INFO):  # its JSON line has the request_id too
                _log_access(scope, "500" if failed and status == "-" else status, started)
            current_request_id.reset(request_token)


def _header(scope: Scope, name: bytes, default: bytes = b"") -> bytes:
    """The request's header ``name`` (lower case), the last if repeated, as
    ``dict(scope["headers"]).get(name, default)`` gives it, without building a dict."""
    found = default
    for key, value in scope["headers"]:
        if key == name:
            found = value  # the last one wins, as in dict(headers)
    return found


_ACCESS = '%s "%s %s%s" %s %.1fms request_id=%s principal=%s agent="%s"'


def _log_access(scope: Scope, status: str, started: float) -> None:
    query = scope.get("query_string", b"")
    args = (
        log_safe((scope.get("client") or ("-",))[0]),
        log_safe(scope["method"]),
        log_safe(scope["path"]),
        f"?{log_safe(query.decode('latin-1'))}" if query else "",
        status,  # the server answers 500 when the app failed before its response
        (time.perf_counter() - started) * 1000,
        scope["state"]["request_id"],
        log_safe(scope["state"].get("principal", "-")),
        log_safe(_header(scope, b"user-agent", b"-").decode("latin-1")),
    )
    # Formatted by the handlers, as Logger.info's record would be.
    record = access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, _ACCESS, args, None)
    access_log.handle(record)


class BodyLimitMiddleware:
    """Reads each request's body whole before the app (and a concurrency slot) sees it.

    Bodies over ``max_bytes`` get 413 without being read whole; a body that has
    not arrived ``body_timeout_s`` after the request began gets 408 (the
    connection is closed); a client that leaves before its body is complete
    gets nothing run on its behalf. Put it outside ``ConcurrencyLimitMiddleware``:
    slow senders then cannot hold the slots of requests that are ready.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, body_timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s
        self.reading = 0  # requests still sending their body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        chunked = False
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value
            elif key == b"transfer-encoding":
                chunked = True
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(send, 413, "payload_too_large", self._too_large(), [_CLOSE])
            return
        # One event loop: no lock needed between awaits. A plug-in's in-process call
        # (which may run on its own thread, see caller_thread) has its body whole.
        counted = calling_plugin(scope) is None
        if counted:
            self.reading += 1
        body: bytes | None = None
        try:
            if (
                not chunked
                and (declared is None or declared == b"0")
                and scope.get("http_version") in _FRAMED
            ):
                # HTTP/1 framing says there is no body: the server has all of the
                # request, so nothing can keep the read waiting (no timeout scope).
                body = await self._read(receive)
            else:
                with anyio.move_on_after(self.body_timeout_s):
                    body = await self._read(receive)
        except _ClientGone:  # nothing runs; the answer is for the access log only
            log_client_gone(scope)
            await send({"type": "http.response.start", "status": CLIENT_GONE, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        except _TooLarge:
            await send_error(send, 413, "payload_too_large", self._too_large(), [_CLOSE])
            return
        finally:
            if counted:
                self.reading -= 1
        if body is None:
            message = f"The request body did not arrive within {self.body_timeout_s:g} s."
            await send_error(send, 408, "request_timeout", message, [_CLOSE])
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only http.disconnect remains

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"The request body is larger than {self.max_bytes} bytes."

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _ClientGone
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _ClientGone(Exception):
    pass


class _TooLarge(Exception):
    pass


_CLOSE = (b"connection", b"close")
# Versions whose requests have a body only with Content-Length or Transfer-Encoding.
_FRAMED = frozenset({"1.0", "1.1"})


class ConcurrencyLimitMiddleware:
    """Answers 503 when more than ``max_concurrent`` requests are in flight.

    Long-lived streams (``exempt_paths``) are not counted: they would hold the
    slots of ordinary requests for as long as they are open; they have a limit
    of their own.
    """

    def __init__(
        self, app: ASGIApp, max_concurrent: int, exempt_paths: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.max_concurrent = max_concurrent
        self.exempt_paths = exempt_paths
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        # A plug-in's in-process call is part of work already admitted: shedding it
        # would fail the request that is waiting for it. Nor is it counted: it may
        # run on the plug-in's own thread (caller_thread), off this loop.
        if calling_plugin(scope) is not None:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrent:
            await send_error(
                send,
                503,
                "overloaded",
                f"The server is handling {self.max_concurrent} requests already; retry shortly.",
                [(b"retry-after", b"1")],
            )
            return
        self.in_flight += 1  # one event loop: no lock needed between awaits
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class BearerAuthMiddleware:
    """Requires ``Authorization: Bearer <token>`` on every path but the public ones.

    The app's own token and each plug-in's token are accepted; plug-ins called
    in process are known by the scope. ``scope["state"]["principal"]`` says who
    it is (``user`` or ``plugin:<name>``) for the access log and the routes.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        public_paths: frozenset[str],
        plugin_tokens: dict[str, str] | None = None,
    ) -> None:
        self.app = app
        empty = [name for name, secret in (plugin_tokens or {}).items() if not secret]
        if not token or empty:
            raise ValueError(f"empty bearer token for {', '.join(empty) or 'the app'}")
        self.tokens = [(token.encode(), "user")] + [
            (secret.encode(), f"plugin:{name}") for name, secret in (plugin_tokens or {}).items()
        ]
        self.public_paths = public_paths

    def _principal(self, scope: Scope) -> str | None:
        plugin = calling_plugin(scope)
        if plugin is not None:
            return f"plugin:{plugin}"
        header = _header(scope, b"authorization")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        found = None
        for secret, principal in self.tokens:  # compare them all: no timing hint
            if hmac.compare_digest(given.strip(), secret):
                found = principal
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in self.public_paths
            or scope["method"] == "OPTIONS"  # CORS preflight carries no credentials
        ):
            await self.app(scope, receive, send)
            return
        principal = self._principal(scope)
        if principal is not None:
            scope.setdefault("state", {})["principal"] = principal
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        problem = "missing" if not header else "wrong"
        await send_error(
            send,
            401,
            "unauthorized",
            f"The bearer token is {problem}; send Authorization: Bearer <LIGHTCONTROL_TOKEN>.",
            [(b"www-authenticate", b'Bearer realm="lightcontrol"')],
        )
