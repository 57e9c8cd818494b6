"""Events as optional plug-in exports (Contract 2): every webhook of the document.

A plug-in handles webhook ``name`` by exporting ``Webhook.export``
(``light.before_save`` → ``light_before_save``, ``invoice.created`` →
``invoice_created``); which plug-ins export what is worked out once per
export and kept. Lifecycle ``before_*`` events run here, synchronously, in
the plug-in list's order: each handler may go on, replace the record, or
reject the change. Every other event goes through the durable outbox
(``outbox.py``).

What a handler receives depends on how the webhook declares its body: an
``enveloped`` one gets the Standard Webhooks envelope ``{"id", "type",
"timestamp", "data"}`` (lifecycle events: ``data`` is ``{"record",
"previous", "changes"}``); a bare one gets the payload itself, and its event
id is kept beside it. Payloads, and records a handler puts back, are
validated against the webhook's request body when the document declares one.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast
from urllib.parse import urldefrag, urljoin

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib is the fallback
    orjson = None  # type: ignore[assignment]

from hostwire._contract import OnError, event_export, lifecycle_exports, lifecycle_webhook
from hostwire._errors import EventHandlerError, EventRejected, PluginError, PluginOutputError
from hostwire._hostapi import Node, OpenAPIDocument, Webhook, compile_schema
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


class _Ids:
    """Unique event ids without a system call each: a random prefix per process
    (new in a forked child) and a counter, 32 hex digits in all, like a uuid4's."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = f"evt_{secrets.token_hex(10)}"
        self.counter = itertools.count(secrets.randbits(40))

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFF:012x}"


_IDS = _Ids()


def new_event_id() -> str:
    """A unique event id, ``evt_<32 hex>``: the outbox key and the handlers' idempotency key."""
    return _IDS.next()


_second: list[tuple[int, str]] = [(-1, "")]  # the last second and its text, swapped whole


def _timestamp() -> str:
    """Now in RFC 3339 (UTC, milliseconds, ``Z``); the date part is made once a second."""
    now = time.time()
    second = int(now)
    cached, prefix = _second[0]
    if cached != second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0] = (second, prefix)
    return f"{prefix}.{int((now - second) * 1000):03d}Z"


def event_envelope(type: str, data: dict[str, Any]) -> dict[str, Any]:
    """A fresh event: a unique id (the idempotency key), type, RFC 3339 time and data."""
    return {"id": _IDS.next(), "type": type, "timestamp": _timestamp(), "data": data}


@dataclass(frozen=True, slots=True)
class Event:
    """One raised event of a webhook: what its handlers receive, and its id.

    ``payload`` is the envelope around the data for an enveloped webhook, else
    the data itself; ``id`` is the outbox key and idempotency key either way
    (for a bare payload hostwire keeps it beside the payload).
    """

    id: str
    webhook: Webhook
    payload: dict[str, Any]

    @property
    def type(self) -> str:
        """The webhook's name (an envelope's ``type``)."""
        return self.webhook.name

    @property
    def export(self) -> str:
        """The plug-in export that handles it."""
        return self.webhook.export

    @property
    def data(self) -> dict[str, Any]:
        """What the event carries: the envelope's ``data``, or the bare payload."""
        found: dict[str, Any] = self.payload["data"] if self.webhook.enveloped else self.payload
        return found

    def default_subject(self) -> str:
        """What orders this event when the caller names no subject.

        ``<first part of the type>/<id>`` when the data has an ``id``
        (``item.archived`` with id 7 → ``item/7``); for a bare payload, else
        ``<property>/<id>`` of the first object inside that has an ``id``, or
        else a key ending in ``_id`` (Lago's ``invoice_created`` →
        ``invoice/<lago_id>``, so one invoice's events keep their order);
        else the event id (no ordering with other events).
        """
        data = self.data
        key = data.get("id")
        if key is not None:
            return f"{self.type.partition('.')[0]}/{key}"
        if not self.webhook.enveloped:
            for name, value in data.items():
                inner = _identifier(value) if isinstance(value, dict) else None
                if inner is not None:
                    return f"{name}/{inner}"
        return self.id


