"""Model lifecycle events as optional plug-in exports (Contract 2).

A plug-in subscribes to an event by exporting ``<model>_<before|after>_<step>``
(``light_before_save``); which plug-ins export what is worked out once per
event name and kept. ``before_*`` events run here, synchronously, in the
plug-in list's order: each handler may go on, replace the record, or reject
the change. ``after_*`` events go through the durable outbox (``outbox.py``).

The envelope has the Standard Webhooks shape
``{"id", "type", "timestamp", "data": {"record", "previous", "changes"}}``.
When the OpenAPI document declares a webhook named after the event type
(``light.before_save``), envelopes, and records a handler puts back, are
validated against its request body.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hostwire._contract import OnError, event_export
from hostwire._errors import EventHandlerError, EventRejected, PluginError, PluginOutputError
from hostwire._hostapi import OpenAPIDocument, compile_schema
from hostwire._runtime import JsonProblem, Plugin, loads_strict, log_safe

log = logging.getLogger("hostwire.events")


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A plug-in that may handle events, and what a failing before-handler means."""

    plugin: Plugin
    on_error: OnError = "fail_closed"


def new_envelope(
    model: str,
    step: str,
    record: dict[str, Any],
    previous: dict[str, Any] | None,
    changes: dict[str, Any],
) -> dict[str, Any]:
    """A fresh lifecycle event ``<model>.<step>`` (see ``event_envelope``)."""
    data = {"record": record, "previous": previous, "changes": changes}
    return event_envelope(f"{model}.{step}", data)


def event_envelope(type: str, data: dict[str, Any]) -> dict[str, Any]:
    """A fresh event: a unique id (the idempotency key), type, RFC 3339 time and data."""
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": type,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": data,
    }


