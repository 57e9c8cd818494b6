"""HTTP hooks (Contract 3): plug-ins as middleware for an app's API, Bifrost-style.

For each request, the plug-ins that export ``http_pre_hook`` see it in plug-in
order; one may rewrite it or answer it itself (``has_response``), which skips
the later pre-hooks and the route. Then, in reverse order, ``http_post_hook``
runs for the plug-ins the request reached; the ``context`` a pre-hook set is
what its post-hook gets. A streaming response (one without Content-Length)
goes out chunk by chunk through ``http_stream_chunk_hook`` instead, and no
post-hook runs. Shapes: ``hooks.yaml``.

Plug-in calls block. A hop to a worker thread costs several times a hook
call, so hooks of plug-ins whose ``timeout_ms`` is at most
``INLINE_TIMEOUT_MS`` (20) and which import no host functions run on the event
loop itself: the timeout bounds how long they can hold it. Any other plug-in's
hooks run in a worker thread, all of a request's pre-hooks in one hop and all
its post-hooks in another. A hook that traps, times out or
answers garbage follows its plug-in's ``on_error``: ``fail_closed`` answers
502 naming the plug-in (and logs one line saying why), ``fail_open`` carries
on without it. Given the app's OpenAPI document (``spec``), a post-hook's
rewrite of the status, content type or body must keep the operation's
declared response, or it is refused the same way. Plug-ins that export no
hook are never called, and with none the middleware only passes requests
through. Plug-ins' own in-process calls to the app skip the hooks.

A plug-in with a ``rate_limit`` (``rate_limiter``) is counted for every
request that reaches its pre-hook, just before the hook would run: one over
the limit is answered 429 ``rate_limited`` with ``Retry-After``, the plug-in
is not called, and later pre-hooks and the route are skipped as for a hook's
own answer. Counting in the database blocks, so a request that reaches such a
plug-in runs its pre-hooks in a worker thread, the count in the same hop.

The body is read whole before any hook runs; a client that leaves before
sending all of it gets nothing run on its behalf.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from hostwire._contract import HTTP_HOOKS
from hostwire._errors import HookFailed
from hostwire._events import RateLimiter, Subscribed, Subscriber
from hostwire._hooks.calls import Hooks
from hostwire._hooks.exchange import AppCall, Exchange, failure_line
from hostwire._hooks.parts import hook_input
from hostwire._hooks.responses import ResponseContract
from hostwire._hooks.shapes import error_response, header_list, hook_request
from hostwire._hostapi import OpenAPIDocument
from hostwire._runtime import log_safe
from hostwire._targets import ASGI_EXTENSION

log = logging.getLogger("hostwire.hooks")
MAX_BODY_BYTES = 1024 * 1024


class _Disconnected(Exception):
    """The client left before its whole body arrived."""


class HttpHooksMiddleware:
    """ASGI middleware that runs the HTTP hooks of ``subscribers()`` around the app.

    ``spec`` is the OpenAPI document of the API the app serves: post-hook
    rewrites must keep its declared responses. Without it they are not checked.
    """

    def __init__(
        self,
        app: ASGIApp,
        subscribers: Callable[[], Sequence[Subscriber]],
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        spec: OpenAPIDocument | None = None,
        rate_limiter: RateLimiter | None = None,
        lease: Callable[[], AbstractContextManager[Subscribed]] | None = None,
    ) -> None:
        self.app = app
        self.subscribers = subscribers
        # Subscribers that a hot reload may replace: a request that runs hooks holds a
        # lease on those it started with (their plug-ins stay open) until it is answered.
        self.lease = lease
        self.max_body_bytes = max_body_bytes
        # Without the document a rewrite cannot be checked: it is trusted as it is.
        self.contract = ResponseContract(spec) if spec is not None else None
        self.hooks = Hooks(self.contract, rate_limiter)
        self._cached: tuple[Sequence[Subscriber], list[Subscriber]] | None = None

    def forget(self) -> None:
        """Drop the subscribers cached from the lineup before a hot reload: a replaced
        version is not kept alive until the next request."""
        self._cached = None

    def _hooked(self, current: Sequence[Subscriber] | None = None) -> list[Subscriber]:
        if current is None:
            current = self.subscribers()
        if self._cached is None or self._cached[0] is not current:
            hooked = [s for s in current if not s.plugin.exports.isdisjoint(HTTP_HOOKS)]
            self._cached = (current, hooked)  # holds the list: its identity stays valid
            self._check_sizes(hooked)
        return self._cached[1]

    def _check_sizes(self, hooked: Sequence[Subscriber]) -> None:
        # A hook's input is the body in base64 (4/3 of it) inside JSON: a plug-in
        # whose max_input_bytes is below that fails on bodies the app accepts
        # (unless it reads no request body: hook_input).
        needed = self.max_body_bytes * 4 // 3 + 64 * 1024
        for subscriber in hooked:
            if not hook_input(subscriber.plugin).request_body:
                continue
            limit = subscriber.plugin.limits.max_input_bytes
            if limit < needed:
                log.warning(
                    'Plug-in "%s": max_input_bytes %d is below the %d a hook needs for a '
                    "%d-byte body; larger requests will fail its hooks.",
                    log_safe(subscriber.plugin.name),
                    limit,
                    needed,
                    self.max_body_bytes,
                )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Hooks guard the network API. A plug-in's in-process host call is
        # already identified and limited by its grants: it skips them (else a
        # guard hook would refuse every plug-in that holds no API key).
        in_process = ASGI_EXTENSION in scope.get("extensions", {})
        hooked = []
        if scope["type"] == "http" and not in_process:
            hooked = self._hooked(self.subscribers())
        if not hooked:
            await self.app(scope, receive, send)
            return
        if self.lease is None:
            await self._hook(hooked, scope, receive, send)
            return
        with self.lease() as leased:
            await self._hook(self._hooked(leased.subscribers), scope, receive, send)

    async def _hook(
        self, hooked: list[Subscriber], scope: Scope, receive: Receive, send: Send
    ) -> None:
        if not hooked:  # a reload in between left none
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(receive)
        except _Disconnected:
            log.debug("The client left before sending its whole body; nothing ran.")
            return
        if body is None:
            await _send_error(send, 413, "payload_too_large", "The request body is too large.")
            return
        client = scope.get("client")
        exchange = Exchange(
            hook_request(scope), body, _request_id(scope), client[0] if client else None
        )
        try:
            await self.hooks.pre(hooked, exchange)
            if exchange.response is None:
                call = AppCall(exchange, receive, send, lambda c: self.hooks.chunk(exchange, c))
                if await call.run(self.app, scope):
                    return  # streamed: sent already
            await self.hooks.post(exchange)
        except HookFailed as exc:
            log.error(
                "%s; its policy is fail_closed, so the client got 502.",
                failure_line(exc, exchange),
                extra={"plugin": exc.plugin, "export": exc.export, "outcome": "fail_closed"},
            )
            await _send_error(send, 502, "plugin_failed", str(exc), plugin=exc.plugin)
            return
        await _send_response(send, exchange.response or {}, exchange.raw_headers, exchange.sendable)

    # -- the request -------------------------------------------------------------

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body; None when it is over the limit. Raises ``_Disconnected``."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _request_id(scope: Scope) -> str:
    """The id the app's middleware gave the request (``state["request_id"]``), else the
    client's X-Request-ID, for log lines."""
    given = scope.get("state", {}).get("request_id")
    if given is None:
        given = dict(scope["headers"]).get(b"x-request-id", b"-").decode("latin-1")
    return str(given)


async def _send_response(
    send: Send,
    response: dict[str, Any],
    raw_headers: list[tuple[bytes, bytes]] | None = None,
    sendable: tuple[dict[str, Any], list[tuple[bytes, bytes]] | None, bytes] | None = None,
) -> None:
    """Send ``response``; ``raw_headers`` are the app's own, kept as sent (repeated
    Set-Cookie included) when no hook replaced the response. ``sendable`` is
    ``Exchange.sendable``: when it is this response's, nothing is checked or decoded again."""
    known = sendable if sendable is not None and sendable[0] is response else None
    status = response["status_code"]
    if status in (204, 304):
        body = b""
    else:
        body = known[2] if known is not None else base64.b64decode(response.get("body", ""))
    if raw_headers is not None:
        source = raw_headers
    elif known is not None and known[1] is not None:
        source = known[1]
    else:
        source = header_list(response.get("headers", {}), "response.headers")
    headers = [(k, v) for k, v in source if k.lower() != b"content-length"]
    if status not in (204, 304):
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(
    send: Send, status: int, code: str, message: str, *, plugin: str | None = None
) -> None:
    await _send_response(send, error_response(status, code, message, plugin=plugin))