def _identifier(value: dict[str, Any]) -> str | None:
    """An object's id: its ``id``, else its first ``*_id`` key holding text or a number."""
    if value.get("id") is not None:
        return str(value["id"])
    for key, item in value.items():
        if key.endswith("_id") and isinstance(item, str | int) and not isinstance(item, bool):
            return str(item)
    return None


def handled_events(exports: frozenset[str], spec: OpenAPIDocument | None) -> list[tuple[str, str]]:
    """``(export, webhook)`` for each export that handles an event, sorted by export.

    With a document, every export that is one of its webhooks' exports; without
    one, the exports named like lifecycle events (``light_before_save`` →
    ``light.before_save``).
    """
    if spec is not None:
        return sorted((w.export, w.name) for w in spec.webhooks.values() if w.export in exports)
    return [(name, lifecycle_webhook(name)) for name in lifecycle_exports(exports)]


class Subscribed(Protocol):
    @property
    def subscribers(self) -> Sequence[Subscriber]: ...


class SubscriberSource(Protocol):
    """Subscribers that may change (a hot reload): ``subscribers`` now, or a
    ``lease()`` on them that keeps their plug-ins open until it ends."""

    @property
    def subscribers(self) -> Sequence[Subscriber]: ...

    def lease(self) -> AbstractContextManager[Subscribed]: ...


class _Fixed:
    def __init__(self, subscribers: Iterable[Subscriber]) -> None:
        self.subscribers = tuple(subscribers)

    def lease(self) -> AbstractContextManager[Subscribed]:
        return nullcontext(self)


