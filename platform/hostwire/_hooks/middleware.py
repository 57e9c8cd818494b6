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

The body is read whole before any hook runs; a client that leaves before
sending all of it gets nothing run on its behalf.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostwire._errors import HookFailed, PluginError
from hostwire._events import Subscriber
from hostwire._hooks.responses import ResponseContract
from hostwire._hostapi import HEADER_VALUE, OpenAPIDocument
from hostwire._runtime import USER_MODULE, WASI_MODULES, Plugin, log_safe, parse_json, to_thread
from hostwire._targets import ASGI_EXTENSION, header_map

log = logging.getLogger("hostwire.hooks")
PRE, POST, CHUNK = "http_pre_hook", "http_post_hook", "http_stream_chunk_hook"
MAX_BODY_BYTES = 1024 * 1024
INLINE_TIMEOUT_MS = 20


def _failure_line(exc: HookFailed, exchange: _Exchange) -> str:
    """A hook failure for the server's log: one line, client and plug-in text escaped."""
    request = exchange.request
    return (
        f'Plug-in "{exc.plugin}" {exc.export} failed on {log_safe(request["method"])} '
        f'"{log_safe(request["path"])}" (request_id={log_safe(exchange.request_id)}): '
        f"{log_safe(exc.reason)}"
    )


class _Disconnected(Exception):
    """The client left before its whole body arrived."""


@dataclass(slots=True)
class _Exchange:
    """One request on its way through the hooks."""

    request: dict[str, Any]
    body: bytes
    request_id: str = "-"
    context: dict[str, Any] = field(default_factory=dict)
    reached: list[Subscriber] = field(default_factory=list)
    response: dict[str, Any] | None = None  # set by a short-circuit or the app
    rewritten: bool = False  # a pre-hook changed the request
    raw_headers: list[tuple[bytes, bytes]] | None = None  # the app's, while unchanged


_INLINE: weakref.WeakKeyDictionary[Plugin, bool] = weakref.WeakKeyDictionary()
# WASI functions that cannot block (the runtime gives no files or sockets).
_QUICK_WASI = frozenset(
    {"clock_time_get", "clock_res_get", "random_get", "environ_get", "environ_sizes_get",
     "args_get", "args_sizes_get", "proc_exit", "fd_write", "fd_close", "fd_fdstat_get"}
)  # fmt: skip


def _inline(subscriber: Subscriber) -> bool:
    """Whether this plug-in's hooks may run on the event loop (see the module doc)."""
    plugin = subscriber.plugin
    answer = _INLINE.get(plugin)
    if answer is None:
        # A plug-in that may call the app cannot run on the loop that must answer
        # it, and a WASI call that can block (poll_oneoff: sleep) is not cut off
        # by timeout_ms: only plug-ins whose host calls all return at once qualify.
        calls_app = any(True for _ in plugin.info.imports_from(USER_MODULE))
        wasi = {i.name for i in plugin.info.imports if i.module in WASI_MODULES}
        answer = (
            plugin.limits.timeout_ms <= INLINE_TIMEOUT_MS and not calls_app and wasi <= _QUICK_WASI
        )
        _INLINE[plugin] = answer
    return answer


