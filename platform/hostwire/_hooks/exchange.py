"""One request on its way through the hooks, and the app's answer to it.

``Exchange`` is what the hooks share: the request they see, the context they
pass on, the plug-ins the request reached and the response. ``AppCall`` runs
the route once for it. The app's first body message decides the ``Mode``: a
response that says more is coming and has no Content-Length streams to the
client chunk by chunk through the chunk hooks; anything else (204 and 304
included) is buffered for the post-hooks.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostwire._errors import HookFailed
from hostwire._events import Subscriber
from hostwire._hooks.shapes import b64, rewritten_scope
from hostwire._runtime import dumps, log_safe
from hostwire._targets import header_map

log = logging.getLogger("hostwire.hooks")

# The chunk hooks of one exchange: a chunk in, the chunk to send (None: skip it) out.
ChunkHooks = Callable[[bytes], Awaitable[bytes | None]]
# Compact JSON in UTF-8 (orjson where it can), as bytes.
encode_json = dumps


@dataclass(slots=True)
class Exchange:
    """One request on its way through the hooks.

    ``request`` is the request as hooks see it but its body (method, path,
    headers, query: ``hook_request``); ``body`` is the body's bytes. Its JSON
    is encoded once and shared by every hook of the exchange until a pre-hook
    rewrites it (``set_request``).
    """

    request: dict[str, Any]
    body: bytes
    request_id: str = "-"
    client: str | None = None  # the peer's address (a rate limit's "client" key)
    context: dict[str, Any] = field(default_factory=dict)
    reached: list[Subscriber] = field(default_factory=list)
    response: dict[str, Any] | None = None  # set by a short-circuit or the app
    rewritten: bool = False  # a pre-hook changed the request
    raw_headers: list[tuple[bytes, bytes]] | None = None  # the app's, while unchanged
    # The request's JSON for the hooks, with the body (True) or with "body": "" (False).
    _json: dict[bool, bytes] = field(default_factory=dict)
    # ``response`` as checked or captured: its headers (None: the app's, raw_headers)
    # and body bytes, so that sending it decodes and checks nothing again.
    sendable: tuple[dict[str, Any], list[tuple[bytes, bytes]] | None, bytes] | None = None

    def request_json(self, with_body: bool) -> bytes:
        """The request as hook input JSON; without its body for a plug-in that reads none."""
        encoded = self._json.get(with_body)
        if encoded is None:
            body = b64(self.body) if with_body else ""
            encoded = encode_json({**self.request, "body": body})
            self._json[with_body] = encoded
        return encoded

    def set_request(self, request: dict[str, Any], body: bytes) -> None:
        """A pre-hook's rewrite (checked): later hooks and the app see this request."""
        self.request, self.body, self.rewritten = request, body, True
        self._json.clear()

    def seen_request(self) -> dict[str, Any]:
        """The request with its body in base64, as a hook that reads it gets it."""
        return {**self.request, "body": b64(self.body)}


def failure_line(exc: HookFailed, exchange: Exchange) -> str:
    """A hook failure for the server's log: one line, client and plug-in text escaped."""
    request = exchange.request
    return (
        f'Plug-in "{exc.plugin}" {exc.export} failed on {log_safe(request["method"])} '
        f'"{log_safe(request["path"])}" (request_id={log_safe(exchange.request_id)}): '
        f"{log_safe(exc.reason)}"
    )


class Mode(enum.Enum):
    """What happens to the app's response, decided by its first body message."""

    UNDECIDED = enum.auto()  # no body message yet
    BUFFER = enum.auto()  # kept whole for the post-hooks, sent later
    STREAM = enum.auto()  # sent as it comes, each chunk through the chunk hooks


class _StreamCut(Exception):
    """A chunk hook failed mid-stream: the app must stop sending."""


class AppCall:
    """The app's side of one exchange: the route runs once; its answer is buffered or streamed.

    ``receive`` and ``send`` are the client's; the body was read from
    ``receive`` already, so the app gets it replayed.
    """

    def __init__(
        self, exchange: Exchange, receive: Receive, send: Send, chunk_hooks: ChunkHooks
    ) -> None:
        self.exchange = exchange
        self.mode = Mode.UNDECIDED
        self._receive = receive
        self._send = send
        self._chunk_hooks = chunk_hooks
        self._replayed = False
        self._start: dict[str, Any] = {}
        self._chunks: list[bytes] = []

    async def run(self, app: ASGIApp, scope: Scope) -> bool:
        """Run the route. True when its answer was streamed (so it is sent already);
        else the buffered answer is in ``exchange.response``."""
        exchange = self.exchange
        # Unless a pre-hook rewrote it, the app sees the request exactly as it came.
        inner = (
            rewritten_scope(scope, exchange.request, exchange.body)
            if exchange.rewritten
            else dict(scope)
        )
        try:
            await app(inner, self._replay, self._capture)
        except _StreamCut:
            return True
        if self.mode is Mode.STREAM:
            return True
        raw = list(self._start.get("headers", []))
        body = b"".join(self._chunks)
        exchange.raw_headers = raw
        exchange.response = {
            "status_code": int(self._start.get("status", 500)),
            "headers": header_map(raw),
            "body": b64(body),
        }
        exchange.sendable = (exchange.response, None, body)
        return False

    async def _replay(self) -> Message:
        if not self._replayed:
            self._replayed = True
            return {"type": "http.request", "body": self.exchange.body, "more_body": False}
        # The body was read already: what remains is waiting for the client
        # to leave (a streaming response listens for that).
        return await self._receive()

    async def _capture(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start.update(message)
            return
        if message["type"] != "http.response.body":
            return
        chunk = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        if self.mode is Mode.UNDECIDED:
            await self._decide(more)
        if self.mode is Mode.BUFFER:
            self._chunks.append(chunk)
        else:
            await self._stream(chunk, more)

    async def _decide(self, more: bool) -> None:
        length = any(k.lower() == b"content-length" for k, _ in self._start.get("headers", []))
        self.mode = Mode.STREAM if more and not length else Mode.BUFFER
        if self.mode is Mode.STREAM:
            start = {k: v for k, v in self._start.items() if k != "type"}
            await self._send({"type": "http.response.start", **start})

    async def _stream(self, chunk: bytes, more: bool) -> None:
        try:
            passed = await self._chunk_hooks(chunk) if chunk else b""
        except HookFailed as exc:
            # The status line is gone: all we can do is end the stream, and say why.
            log.error(
                "%s; the stream was cut short.",
                failure_line(exc, self.exchange),
                extra={"plugin": exc.plugin, "export": exc.export, "outcome": "stream_cut"},
            )
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            raise _StreamCut from exc
        if passed is not None and (passed or not more):
            await self._send({"type": "http.response.body", "body": passed, "more_body": more})
        elif not more:
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