class EventBus:
    """Calls the plug-ins that export an event's handler, in the configured order.

    ``subscribers`` is a fixed list, or a ``SubscriberSource`` whose set may be
    replaced while the bus runs: a before-event runs on the set it started with.
    """

    def __init__(
        self,
        subscribers: Iterable[Subscriber] | SubscriberSource,
        *,
        spec: OpenAPIDocument | None = None,
    ) -> None:
        self._source: SubscriberSource = (
            cast(SubscriberSource, subscribers)
            if hasattr(subscribers, "lease")
            else _Fixed(subscribers)
        )
        self.spec = spec
        # Who handles what, for one set of subscribers (replaced whole with the set).
        self._by_export: tuple[Sequence[Subscriber], dict[str, list[Subscriber]]] = ((), {})
        self._schemas: dict[str, Any] = {}
        self._plans: dict[str, _Plan | None] = {}
        # Part verdicts of every plan, by (what checks it, the part's JSON); bounded.
        self._verdicts: dict[tuple[str, bytes | str], bool] = {}
        self._webhook_exports: dict[str, Webhook] | None = None

    def handlers(self, model: str, step: str) -> list[Subscriber]:
        """Subscribers that export ``<model>_<step>``, in order (computed once)."""
        return self.handlers_of(event_export(model, step))

    @property
    def subscribers(self) -> Sequence[Subscriber]:
        """The subscribers serving now."""
        return self._source.subscribers

    def forget(self) -> None:
        """Drop the handlers cached from the lineup before a hot reload (see
        ``handlers_of``): a replaced version is not kept alive until the next event."""
        self._by_export = ((), {})

    def handlers_of(
        self, export: str, subscribers: Sequence[Subscriber] | None = None
    ) -> list[Subscriber]:
        """Subscribers (of ``subscribers``, by default those serving now) that export
        ``export``, in order (computed once per export and set)."""
        current = self._source.subscribers if subscribers is None else subscribers
        known, by_export = self._by_export
        if known is not current:
            by_export = {}
            self._by_export = (current, by_export)
        found = by_export.get(export)
        if found is None:
            found = [s for s in current if export in s.plugin.exports]
            by_export[export] = found
        return found

    def webhook(self, name: str) -> Webhook:
        """The document's webhook ``name``, or the one export ``name`` handles.

        ``ValueError`` when there is none, naming the document's webhooks.
        """
        webhooks = self.spec.webhooks if self.spec is not None else {}
        found = webhooks.get(name)
        if found is None:
            if self._webhook_exports is None:
                self._webhook_exports = {w.export: w for w in webhooks.values()}
            found = self._webhook_exports.get(name)
        if found is None:
            where = self.spec.source if self.spec is not None else "the document (there is none)"
            declared = ", ".join(sorted(webhooks)) or "none"
            raise ValueError(
                f'"{name}" is not a webhook of {where}, so no plug-in can handle it '
                f"(webhooks: {declared})."
            )
        return found

    def event(self, name: str, data: Mapping[str, Any]) -> Event:
        """A new event of webhook ``name`` (or its export) carrying ``data``.

        An enveloped webhook's event is the envelope around ``data`` (without
        an ``id`` when the declared envelope forbids one); a bare webhook's is
        ``data`` itself. ``ValueError`` when it does not match the webhook.
        """
        webhook = self.webhook(name)
        if webhook.enveloped:
            payload = event_envelope(webhook.name, dict(data))
            event_id = str(payload["id"])
            if self._forbids_id(webhook):
                del payload["id"]
        else:
            event_id, payload = new_event_id(), dict(data)
        return Event(event_id, webhook, self.checked(payload, webhook.name))

    def _forbids_id(self, webhook: Webhook) -> bool:
        if self.spec is None or webhook.body is None:
            return False
        value = self.spec.deref(webhook.body).value
        closed = value.get("additionalProperties") is False
        closed = closed or value.get("unevaluatedProperties") is False
        return closed and "id" not in (value.get("properties") or {})

    def problems(self, event: dict[str, Any], webhook: str | None = None) -> list[dict[str, str]]:
        """How ``event`` breaks its webhook's schema (none if undeclared).

        ``event`` is an envelope (its ``type`` names the webhook) or, with
        ``webhook`` (the webhook's name), that webhook's bare payload.
        """
        kind = webhook if webhook is not None else event["type"]
        if kind not in self._schemas:
            self._schemas[kind] = self._webhook_schema(kind)
        schema = self._schemas[kind]
        return schema.problems("event", "", event) if schema is not None else []

    def _webhook_schema(self, kind: str) -> Any:
        if self.spec is None:
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
        envelope = new_envelope(model, step, record, previous, changes)
        kind = envelope["type"]
        plan = self._plans[kind] if kind in self._plans else self._plan(kind)
        if plan is not None and plan.passes(envelope):
            return envelope
        return self.checked(envelope)  # every problem, as a whole-envelope check reports it

    def _plan(self, kind: str) -> _Plan | None:
        plan = None
        if self.spec is not None:
            body = self.spec.webhook_body(kind)
            if body is None:  # undeclared: nothing to check
                plan = _Plan({}, {}, kind, self._verdicts)
            else:
                plan = _Plan.of(self.spec, body, kind, self._verdicts)
        self._plans[kind] = plan
        return plan

    def record_passed(self, schema_uri: str, record: dict[str, Any]) -> None:
        """``record`` passed the schema at ``schema_uri`` of this bus's document (the
        tracker checks records first): envelopes whose record (or previous) is declared
        by that very schema need not check it again."""
        key = _key(record)
        if key is not None:
            _keep(self._verdicts, (f"schema {schema_uri}", key), True)

    def checked(self, event: dict[str, Any], webhook: str | None = None) -> dict[str, Any]:
        """``event`` if it matches its webhook (see ``problems``); else ``ValueError``
        naming the first problem."""
        found = self.problems(event, webhook)
        if found:
            first = found[0]
            kind = webhook if webhook is not None else event["type"]
            raise ValueError(
                f"{kind} event does not match its webhook: {first['field']}: {first['message']}"
            )
        return event

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
        export = event_export(model, step)
        if not self.handlers_of(export):
            return record
        with self._source.lease() as leased:  # the plug-ins stay open until it ends
            handlers = self.handlers_of(export, leased.subscribers)
            if not handlers:
                return record
            envelope = self.envelope(model, step, record, previous, changes)
            # Encoded once per event; again only if a handler replaces the record.
            data = encode_event(envelope)
            for subscriber in handlers:
                plugin = subscriber.plugin
                try:
                    replaced = self._call_before(plugin, export, envelope, data)
                except EventRejected:
                    raise
                except PluginError as exc:
                    if subscriber.on_error == "fail_open":
                        why = log_safe(str(exc))
                        log.warning(
                            "%s; its policy is fail_open, so the change goes on.",
                            why,
                            extra={"plugin": plugin.name, "export": export, "outcome": "fail_open"},
                        )
                        continue
                    refused = f'plug-in "{plugin.name}" is fail_closed, so the change was refused'
                    raise EventHandlerError(
                        f"{exc} ({refused})",
                        plugin=plugin.name,
                        export=export,
                    ) from exc
                if replaced is not None:
                    envelope["data"]["record"] = replaced
                    data = encode_event(envelope)
            record_out: dict[str, Any] = envelope["data"]["record"]
            return record_out

    def _call_before(
        self, plugin: Plugin, export: str, envelope: dict[str, Any], data: bytes
    ) -> dict[str, Any] | None:
        return self.before_answer(plugin.name, export, envelope, plugin.call(export, data))

    def before_answer(
        self, plugin: str, export: str, envelope: dict[str, Any], output: bytes
    ) -> dict[str, Any] | None:
        """What a before-handler's ``output`` for ``envelope`` asks: None to go on, else
        the record it puts back (checked against the webhook).

        Raises ``EventRejected`` for ``{"reject": {"reason": "..."}}`` and
        ``PluginOutputError`` for an answer of any other shape. The test harness
        checks answers with this too, so a shape it accepts is one the app accepts.
        """
        if output in _GO_ON or not output.strip():
            return None
        where = f'Plug-in "{plugin}" export "{export}"'
        answer = _decode_answer(output, where, plugin, export)
        if (
            not isinstance(answer, dict)
            or len(answer) > 1
            or not set(answer) <= {"record", "reject"}
        ):
            raise PluginOutputError(
                f'{where} must answer {{}}, {{"record": {{...}}}} or '
                f'{{"reject": {{"reason": "..."}}}}, not {_clip(output)}',
                plugin=plugin,
                export=export,
            )
        if "reject" in answer:
            reject = answer["reject"]
            reason = reject.get("reason") if isinstance(reject, dict) else None
            if not isinstance(reason, str) or not reason:
                # A rejection without its reason is a broken answer, not a rejection:
                # {"reject": "text"} must not pass for "no reason given".
                raise PluginOutputError(
                    f'{where} must reject with {{"reject": {{"reason": "..."}}}}, the reason '
                    f"a non-empty string, not {_clip(output)}",
                    plugin=plugin,
                    export=export,
                )
            raise EventRejected(
                f'Plug-in "{plugin}" rejected the change: {reason}',
                plugin=plugin,
                export=export,
                reason=reason,
            )
        if "record" in answer:
            return self._checked_record(plugin, export, envelope, answer["record"])
        return None

    def _checked_record(
        self, plugin: str, export: str, envelope: dict[str, Any], record: Any
    ) -> dict[str, Any]:
        where = f'Plug-in "{plugin}" export "{export}"'
        if not isinstance(record, dict):
            raise PluginOutputError(
                f"{where} replaced the record with {type(record).__name__}, not an object.",
                plugin=plugin,
                export=export,
            )
        candidate = {**envelope, "data": {**envelope["data"], "record": record}}
        found = self.problems(candidate)
        if found:
            first = found[0]
            raise PluginOutputError(
                f"{where} returned an invalid record: {first['field']}: {first['message']}",
                plugin=plugin,
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


def encode_event(envelope: dict[str, Any]) -> bytes:
    """An event as its handler receives it: compact UTF-8 JSON."""
    if orjson is not None:
        try:
            return orjson.dumps(envelope, option=_ORJSON_OPTIONS)
        except (TypeError, orjson.JSONEncodeError):
            pass  # what orjson refuses (int keys, huge ints): as the stdlib does it, or its error
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


# Types beyond JSON's go to ``default`` (none: TypeError) as with json.dumps, not orjson's own.
_ORJSON_OPTIONS = (
    (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)
    if orjson is not None
    else 0
)


def _key(value: Any) -> bytes | None:
    """A value's JSON as a cache key, or None when it has no plain JSON form."""
    if orjson is None:
        return None
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS | orjson.OPT_PASSTHROUGH_SUBCLASS)
    except (TypeError, orjson.JSONEncodeError):
        return None


