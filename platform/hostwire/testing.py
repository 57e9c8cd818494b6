"""A test harness for plug-in authors: mocked operations, simulated events.

    from hostwire.testing import PluginHarness

    with PluginHarness("build/plugin.wasm", spec="openapi/light.yaml",
                       config={"target": "lamp"}) as harness:
        harness.mock("updateLight", lamp)   # a whole Light: mocks are checked
        harness.fire("light.after_update", record={...})
        assert harness.calls_to("updateLight")[0].body == {"color": "red", ...}

Calls go through the same validation and grants as in production (Contract 1),
then to mocks instead of the app: an operation without a mock answers
``501 not_mocked``. Every call that passed validation is recorded. ``fire``
raises any webhook of the spec: a lifecycle event from its change
(``record=``, ``previous=``, ``changes=``), any other from its payload
(``harness.fire("invoice_created", {...})``), checked against its schema.

``request`` runs an HTTP hook on a request built as the middleware builds it:

    result = harness.request("GET", "/lights", headers={"x-api-key": "k"})
    assert result.response.status == 401        # the pre-hook answered it

Every answer is checked by the code production runs: a hook's by the
middleware's passes (``HookFailed`` where the app would answer 502), a
``before_*`` handler's by the event bus (``PluginOutputError`` where the app
would refuse the change), so an answer the harness takes, the app takes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlencode

from hostwire._contract import EVENT_TYPE, HTTP_HOOKS, error_body, event_export
from hostwire._errors import EventRejected, HookFailed
from hostwire._events import EventBus, Subscriber, encode_event
from hostwire._hooks import (
    MAX_BODY_BYTES,
    Exchange,
    HookInput,
    Hooks,
    ResponseContract,
    b64,
    declare_hook_input,
    hook_request,
    rewritten_scope,
)
from hostwire._hostapi import (
    ALL_OPERATIONS,
    HostApi,
    OpenAPIDocument,
    Operation,
    compile_schema,
    dumps,
)
from hostwire._runtime import Limits, Plugin, plugin_json, read_path
from hostwire._targets import Caller, HttpCall, Reply, header_map

__all__ = [
    "HookFailed",
    "HookRequest",
    "HookResponse",
    "HookResult",
    "MockReply",
    "PluginHarness",
    "RecordedCall",
]
PRE, POST, CHUNK = HTTP_HOOKS


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One operation call a plug-in made."""

    operation: str  # the operationId (or function name when there is none)
    function: str
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True, slots=True)
class MockReply:
    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


Responder = Callable[[RecordedCall], MockReply]
Headers = Mapping[str, str] | Sequence[tuple[str, str]]


def _text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class HookRequest:
    """A request as the app gets it after a pre-hook (the hooks' view: a repeated
    header or query parameter is one entry, its values joined)."""

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return _text(self.body)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class HookResponse:
    """A response as the client gets it: status, headers and the decoded body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return _text(self.body)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class HookResult:
    """What one hook did (``PluginHarness.request``).

    ``passed``: the pre-hook let the request on to the app (it did not answer
    it); the post-hook kept the app's response; the chunk hook kept the chunk.
    ``request`` is the request the app gets (rewritten or not), ``response``
    the pre-hook's own answer (None when it passed) or, after a post-hook, the
    response the client gets; ``chunk`` what a chunk hook sends on (None:
    skipped). ``context`` is the context the next hook gets.
    """

    hook: str
    passed: bool
    request: HookRequest
    response: HookResponse | None
    context: dict[str, Any]
    chunk: bytes | None = None


def _encoded(body: Any, what: str) -> tuple[bytes, bool]:
    """``body`` as bytes, and whether it was JSON (a value that is not bytes or text)."""
    if body is None:
        return b"", False
    if isinstance(body, bytes | bytearray):
        return bytes(body), False
    if isinstance(body, str):
        return body.encode(), False
    try:
        return json.dumps(body, separators=(",", ":")).encode(), True
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be bytes, text or a JSON value: {exc}") from exc


def _raw_headers(headers: Headers | None, body: bytes, is_json: bool) -> list[tuple[bytes, bytes]]:
    """Headers as an ASGI server passes them: names lowercased, with the Content-Type
    of a JSON body and the Content-Length a client sends, unless given."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    raw = [(str(k).lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in pairs]
    names = {k for k, _ in raw}
    if is_json and b"content-type" not in names:
        raw.append((b"content-type", b"application/json"))
    if body and b"content-length" not in names:
        raw.append((b"content-length", str(len(body)).encode()))
    return raw