class EventBus:
    """Calls the plug-ins that export an event's handler, in the configured order."""

    def __init__(
        self, subscribers: Iterable[Subscriber], *, spec: OpenAPIDocument | None = None
    ) -> None:
        self.subscribers = list(subscribers)
        self.spec = spec
        self._by_export: dict[str, list[Subscriber]] = {}
        self._schemas: dict[str, Any] = {}

    def handlers(self, model: str, step: str) -> list[Subscriber]:
        """Subscribers that export ``<model>_<step>``, in order (computed once)."""
        export = event_export(model, step)
        found = self._by_export.get(export)
        if found is None:
            found = [s for s in self.subscribers if export in s.plugin.exports]
            self._by_export[export] = found
        return found

    def problems(self, envelope: dict[str, Any]) -> list[dict[str, str]]:
        """How ``envelope`` breaks its webhook's schema (none if undeclared)."""
        kind = envelope["type"]
        if kind not in self._schemas:
            self._schemas[kind] = self._webhook_schema(kind)
        schema = self._schemas[kind]
        return schema.problems("event", "", envelope) if schema is not None else []

    def _webhook_schema(self, kind: str) -> Any:
        if self.spec is None:
            return None
        webhook = (self.spec.document.get("webhooks") or {}).get(kind)
        if not webhook:
            return None
        body = self.spec.webhook_body(kind)
        return compile_schema(self.spec, body) if body is not None else None

    def envelope(
        self,
        model: str,
        step: str,
        record: dict[str, Any],
        previous: dict[str, Any] | None,
        changes: dict[str, Any],
    ) -> dict[str, Any]:
        """A new event, checked against its webhook; a mismatch is the app's bug."""
        return self.checked(new_envelope(model, step, record, previous, changes))

    def checked(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """``envelope`` if it matches its webhook; else ``ValueError`` naming the first problem."""
        found = self.problems(envelope)
        if found:
            first = found[0]
            raise ValueError(
                f"{envelope['type']} event does not match its webhook: "
                f"{first['field']}: {first['message']}"
            )
        return envelope

    def before(
        self,
        model: str,
        step: str,
        record: dict[str, Any],
        previous: dict[str, Any] | None,
        changes: dict[str, Any],
    ) -> dict[str, Any]:
        """Run a ``before_*`` event; return the record, maybe replaced.

        Raises ``EventRejected`` when a handler rejects the change, and
        ``EventHandlerError`` when a ``fail_closed`` handler fails.
        """
        handlers = self.handlers(model, step)
        if not handlers:
            return record
        export = event_export(model, step)
        envelope = self.envelope(model, step, record, previous, changes)
        data = _encode(envelope)  # once per event; again only if a handler replaces the record
        for subscriber in handlers:
            plugin = subscriber.plugin
            try:
                replaced = self._call_before(plugin, export, envelope, data)
            except EventRejected:
                raise
            except PluginError as exc:
                if subscriber.on_error == "fail_open":
                    log.warning(
                        "%s; its policy is fail_open, so the change goes on.", log_safe(str(exc))
                    )
                    continue
                raise EventHandlerError(
                    f'{exc} (plug-in "{plugin.name}" is fail_closed, so the change was refused)',
                    plugin=plugin.name,
                    export=export,
                ) from exc
            if replaced is not None:
                envelope["data"]["record"] = replaced
                data = _encode(envelope)
        record_out: dict[str, Any] = envelope["data"]["record"]
        return record_out

    def _call_before(
        self, plugin: Plugin, export: str, envelope: dict[str, Any], data: bytes
    ) -> dict[str, Any] | None:
        output = plugin.call(export, data)
        if output in _GO_ON or not output.strip():
            return None
        where = f'Plug-in "{plugin.name}" export "{export}"'
        answer = _decode_answer(output, where, plugin.name, export)
        if (
            not isinstance(answer, dict)
            or len(answer) > 1
            or not set(answer) <= {"record", "reject"}
        ):
            raise PluginOutputError(
                f'{where} must answer {{}}, {{"record": {{...}}}} or '
                f'{{"reject": {{"reason": "..."}}}}, not {_clip(output)}',
                plugin=plugin.name,
                export=export,
            )
        if "reject" in answer:
            reject = answer["reject"]
            reason = reject.get("reason") if isinstance(reject, dict) else None
            if not isinstance(reason, str) or not reason:
                reason = "no reason given"
            raise EventRejected(
                f'Plug-in "{plugin.name}" rejected the change: {reason}',
                plugin=plugin.name,
                export=export,
                reason=reason,
            )
        if "record" in answer:
            return self._checked_record(plugin, export, envelope, answer["record"])
        return None

    def _checked_record(
        self, plugin: Plugin, export: str, envelope: dict[str, Any], record: Any
    ) -> dict[str, Any]:
        where = f'Plug-in "{plugin.name}" export "{export}"'
        if not isinstance(record, dict):
            raise PluginOutputError(
                f"{where} replaced the record with {type(record).__name__}, not an object.",
                plugin=plugin.name,
                export=export,
            )
        candidate = {**envelope, "data": {**envelope["data"], "record": record}}
        found = self.problems(candidate)
        if found:
            first = found[0]
            raise PluginOutputError(
                f"{where} returned an invalid record: {first['field']}: {first['message']}",
                plugin=plugin.name,
                export=export,
            )
        return record


_GO_ON = frozenset({b"", b"{}"})


def _decode_answer(output: bytes, where: str, plugin: str, export: str) -> Any:
    # Strict: UTF-8 only (json.loads(bytes) guesses UTF-16 from some byte
    # patterns), no NaN, bounded nesting (a RecursionError would be a 500).
    try:
        return loads_strict(output)
    except JsonProblem as exc:
        raise PluginOutputError(
            f"{where} returned invalid JSON: {exc}.", plugin=plugin, export=export
        ) from exc
    except RecursionError as exc:
        raise PluginOutputError(
            f"{where} returned JSON nested too deeply to read.", plugin=plugin, export=export
        ) from exc


def _encode(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def _clip(output: bytes, limit: int = 120) -> str:
    text = output.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "..."