# Schema keywords that say nothing about a value (annotations).
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "$comment",
        "examples",
        "example",
        "deprecated",
        "readOnly",
        "writeOnly",
        "externalDocs",
        "xml",
        "summary",
        "$id",
        "$anchor",
    }
)
_OBJECT_KEYWORDS = _ANNOTATIONS | {"type", "required", "properties", "additionalProperties"}
_ENVELOPE = ("id", "type", "timestamp", "data")
_DATA = ("record", "previous", "changes")
_CACHE_SIZE = 4096


class _Plan:
    """A lifecycle envelope checked part by part: exactly what checking the whole does
    when its webhook's body is a plain object of properties (checked at compile time).

    The envelope's and ``data``'s own keywords (type, required, closed properties)
    hold for every envelope ``new_envelope`` makes, so only the parts are checked,
    each against its property's compiled schema, and a part's verdict is kept by
    its JSON (bounded): the record of one change is the previous of the next, and
    type and timestamp repeat.
    """

    def __init__(
        self,
        top: dict[str, Any],
        data: dict[str, Any],
        kind: str,
        verdicts: dict[tuple[str, bytes | str], bool],
        *,
        record_uri: str | None = None,
        previous_is_record: bool = False,
    ) -> None:
        self.top = top  # part name -> compiled schema (None: anything goes)
        self.data = data
        # ``previous`` is oneOf/anyOf [the record's schema, null]: a previous that is
        # not null passes exactly when it would pass as a record (verdicts shared).
        self.previous_is_record = previous_is_record
        # Verdicts by what decides them: the record's by its schema's place (the same
        # for every webhook of the model, and what the tracker vouches for), the
        # other parts' by webhook and part.
        self._names = {name: f"{kind} {name}" for name in (*top, *data)}
        if record_uri is not None:
            self._names["record"] = f"schema {record_uri}"
        self._seen = verdicts

    @classmethod
    def of(
        cls,
        spec: OpenAPIDocument,
        body: Node,
        kind: str,
        verdicts: dict[tuple[str, bytes | str], bool],
    ) -> _Plan | None:
        top = _object_parts(spec, body, _ENVELOPE)
        data_node = top.pop("data", None) if top is not None else None
        if top is None or data_node is None:
            return None
        data = _object_parts(spec, data_node, _DATA)
        if data is None:
            return None
        record, previous = data["record"], data["previous"]
        plain_record = _plain(spec, record) if record is not None else None
        return cls(
            {k: compile_schema(spec, n) if n is not None else None for k, n in top.items()},
            {k: compile_schema(spec, n) if n is not None else None for k, n in data.items()},
            kind,
            verdicts,
            record_uri=plain_record.uri if plain_record is not None else None,
            previous_is_record=(
                record is not None
                and previous is not None
                and _record_or_null(spec, record, previous)
            ),
        )

    def passes(self, envelope: dict[str, Any]) -> bool:
        for name, schema in self.top.items():
            if schema is not None and not self._passes(name, schema, envelope[name]):
                return False
        data = envelope["data"]
        for name, schema in self.data.items():
            value = data[name]
            part, check = name, schema
            if name == "previous" and self.previous_is_record and value is not None:
                part, check = "record", self.data["record"]
            if check is not None and not self._passes(part, check, value):
                return False
        return True

    def _passes(self, name: str, schema: Any, value: Any) -> bool:
        key: bytes | str | None = value if name in ("type", "timestamp") else _key(value)
        if name == "id" or key is None or not isinstance(key, bytes | str):
            return not schema.problems("event", "", value)
        where = (self._names[name], key)
        found = self._seen.get(where)
        if found is None:
            found = not schema.problems("event", "", value)
            _keep(self._seen, where, found)
        return found