def _response(response: Mapping[str, Any]) -> HookResponse:
    """A checked hook response (``status_code``, ``headers``, base64 ``body``), decoded."""
    return HookResponse(
        int(response["status_code"]),
        dict(response.get("headers") or {}),
        base64.b64decode(response.get("body") or ""),
    )


class _MockTarget:
    def __init__(self, harness: PluginHarness) -> None:
        self.harness = harness

    def send(self, call: HttpCall, caller: Caller) -> Reply:
        return self.harness._answer(call)

    def close(self) -> None:
        pass


class PluginHarness:
    """Run one plug-in with mocked operation responses and simulated events.

    ``hook_input`` is its configuration's ``hook_input`` (e.g.
    ``{"request_body": False}``): its hooks then get what they would in the app.
    """

    def __init__(
        self,
        wasm: bytes | str | Path,
        *,
        spec: str | Path | OpenAPIDocument,
        name: str = "plugin",
        config: Mapping[str, object] | None = None,
        grants: Iterable[str] = (ALL_OPERATIONS,),
        limits: Limits | None = None,
        hook_input: Mapping[str, bool] | None = None,
    ) -> None:
        data = wasm if isinstance(wasm, bytes) else read_path(name, Path(wasm))
        self.api = HostApi(spec, _MockTarget(self))
        self.calls: list[RecordedCall] = []
        # Every event fire() delivered, as its handler got it, in order.
        self.events: list[dict[str, Any]] = []
        self._mocks: dict[str, Responder] = {}
        # Events are checked against the spec's webhooks, as in production.
        self._bus = EventBus([], spec=self.api.spec)
        # Hook answers go through the middleware's own passes; a post-hook's
        # rewrite is checked against the spec, as when the app passes its document.
        self._contract = ResponseContract(self.api.spec)
        self._hooks = Hooks(self._contract)
        self.plugin = Plugin(
            name,
            data,
            config=config,
            limits=limits or Limits(),
            host_functions=self.api.host_functions(name, grants),
        )
        # The bodies its hooks read, as its configuration's hook_input says them.
        parts = dict(hook_input or {})
        unknown = sorted(set(parts) - {"request_body", "response_body"})
        if unknown:
            self.plugin.close()
            raise ValueError(
                f"hook_input takes request_body and response_body, not {', '.join(unknown)}."
            )
        declare_hook_input(self.plugin, HookInput(**parts))

    # -- mocks -------------------------------------------------------------

    def mock(
        self,
        operation: str,
        body: Any = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        responder: Responder | None = None,
        check: bool = True,
    ) -> None:
        """Answer ``operation`` (operationId or name) with ``body``, or with ``responder``.

        ``body`` must match the operation's response schema for ``status``;
        ``check=False`` lets a test send what the app never would, to see how
        the plug-in copes.
        """
        op = self._operation(operation)
        reply = MockReply(status, body, dict(headers or {}))
        if check and responder is None and body is not None:
            self._check(op, status, body)
        self._mocks[op.name] = responder or (lambda call: reply)

    def calls_to(self, operation: str) -> list[RecordedCall]:
        """The calls made to ``operation`` (operationId or name), in order."""
        name = self._operation(operation).name
        return [c for c in self.calls if c.function == name]

    def _operation(self, operation: str) -> Operation:
        op = self.api.spec.operation(operation)
        if op is None:
            known = ", ".join(sorted(o.grant for o in self.api.operations.values()))
            raise KeyError(f'"{operation}" is not an operation (operations: {known})')
        return op

    def _check(self, op: Operation, status: int, body: Any) -> None:
        """A mock body must be what the app could answer: its response schema."""
        responses = op.node.value.get("responses") or {}
        code = str(status) if str(status) in responses else f"{str(status)[0]}XX"
        if code not in responses:
            return
        answer = self.api.spec.deref(op.node.child("responses", code))
        node = self.api.spec.json_schema(answer)
        if node is None:
            return
        schema = compile_schema(self.api.spec, node)
        found = schema.problems("mock", "", body)
        if found:
            first = found[0]
            raise ValueError(
                f'The mock body for "{op.grant}" ({status}) does not match the spec: '
                f"{first['field']}: {first['message']}"
            )

    def _answer(self, call: HttpCall) -> Reply:
        op = self.api.operations[call.operation]
        body = json.loads(call.body) if call.body else None
        recorded = RecordedCall(
            op.grant,
            op.name,
            call.method,
            unquote(call.path),
            list(call.query),
            dict(call.headers),
            body,
        )
        self.calls.append(recorded)
        responder = self._mocks.get(op.name)
        if responder is None:
            error = {"code": "not_mocked", "message": f'No mock for operation "{op.grant}".'}
            return Reply(501, {"content-type": "application/json"}, dumps(error_body(**error)))
        reply = responder(recorded)
        headers = {"content-type": "application/json", **reply.headers}
        return Reply(reply.status, headers, b"" if reply.body is None else dumps(reply.body))

    # -- running -----------------------------------------------------------

    def call(self, export: str, value: Any = None) -> Any:
        """Call ``export`` with ``value`` as JSON (no input when None); return its JSON output.

        Empty output gives None; output that is not JSON raises ``PluginOutputError``.
        """
        if value is None:
            output = self.plugin.call(export, b"")
            return (
                plugin_json(output, plugin=self.plugin.name, export=export)
                if output.strip()
                else None
            )
        return self.plugin.call_json(export, value)

    def call_raw(self, export: str, data: bytes | str = b"") -> bytes:
        return self.plugin.call(export, data)

    def fire(
        self,
        event: str,
        payload: Mapping[str, Any] | None = None,
        *,
        record: Mapping[str, Any] | None = None,
        previous: Mapping[str, Any] | None = None,
        changes: Mapping[str, Any] | None = None,
    ) -> Any:
        """Deliver an event of webhook ``event`` to its export; return the export's answer.

        A lifecycle event takes the change: ``fire("light.before_save",
        record=..., previous=..., changes=...)`` (changes default to the fields
        that differ from previous). Any webhook takes its payload:
        ``fire("invoice_created", {...})`` (the webhook's name or its export);
        an enveloped webhook's handler gets the envelope around it, a bare
        one's the payload itself. Either way the event is checked against the
        webhook's schema first: ``ValueError`` naming the field that breaks it.
        Each delivered event is kept in ``events``.

        A ``before_*`` handler's answer is checked as the event bus checks it:
        ``{}`` or nothing, ``{"record": {...}}`` (matching the webhook's record)
        or ``{"reject": {"reason": "..."}}``; any other shape raises
        ``PluginOutputError``, the error the app refuses the change over.
        """
        if payload is not None:
            if record is not None or previous is not None or changes is not None:
                raise TypeError(
                    f'fire("{event}") takes a payload or record=/previous=/changes=, not both.'
                )
            raised = self._bus.event(event, payload)
            self.events.append(raised.payload)
            return self.call(raised.export, raised.payload)
        if record is None:
            raise TypeError(
                f'fire("{event}") needs the payload (fire("{event}", {{...}})) or, for a '
                "lifecycle event, record=."
            )
        model, step = self._lifecycle(event)
        prev = dict(previous) if previous is not None else None
        if changes is None:
            before = prev or {}
            changes = {
                k: {"from": before.get(k), "to": v} for k, v in record.items() if before.get(k) != v
            }
        envelope = self._bus.envelope(model, step, dict(record), prev, dict(changes))
        export = event_export(model, step)
        self.events.append(envelope)
        if step.startswith("before_"):
            return self._before(export, envelope)
        return self.call(export, envelope)

    def _before(self, export: str, envelope: dict[str, Any]) -> Any:
        """A before-handler's answer, checked by the event bus's own code first:
        ``PluginOutputError`` for one the app would refuse the change over."""
        output = self.plugin.call(export, encode_event(envelope))
        with suppress(EventRejected):  # a well-formed rejection: the test sees it in the answer
            self._bus.before_answer(self.plugin.name, export, envelope, output)
        return (
            plugin_json(output, plugin=self.plugin.name, export=export) if output.strip() else None
        )

    def _lifecycle(self, event: str) -> tuple[str, str]:
        """``(model, step)`` of lifecycle event ``event``, declared or not."""
        found = EVENT_TYPE.match(event)
        if found is not None:
            return found["model"], found["step"]
        webhook = self._bus.webhook(event)
        if webhook.lifecycle is None:
            raise TypeError(
                f'"{event}" is not a lifecycle event, so fire() takes its payload, not '
                f'record=: fire("{event}", {{...}}).'
            )
        return webhook.lifecycle

    # -- HTTP hooks -------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Headers | None = None,
        query: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        body: Any = None,
        context: Mapping[str, Any] | None = None,
        hook: str = PRE,
        response: MockReply | None = None,
        chunk: bytes | str | None = None,
    ) -> HookResult:
        """Run HTTP hook ``hook`` on a request ``method`` ``path``; return what it did.

        The hook's input is built as the middleware builds it: header names
        lowercased (a JSON body adds ``content-type: application/json``, a body
        its ``content-length``), query parameters from ``path``'s ``?...`` and
        ``query`` (a repeated one joined with ","), the body in base64.
        ``body`` is bytes, text, or a JSON value. ``context`` is what earlier
        hooks left (a post-hook's: the ``context`` its pre-hook's result has).

        ``hook="http_post_hook"`` runs the post-hook on the app's ``response``
        (a ``MockReply``: status, body as for requests, headers; a JSON body
        is checked against the operation's response schema as a mock's is),
        and its rewrite against the spec's declared responses, as when the app
        passes its document; ``hook="http_stream_chunk_hook"`` runs the chunk hook on
        ``chunk``. An answer the middleware would refuse raises ``HookFailed``
        with its reason, as a ``fail_closed`` plug-in answers 502 in production.
        """
        if hook not in HTTP_HOOKS:
            raise ValueError(f'hook must be one of {", ".join(HTTP_HOOKS)}, not "{hook}".')
        if hook not in self.plugin.exports:
            exports = ", ".join(sorted(self.plugin.exports)) or "none"
            raise KeyError(
                f'Plug-in "{self.plugin.name}" does not export {hook} (exports: {exports}).'
            )
        scope, exchange = self._exchange(
            method, path, headers=headers, query=query, body=body, context=context
        )
        subscriber = Subscriber(self.plugin)  # fail_closed: a wrong answer raises HookFailed
        if hook == PRE:
            self._hooks.run_pre([subscriber], exchange)
            answered = exchange.response is not None
            if exchange.rewritten:  # the request as the app gets it, by the middleware's code
                exchange.request = hook_request(
                    rewritten_scope(scope, exchange.request, exchange.body)
                )
            return self._result(hook, exchange, passed=not answered)
        exchange.reached.append(subscriber)
        if hook == CHUNK:
            if chunk is None:
                raise TypeError('request(hook="http_stream_chunk_hook") needs chunk=.')
            given = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
            sent = self._hooks.run_chunk(exchange, given)
            return self._result(hook, exchange, passed=sent == given, chunk=sent)
        if response is None:
            raise TypeError(
                'request(hook="http_post_hook") needs the app\'s response=MockReply(status, body).'
            )
        content, is_json = _encoded(response.body, "response.body")
        op = self._contract.operation(method, exchange.request["path"])
        if is_json and op is not None:
            self._check(op, response.status, response.body)  # as a mock's: what the app could send
        raw = _raw_headers(response.headers, content, is_json)
        exchange.response = {
            "status_code": response.status,
            "headers": header_map(raw),
            "body": b64(content),
        }
        exchange.raw_headers = raw  # cleared when the post-hook replaces the response
        self._hooks.run_post(exchange)
        return self._result(hook, exchange, passed=exchange.raw_headers is not None)

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        headers: Headers | None,
        query: Mapping[str, str] | Sequence[tuple[str, str]] | None,
        body: Any,
        context: Mapping[str, Any] | None,
    ) -> tuple[dict[str, Any], Exchange]:
        if not path.startswith("/"):
            raise ValueError(f'The request path must start with "/", not "{path}".')
        content, is_json = _encoded(body, "body")
        if len(content) > MAX_BODY_BYTES:
            raise ValueError(
                f"The request body is {len(content)} bytes: the middleware answers 413 over "
                f"{MAX_BODY_BYTES} bytes, without running any hook."
            )
        target, _, text = path.partition("?")
        pairs = parse_qsl(text, keep_blank_values=True)
        pairs += list(query.items()) if isinstance(query, Mapping) else list(query or [])
        scope: dict[str, Any] = {
            "type": "http",
            "method": method.upper(),
            "path": unquote(target),
            "query_string": urlencode(pairs).encode("ascii"),
            "headers": _raw_headers(headers, content, is_json),
        }
        exchange = Exchange(hook_request(scope), content, context=dict(context or {}))
        return scope, exchange

    @staticmethod
    def _result(
        hook: str, exchange: Exchange, *, passed: bool, chunk: bytes | None = None
    ) -> HookResult:
        request = exchange.request
        seen = HookRequest(
            request["method"],
            request["path"],
            dict(request["headers"]),
            dict(request["query"]),
            exchange.body,
        )
        response = None if exchange.response is None else _response(exchange.response)
        return HookResult(hook, passed, seen, response, dict(exchange.context), chunk)

    def close(self) -> None:
        self.plugin.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
