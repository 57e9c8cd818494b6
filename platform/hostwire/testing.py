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
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote

from hostwire._contract import EVENT_TYPE, error_body, event_export
from hostwire._events import EventBus
from hostwire._hostapi import (
    ALL_OPERATIONS,
    HostApi,
    OpenAPIDocument,
    Operation,
    compile_schema,
    dumps,
)
from hostwire._runtime import Limits, Plugin, plugin_json, read_path
from hostwire._targets import Caller, HttpCall, Reply

__all__ = ["MockReply", "PluginHarness", "RecordedCall"]


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


class _MockTarget:
    def __init__(self, harness: PluginHarness) -> None:
        self.harness = harness

    def send(self, call: HttpCall, caller: Caller) -> Reply:
        return self.harness._answer(call)

    def close(self) -> None:
        pass


class PluginHarness:
    """Run one plug-in with mocked operation responses and simulated events."""

    def __init__(
        self,
        wasm: bytes | str | Path,
        *,
        spec: str | Path | OpenAPIDocument,
        name: str = "plugin",
        config: Mapping[str, object] | None = None,
        grants: Iterable[str] = (ALL_OPERATIONS,),
        limits: Limits | None = None,
    ) -> None:
        data = wasm if isinstance(wasm, bytes) else read_path(name, Path(wasm))
        self.api = HostApi(spec, _MockTarget(self))
        self.calls: list[RecordedCall] = []
        self._mocks: dict[str, Responder] = {}
        # Events are checked against the spec's webhooks, as in production.
        self._bus = EventBus([], spec=self.api.spec)
        self.plugin = Plugin(
            name,
            data,
            config=config,
            limits=limits or Limits(),
            host_functions=self.api.host_functions(name, grants),
        )

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
        """
        if payload is not None:
            if record is not None or previous is not None or changes is not None:
                raise TypeError(
                    f'fire("{event}") takes a payload or record=/previous=/changes=, not both.'
                )
            raised = self._bus.event(event, payload)
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
        return self.call(event_export(model, step), envelope)

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