def _keep(
    verdicts: dict[tuple[str, bytes | str], bool], key: tuple[str, bytes | str], ok: bool
) -> None:
    if len(verdicts) >= _CACHE_SIZE:
        verdicts.clear()
    verdicts[key] = ok


def _record_or_null(spec: OpenAPIDocument, record: Node, previous: Node) -> bool:
    """``previous`` is ``oneOf``/``anyOf`` of ``record``'s schema and ``{"type": "null"}``."""
    plain_record, plain = _plain(spec, record), _plain(spec, previous)
    value = plain.value if plain is not None else None
    if plain_record is None or plain is None or not isinstance(value, dict):
        return False
    combined = [k for k in ("oneOf", "anyOf") if k in value]
    if len(combined) != 1 or set(value) - _ANNOTATIONS - set(combined):
        return False
    branches = value[combined[0]]
    if not isinstance(branches, list) or len(branches) != 2:
        return False
    nodes = [plain.child(combined[0], i) for i in range(2)]
    kinds = [_plain(spec, n) for n in nodes]
    nulls = [
        k is not None and isinstance(k.value, dict) and _only(k.value, {"type": "null"})
        for k in kinds
    ]
    if sorted(nulls) != [False, True]:
        return False
    other = kinds[nulls.index(False)]
    # The same schema, so the same verdict; and an object (a record) is never null.
    return other is not None and other.uri == plain_record.uri


