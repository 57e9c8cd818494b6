"""Calling the plug-ins' hooks: where they run, what an answer must be, the three passes.

Pre-hooks run in plug-in order until one answers the request itself;
post-hooks and chunk hooks run in reverse order, for the plug-ins the request
reached. A hook whose answer is wrong, or that fails, follows its plug-in's
``on_error`` (``fail_closed`` raises ``HookFailed``, ``fail_open`` logs and
goes on without it). A plug-in with a rate limit is counted just before its
pre-hook; over the limit, the limiter's refusal answers the request instead.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from hostwire._contract import HTTP_HOOKS
from hostwire._errors import HookFailed, PluginError
from hostwire._events import RateLimiter, Refusal, Subscriber
from hostwire._hooks.exchange import Exchange, encode_json
from hostwire._hooks.parts import hook_input
from hostwire._hooks.responses import ResponseContract
from hostwire._hooks.shapes import (
    b64,
    check_request,
    check_response,
    content_type,
    error_response,
    unb64,
)
from hostwire._runtime import USER_MODULE, WASI_MODULES, Plugin, log_safe, parse_json, to_thread

log = logging.getLogger("hostwire.hooks")
PRE, POST, CHUNK = HTTP_HOOKS
INLINE_TIMEOUT_MS = 20
T = TypeVar("T")

_INLINE: weakref.WeakKeyDictionary[Plugin, bool] = weakref.WeakKeyDictionary()
# WASI functions that cannot block (the runtime gives no files or sockets).
_QUICK_WASI = frozenset(
    {"clock_time_get", "clock_res_get", "random_get", "environ_get", "environ_sizes_get",
     "args_get", "args_sizes_get", "proc_exit", "fd_write", "fd_close", "fd_fdstat_get"}
)  # fmt: skip


def _inline(subscriber: Subscriber) -> bool:
    """Whether this plug-in's hooks may run on the event loop (see the middleware's doc)."""
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


async def _run(
    subscribers: Sequence[Subscriber], fn: Callable[..., T], *args: object, blocks: bool = False
) -> T:
    """``fn(*args)`` on the event loop when all ``subscribers`` may run there (and ``fn``
    itself does not block), else in one hop to a worker thread."""
    if not blocks and all(_inline(s) for s in subscribers):
        return fn(*args)
    return await to_thread(fn, *args)


class Hooks:
    """The hooks of the plug-ins an exchange reaches, run in their passes.

    ``contract`` checks a post-hook's rewritten response against the documented
    responses; without it rewrites are trusted as they are. ``limiter`` counts
    the requests that reach a rate-limited plug-in's pre-hook.
    """

    def __init__(
        self, contract: ResponseContract | None, limiter: RateLimiter | None = None
    ) -> None:
        self.contract = contract
        self.limiter = limiter

    async def pre(self, hooked: Sequence[Subscriber], exchange: Exchange) -> None:
        limiter = self.limiter
        blocks = (
            limiter is not None
            and limiter.blocking
            and any(limiter.applies(s.plugin.name) for s in hooked)
        )
        await _run(hooked, self.run_pre, hooked, exchange, blocks=blocks)

    async def post(self, exchange: Exchange) -> None:
        posting = [s for s in exchange.reached if POST in s.plugin.exports]
        if posting:
            await _run(posting, self.run_post, exchange)

    async def chunk(self, exchange: Exchange, chunk: bytes) -> bytes | None:
        """The chunk to send on (None: send nothing for it)."""
        return await _run(exchange.reached, self.run_chunk, exchange, chunk)

    # -- the passes (on the loop or in a worker thread) ------------------------------
    # Synchronous: ``pre``/``post``/``chunk`` choose where they run; the test
    # harness (``hostwire.testing``) runs them as they are, so it checks hook
    # answers with this very code.

    def run_pre(self, hooked: Sequence[Subscriber], exchange: Exchange) -> None:
        for subscriber in hooked:
            if PRE not in subscriber.plugin.exports:
                exchange.reached.append(subscriber)
                continue
            refusal = self._count(subscriber, exchange)
            if refusal is not None:
                # Answered for the plug-in, which is not called: as if its hook had
                # answered, later pre-hooks and the route are skipped.
                exchange.response = _refused(refusal, subscriber.plugin.name)
                return
            reads_body = hook_input(subscriber.plugin).request_body
            context = exchange.context
            data = b'{"context":%s,"request":%s}' % (
                encode_json(context),
                exchange.request_json(reads_body),
            )
            answer = self._call(subscriber, PRE, data, context)
            if answer is None:
                continue  # failed, fail_open: as if it were not there, post-hook included
            exchange.reached.append(subscriber)
            before = exchange.request
            try:
                self._apply_pre(exchange, answer, reads_body)
            except ValueError as exc:
                self._fail(subscriber, PRE, f"its answer is wrong: {exc}", exc)
                continue
            stats = subscriber.plugin.stats
            if exchange.response is not None:
                stats.hook("short_circuit")
                return  # answered by the hook: later pre-hooks and the route are skipped
            stats.hook("rewrite" if exchange.request is not before else "pass")

    def _count(self, subscriber: Subscriber, exchange: Exchange) -> Refusal | None:
        if self.limiter is None:
            return None
        headers = exchange.request["headers"]
        return self.limiter.check(subscriber.plugin.name, headers, exchange.client)

    @staticmethod
    def _apply_pre(exchange: Exchange, answer: dict[str, Any], reads_body: bool) -> None:
        flag = answer.get("has_response")
        if flag is not None and not isinstance(flag, bool):
            raise ValueError("has_response must be true or false")
        if answer.get("response") is not None and flag is not True:
            # A PDK that forgot the flag would let a guard's refusal pass: never.
            raise ValueError("it carries a response but has_response is not true")
        if flag:
            response = answer.get("response")
            headers, body = check_response(response)  # raises unless it is an object
            exchange.context = answer["context"]
            exchange.response = response
            exchange.sendable = (cast(dict[str, Any], response), headers, body)
            return
        request = answer.get("request")
        if request is not None:
            if not isinstance(request, dict):
                raise ValueError("its request must be a JSON object")
            body = exchange.body
            if "body" in request:
                # A plug-in that reads no body got none: what it answers for it is moot.
                text = request.pop("body")
                if reads_body:
                    body = unb64(text, "request.body")
            merged = {**exchange.request, **request}
            check_request(merged)
            exchange.set_request(merged, body)
        exchange.context = answer["context"]

    def run_post(self, exchange: Exchange) -> None:
        for subscriber in reversed(exchange.reached):
            if POST not in subscriber.plugin.exports:
                continue
            parts = hook_input(subscriber.plugin)
            current = exchange.response or {}
            context = exchange.context
            data = b'{"context":%s,"request":%s,"response":%s}' % (
                encode_json(context),
                exchange.request_json(parts.request_body),
                encode_json(current if parts.response_body else {**current, "body": ""}),
            )
            answer = self._call(subscriber, POST, data, context)
            if answer is None:
                continue
            response = answer.get("response")
            try:
                if response is not None:
                    if not parts.response_body and isinstance(response, dict):
                        # It saw no body, so it cannot have changed it: the app's stays.
                        response["body"] = current.get("body", "")
                    headers, body = check_response(response)
                    self._check_contract(exchange, response, body)
            except ValueError as exc:
                self._fail(subscriber, POST, f"its answer is wrong: {exc}", exc)
                continue
            exchange.context = answer["context"]
            if response is not None:
                subscriber.plugin.stats.hook("rewrite")
                exchange.response = response
                exchange.raw_headers = None
                exchange.sendable = (response, headers, body)
            else:
                subscriber.plugin.stats.hook("pass")

    def run_chunk(self, exchange: Exchange, chunk: bytes) -> bytes | None:
        for subscriber in reversed(exchange.reached):
            if CHUNK not in subscriber.plugin.exports:
                continue
            context = exchange.context
            data = b'{"context":%s,"request":%s,"chunk":"%s"}' % (
                encode_json(context),
                exchange.request_json(hook_input(subscriber.plugin).request_body),
                b64(chunk).encode("ascii"),
            )
            answer = self._call(subscriber, CHUNK, data, context)
            if answer is None:
                continue
            if answer.get("skip"):
                return None
            if answer.get("chunk") is not None:
                try:
                    chunk = unb64(answer["chunk"], "chunk")
                except ValueError as exc:
                    self._fail(subscriber, CHUNK, f"its answer is wrong: {exc}", exc)
                    continue
            exchange.context = answer["context"]
        return chunk

    def _check_contract(self, exchange: Exchange, response: dict[str, Any], body: bytes) -> None:
        """A rewrite of status, content type or body must keep the declared response."""
        if self.contract is None:
            return
        before = exchange.response or {}
        status = response["status_code"]
        text, earlier = response.get("body", ""), before.get("body", "")
        if (
            status == before.get("status_code")
            and content_type(response) == content_type(before)
            and (text == earlier or body == unb64(earlier, "the earlier body"))
        ):
            return  # headers only: nothing the document declares has changed
        request = exchange.request
        problem = self.contract.problem(
            request["method"], request["path"], status, content_type(response), body
        )
        if problem is not None:
            raise ValueError(f"its rewritten response breaks the API: {problem}")

    # -- one hook ----------------------------------------------------------------------

    def _call(
        self, subscriber: Subscriber, export: str, data: bytes, context: dict[str, Any]
    ) -> Any:
        """A hook's answer to ``data`` (its input, which carries ``context``), or None
        when it failed and its plug-in is fail_open."""
        plugin = subscriber.plugin
        try:
            output = plugin.call(export, data)
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
            given = answer.get("context", {})
            if not isinstance(given, dict):
                raise ValueError("its context must be a JSON object")
            # Merged, not replaced: a plug-in that does not echo the context
            # must not erase what another plug-in's pre-hook left for its post-hook.
            answer["context"] = {**context, **given}
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
                extra={"plugin": failure.plugin, "export": export, "outcome": "fail_open"},
            )
            return
        raise failure from cause


def _refused(refusal: Refusal, plugin: str) -> dict[str, Any]:
    retry = {"retry-after": str(refusal.retry_after_s)}
    return error_response(
        refusal.status, refusal.code, refusal.message, plugin=plugin, headers=retry
    )
