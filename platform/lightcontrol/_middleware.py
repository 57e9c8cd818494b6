"""Pure ASGI middleware: request ids and access log, body limit, load shedding."""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("lightcontrol.access")
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
    """Gives every request an id (the client's X-Request-ID if sane) and logs it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info(
                '%s "%s %s" %d %.1fms request_id=%s principal=%s',
                (scope.get("client") or ("-",))[0],
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                request_id,
                scope["state"].get("principal", "-"),
            )


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Answers 413 for bodies over ``max_bytes`` without reading them whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"The request body is larger than {self.max_bytes} bytes."
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(send, 413, "payload_too_large", message)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            incoming = await receive()
            if incoming["type"] == "http.request":
                received += len(incoming.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return incoming

        async def tracking_send(outgoing: Message) -> None:
            nonlocal started
            started = started or outgoing["type"] == "http.response.start"
            await send(outgoing)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await send_error(send, 413, "payload_too_large", message)


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
        # A plug-in's in-process call is part of work already admitted; shedding
        # it would fail the request that is waiting for it.
        if self.in_flight >= self.max_concurrent and in_process_plugin(scope) is None:
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


def in_process_plugin(scope: Scope) -> str | None:
    """The plug-in behind an in-process hostwire call (a scope extension no client can send)."""
    extension = scope.get("extensions", {}).get("hostwire")
    return str(extension["plugin"]) if extension else None


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
        plugin = in_process_plugin(scope)
        if plugin is not None:
            return f"plugin:{plugin}"
        header = dict(scope["headers"]).get(b"authorization", b"")
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
        header = dict(scope["headers"]).get(b"authorization", b"")
        problem = "missing" if not header else "wrong"
        await send_error(
            send,
            401,
            "unauthorized",
            f"The bearer token is {problem}; send Authorization: Bearer <LIGHTCONTROL_TOKEN>.",
            [(b"www-authenticate", b'Bearer realm="lightcontrol"')],
        )