async def _run(subscribers: Sequence[Subscriber], fn: Callable[..., Any], *args: Any) -> Any:
    if all(_inline(s) for s in subscribers):
        return fn(*args)
    return await to_thread(fn, *args)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not valid base64: {exc}") from exc


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _strings(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{what} must be an object of strings")
    return value


def _header_list(headers: Any, what: str) -> list[tuple[bytes, bytes]]:
    """Headers a hook wrote, checked: token names; values without CR, LF or NUL."""
    for name, text in _strings(headers, what).items():
        if not _TOKEN.match(name) or not HEADER_VALUE.match(text):
            raise ValueError(f"{what} has a header that is not valid HTTP: {name!r}")
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


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
    ) -> None:
        self.app = app
        self.subscribers = subscribers
        self.max_body_bytes = max_body_bytes
        # Without the document a rewrite cannot be checked: it is trusted as it is.
        self.contract = ResponseContract(spec) if spec is not None else None
        self._cached: tuple[Sequence[Subscriber], list[Subscriber]] | None = None

    def _hooked(self) -> list[Subscriber]:
        current = self.subscribers()
        if self._cached is None or self._cached[0] is not current:
            hooked = [s for s in current if {PRE, POST, CHUNK} & s.plugin.exports]
            self._cached = (current, hooked)  # holds the list: its identity stays valid
            self._check_sizes(hooked)
        return self._cached[1]

    def _check_sizes(self, hooked: Sequence[Subscriber]) -> None:
        # A hook's input is the body in base64 (4/3 of it) inside JSON: a plug-in
        # whose max_input_bytes is below that fails on bodies the app accepts.
        needed = self.max_body_bytes * 4 // 3 + 64 * 1024
        for subscriber in hooked:
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
        hooked = self._hooked() if scope["type"] == "http" and not in_process else []
        if not hooked:
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
        exchange = _Exchange(self._request(scope, body), body, _request_id(scope))
        try:
            await _run(hooked, self._run_pre_hooks, hooked, exchange)
            if exchange.response is None:
                streamed = await self._call_app(scope, receive, exchange, send)
                if streamed:
                    return
            posting = [s for s in exchange.reached if POST in s.plugin.exports]
            if posting:
                await _run(posting, self._run_post_hooks, exchange)
        except HookFailed as exc:
            log.error(
                "%s; its policy is fail_closed, so the client got 502.",
                _failure_line(exc, exchange),
            )
            await _send_error(send, 502, "plugin_failed", str(exc), plugin=exc.plugin)
            return
        await _send_response(send, exchange.response or {}, exchange.raw_headers)

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

    @staticmethod
    def _request(scope: Scope, body: bytes) -> dict[str, Any]:
        query: dict[str, str] = {}
        for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"), True):
            query[key] = f"{query[key]},{value}" if key in query else value
        return {
            "method": scope["method"],
            "path": scope["path"],
            "headers": header_map(scope["headers"]),
            "query": query,
            "body": _b64(body),
        }

    # -- calling plug-ins (in a worker thread) -----------------------------------------

    def _call(self, subscriber: Subscriber, export: str, value: dict[str, Any]) -> Any:
        """A hook's answer, or None when it failed and its plug-in is fail_open."""
        plugin = subscriber.plugin
        try:
            output = plugin.call(export, json.dumps(value, separators=(",", ":")).encode())
            if len(output) > plugin.limits.max_output_bytes:  # refused before decoding
                raise ValueError(
                    f"its answer is {len(output)} bytes, over its max_output_bytes "
                    f"({plugin.limits.max_output_bytes})"
                )
            # No output: no change.
            answer = parse_json(output, "its answer") if output.strip() else {}
            if not isinstance(answer, dict):
                raise ValueError(f"its answer must be a JSON object, not {type(answer).__name__}")
            if answer.get("error"):
                raise ValueError(f"it reported an error: {answer['error']}")
            context = answer.get("context", {})
            if not isinstance(context, dict):
                raise ValueError("its context must be a JSON object")
            # Merged, not replaced: a plug-in that does not echo the context
            # must not erase what another plug-in's pre-hook left for its post-hook.
            answer["context"] = {**value["context"], **context}
        except (PluginError, ValueError, RecursionError) as exc:
            reason = (
                "its JSON is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            )
            return self._fail(subscriber, export, reason, exc)
        return answer

    @staticmethod
    def _fail(subscriber: Subscriber, export: str, reason: str, cause: Exception) -> None:
        """Apply the plug-in's failure policy: log and go on, or raise ``HookFailed``."""
        failure = HookFailed(subscriber.plugin.name, export, reason)
        if subscriber.on_error == "fail_open":
            log.warning(
                'Plug-in "%s" %s failed: %s; its policy is fail_open, so the request goes on.',
                log_safe(failure.plugin),
                export,
                log_safe(reason),
            )
            return
        raise failure from cause

    def _run_pre_hooks(self, hooked: Sequence[Subscriber], exchange: _Exchange) -> None:
        for subscriber in hooked:
            if PRE not in subscriber.plugin.exports:
                exchange.reached.append(subscriber)
                continue
            value = {"context": exchange.context, "request": exchange.request}
            answer = self._call(subscriber, PRE, value)
            if answer is None:
                continue  # failed, fail_open: as if it were not there, post-hook included
            exchange.reached.append(subscriber)
            try:
                self._apply_pre(exchange, answer)
            except ValueError as exc:
                self._fail(subscriber, PRE, f"its answer is wrong: {exc}", exc)
                continue
            if exchange.response is not None:
                return  # answered by the hook: later pre-hooks and the route are skipped

    def _apply_pre(self, exchange: _Exchange, answer: dict[str, Any]) -> None:
        flag = answer.get("has_response")
        if flag is not None and not isinstance(flag, bool):
            raise ValueError("has_response must be true or false")
        if answer.get("response") is not None and flag is not True:
            # A PDK that forgot the flag would let a guard's refusal pass: never.
            raise ValueError("it carries a response but has_response is not true")
        if flag:
            response = answer.get("response")
            _check_response(response)
            exchange.context = answer["context"]
            exchange.response = response
            return
        request = answer.get("request")
        if request is not None:
            if not isinstance(request, dict):
                raise ValueError("its request must be a JSON object")
            merged = {**exchange.request, **request}
            body = _unb64(merged["body"], "request.body")
            _header_list(merged["headers"], "request.headers")
            if not isinstance(merged["method"], str) or not _TOKEN.match(merged["method"]):
                raise ValueError("request.method must be an HTTP method")
            if not isinstance(merged["path"], str) or not merged["path"].startswith("/"):
                raise ValueError("request.path must be a string that starts with /")
            _strings(merged["query"], "request.query")
            exchange.request, exchange.body = merged, body
            exchange.rewritten = True
        exchange.context = answer["context"]

    def _run_post_hooks(self, exchange: _Exchange) -> None:
        for subscriber in reversed(exchange.reached):
            if POST not in subscriber.plugin.exports:
                continue
            value = {
                "context": exchange.context,
                "request": exchange.request,
                "response": exchange.response,
            }
            answer = self._call(subscriber, POST, value)
            if answer is None:
                continue
            response = answer.get("response")
            try:
                if response is not None:
                    _check_response(response)
                    self._check_contract(exchange, response)
            except ValueError as exc:
                self._fail(subscriber, POST, f"its answer is wrong: {exc}", exc)
                continue
            exchange.context = answer["context"]
            if response is not None:
                exchange.response = response
                exchange.raw_headers = None

    def _run_chunk_hooks(self, exchange: _Exchange, chunk: bytes) -> bytes | None:
        for subscriber in reversed(exchange.reached):
            if CHUNK not in subscriber.plugin.exports:
                continue
            value = {"context": exchange.context, "request": exchange.request, "chunk": _b64(chunk)}
            answer = self._call(subscriber, CHUNK, value)
            if answer is None:
                continue
            if answer.get("skip"):
                return None
            if answer.get("chunk") is not None:
                try:
                    chunk = _unb64(answer["chunk"], "chunk")
                except ValueError as exc:
                    self._fail(subscriber, CHUNK, f"its answer is wrong: {exc}", exc)
                    continue
            exchange.context = answer["context"]
        return chunk

    def _check_contract(self, exchange: _Exchange, response: dict[str, Any]) -> None:
        """A rewrite of status, content type or body must keep the declared response."""
        if self.contract is None:
            return
        before = exchange.response or {}
        status = response["status_code"]
        text, earlier = response.get("body", ""), before.get("body", "")
        body = _unb64(text, "response.body")
        if (
            status == before.get("status_code")
            and _content_type(response) == _content_type(before)
            and (text == earlier or body == _unb64(earlier, "the earlier body"))
        ):
            return  # headers only: nothing the document declares has changed
        request = exchange.request
        problem = self.contract.problem(
            request["method"], request["path"], status, _content_type(response), body
        )
        if problem is not None:
            raise ValueError(f"its rewritten response breaks the API: {problem}")

    # -- the app ---------------------------------------------------------------------

    async def _call_app(
        self, scope: Scope, receive: Receive, exchange: _Exchange, send: Send
    ) -> bool:
        """Run the route; buffer its answer, or stream it through the chunk hooks.

        A response streams when its first body message says more is coming and
        it has no Content-Length; anything else (204 and 304 included) is
        buffered for the post-hooks. Returns True when it was streamed (sent).
        """
        inner = dict(scope)
        if exchange.rewritten:  # else the app sees the request exactly as it came
            request = exchange.request
            body_length = str(len(exchange.body)).encode()
            headers = [
                (k, v)
                for k, v in _header_list(request["headers"], "request.headers")
                if k != b"content-length"
            ]
            if exchange.body or request["method"].upper() not in ("GET", "HEAD"):
                headers.append((b"content-length", body_length))
            inner |= {
                "method": request["method"].upper(),
                "path": request["path"],
                "raw_path": quote(request["path"]).encode("ascii"),
                "query_string": urlencode(request["query"]).encode("ascii"),
                "headers": headers,
            }
        body = exchange.body
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            # The body was read already: what remains is waiting for the client
            # to leave (a streaming response listens for that).
            return await receive()

        start: dict[str, Any] = {}
        chunks: list[bytes] = []
        mode = ""  # "", then "stream" or "buffer" from the first body message

        async def capture(message: Message) -> None:
            nonlocal mode
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                return
            chunk = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if not mode:
                length = any(k.lower() == b"content-length" for k, _ in start.get("headers", []))
                mode = "stream" if more and not length else "buffer"
                if mode == "stream":
                    await send({"type": "http.response.start", **_without_type(start)})
            if mode == "buffer":
                chunks.append(chunk)
                return
            try:
                passed = (
                    await _run(exchange.reached, self._run_chunk_hooks, exchange, chunk)
                    if chunk
                    else b""
                )
            except HookFailed as exc:
                # The status line is gone: all we can do is end the stream, and say why.
                log.error("%s; the stream was cut short.", _failure_line(exc, exchange))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                raise _StreamCut from exc
            if passed is not None and (passed or not more):
                await send({"type": "http.response.body", "body": passed, "more_body": more})
            elif not more:
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            await self.app(inner, replay, capture)
        except _StreamCut:
            return True
        if mode == "stream":
            return True
        raw = list(start.get("headers", []))
        exchange.raw_headers = raw
        exchange.response = {
            "status_code": int(start.get("status", 500)),
            "headers": header_map(raw),
            "body": _b64(b"".join(chunks)),
        }
        return False


class _StreamCut(Exception):
    pass


def _request_id(scope: Scope) -> str:
    """The id the app's middleware gave the request (``state["request_id"]``), else the
    client's X-Request-ID, for log lines."""
    given = scope.get("state", {}).get("request_id")
    if given is None:
        given = dict(scope["headers"]).get(b"x-request-id", b"-").decode("latin-1")
    return str(given)


def _content_type(response: dict[str, Any]) -> str:
    headers = response.get("headers") or {}
    return next((str(v) for k, v in headers.items() if k.lower() == "content-type"), "")


def _without_type(message: Message) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "type"}


