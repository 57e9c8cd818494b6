"""Which webhook of the document a received body is, and which object it is about.

The event type is the body's value at a JSON pointer (``/type`` for Standard
Webhooks envelopes, ``/webhook_type`` for Lago). It names a webhook when it is
the webhook's name, else when its export is the webhook's export
(``invoice.created`` → ``invoice_created``), else when the webhook's body
schema pins that property to it (``const``, or an ``enum`` of one value).
"""

from __future__ import annotations

import logging
from typing import Any

from hostwire._hostapi import Node, OpenAPIDocument, Webhook, webhook_export

log = logging.getLogger("hostwire.gateway")
_MISSING = object()


def pointer_parts(pointer: str) -> list[str]:
    """``/a/b~1c`` → ``["a", "b/c"]`` (RFC 6901)."""
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]


def value_at(body: Any, parts: list[str]) -> Any:
    """The value at ``parts`` in ``body``, or ``_MISSING``."""
    for part in parts:
        if isinstance(body, dict) and part in body:
            body = body[part]
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            return _MISSING
    return body


class EventIndex:
    """Finds the webhook for an event type, by name, export or pinned value."""

    def __init__(self, document: OpenAPIDocument, event_type: str) -> None:
        self.document = document
        self.pointer = event_type
        self.parts = pointer_parts(event_type)
        self.by_name = dict(document.webhooks)
        self.by_export = {w.export: w for w in document.webhooks.values()}
        self.by_pinned: dict[str, Webhook] = {}
        for webhook in document.webhooks.values():
            pinned = self._pinned(webhook)
            if pinned is None:
                continue
            other = self.by_pinned.setdefault(pinned, webhook)
            if other is not webhook:
                log.warning(
                    'webhooks "%s" and "%s" both pin %s to "%s"; the gateway takes "%s".',
                    other.name,
                    webhook.name,
                    event_type,
                    pinned,
                    other.name,
                )

    def type_of(self, body: Any) -> str | None:
        """The event type the body names, or None when it has none (or not a string)."""
        found = value_at(body, self.parts)
        return found if isinstance(found, str) and found else None

    def find(self, event_type: str) -> Webhook | None:
        found = self.by_name.get(event_type) or self.by_export.get(webhook_export(event_type))
        return found or self.by_pinned.get(event_type)

    def _pinned(self, webhook: Webhook) -> str | None:
        node: Node | None = webhook.body
        for part in self.parts:
            if node is None:
                return None
            node = self._property(node, part)
        if node is None:
            return None
        schema = self.document.deref(node).value
        if not isinstance(schema, dict):
            return None
        if isinstance(schema.get("const"), str):
            return str(schema["const"])
        enum = schema.get("enum")
        if isinstance(enum, list) and len(enum) == 1 and isinstance(enum[0], str):
            return enum[0]
        return None

    def _property(self, node: Node, name: str) -> Node | None:
        schema = self.document.deref(node)
        properties = schema.value.get("properties") if isinstance(schema.value, dict) else None
        if isinstance(properties, dict) and name in properties:
            return schema.child("properties", name)
        return None


def subject_of(body: Any, event_type: str, pointers: list[str], event_id: str) -> str:
    """What orders this event: ``<kind>/<object id>`` (kind: the type before its first
    dot), from the first of ``pointers`` that holds a string or integer; else the
    event id (no order with other events). ``{name}`` in a pointer is the body's
    top-level string property ``name`` (``/{object_type}/id``)."""
    for pointer in pointers:
        parts = [_placeholder(body, p) for p in pointer_parts(pointer)]
        if any(p is None for p in parts):
            continue
        found = value_at(body, [p for p in parts if p is not None])
        if isinstance(found, str | int) and not isinstance(found, bool) and str(found):
            return f"{event_type.partition('.')[0]}/{found}"
    return event_id


def _placeholder(body: Any, part: str) -> str | None:
    if not (part.startswith("{") and part.endswith("}")):
        return part
    found = body.get(part[1:-1]) if isinstance(body, dict) else None
    return found if isinstance(found, str) and found else None