def _only(value: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return {k: v for k, v in value.items() if k not in _ANNOTATIONS} == wanted


def _object_parts(
    spec: OpenAPIDocument, node: Node, keys: tuple[str, ...]
) -> dict[str, Node | None] | None:
    """The property schema of each of ``keys`` (None: any value) when ``node`` is a
    plain object schema that an object with exactly ``keys`` meets as soon as its
    properties do; else None."""
    plain = _plain(spec, node)
    value = plain.value if plain is not None else None
    if plain is None or not isinstance(value, dict) or set(value) - _OBJECT_KEYWORDS:
        return None
    if value.get("type", "object") not in ("object", ["object"]):
        return None
    required = value.get("required", [])
    if not isinstance(required, list) or set(required) - set(keys):
        return None
    properties = value.get("properties", {})
    extra = value.get("additionalProperties", True)
    if not isinstance(properties, dict) or not isinstance(extra, bool):
        return None
    if extra is False and set(keys) - set(properties):
        return None
    return {k: plain.child("properties", k) if k in properties else None for k in keys}


def _plain(spec: OpenAPIDocument, node: Node) -> Node | None:
    """``node`` with its ``$ref``s followed, when they have no sibling keywords."""
    for _ in range(16):
        value = node.value
        if not (isinstance(value, dict) and "$ref" in value):
            return node
        if set(value) - _ANNOTATIONS - {"$ref"} or not isinstance(value["$ref"], str):
            return None  # a $ref beside other keywords: both apply
        target = urljoin(node.uri, value["$ref"])
        try:
            resolved = spec.registry.resolver().lookup(target)
        except Exception:  # unresolvable: the whole check reports it
            return None
        base, fragment = urldefrag(target)
        node = Node(f"{base}#{fragment}", resolved.contents)
    return None


def _clip(output: bytes, limit: int = 120) -> str:
    text = output.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "..."