def _check_response(response: Any) -> None:
    if not isinstance(response, dict):
        raise ValueError("its response must be a JSON object")
    status = response.get("status_code")
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise ValueError("response.status_code must be an integer from 200 to 599")
    _header_list(response.get("headers", {}), "response.headers")
    _unb64(response.get("body", ""), "response.body")


async def _send_response(
    send: Send, response: dict[str, Any], raw_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send ``response``; ``raw_headers`` are the app's own, kept as sent (repeated
    Set-Cookie included) when no hook replaced the response."""
    status = response["status_code"]
    body = b"" if status in (204, 304) else base64.b64decode(response.get("body", ""))
    source = (
        raw_headers
        if raw_headers is not None
        else (_header_list(response.get("headers", {}), "response.headers"))
    )
    headers = [(k, v) for k, v in source if k.lower() != b"content-length"]
    if status not in (204, 304):
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(
    send: Send, status: int, code: str, message: str, *, plugin: str | None = None
) -> None:
    error: dict[str, Any] = {"code": code, "message": message}
    if plugin:
        error["plugin"] = plugin
    body = json.dumps({"error": error}).encode()
    await _send_response(
        send,
        {
            "status_code": status,
            "headers": {"content-type": "application/json"},
            "body": _b64(body),
        },
    )
