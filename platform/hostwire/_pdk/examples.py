"""Example values for a scaffold's test file: a mock answer per operation, a
record or payload per webhook, each valid against its schema in the document.

Only what a schema requires is filled in (required properties, minimum
lengths and counts, the first enum value), so the values pass the harness's
checks, which are production's.
"""

from __future__ import annotations

import json
from typing import Any

from hostwire._hostapi import Node, OpenAPIDocument

_DEPTH = 12  # a recursive schema stops here (its optional parts are left out anyway)
_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "email": "author@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "hostname": "example.com",
}


def example(spec: OpenAPIDocument, node: Node, depth: int = 0) -> Any:
    """A value that the schema at ``node`` accepts (best effort: no ``pattern``)."""
    node = spec.deref(node)
    schema = node.value
    if not isinstance(schema, dict) or depth > _DEPTH:
        return None
    for key in ("const", "default", "example"):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for i in range(len(schema["allOf"])):
            part = example(spec, node.child("allOf", i), depth + 1)
            if isinstance(part, dict):
                merged |= part
        return merged
    for key in ("oneOf", "anyOf"):
        if schema.get(key):
            return example(spec, node.child(key, 0), depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    return _typed(spec, node, str(kind), depth)


def _typed(spec: OpenAPIDocument, node: Node, kind: str, depth: int) -> Any:
    schema = node.value
    if kind == "object":
        props = schema.get("properties") or {}
        return {
            name: example(spec, node.child("properties", name), depth + 1)
            for name in schema.get("required") or []
            if name in props
        }
    if kind == "array":
        count = int(schema.get("minItems", 0))
        item = example(spec, node.child("items"), depth + 1) if "items" in schema else None
        return [item] * count
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = low + 1 if "exclusiveMinimum" in schema and "minimum" not in schema else low
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    text = _FORMATS.get(str(schema.get("format", "")), "example")
    return text.ljust(int(schema.get("minLength", 0)), "x")


def response_example(spec: OpenAPIDocument, operation: str) -> tuple[int, Any]:
    """``(status, body)`` of the operation's first success answer (body None without JSON)."""
    op = spec.operation(operation)
    if op is None:
        raise KeyError(f"{spec.source} has no operation {operation!r}")
    codes = sorted(op.responses)
    status = next((c for c in codes if c.startswith("2")), "200")
    responses = spec.deref(op.node.child("responses"))
    if status not in responses.value:
        return int(status), None
    schema = spec.json_schema(spec.deref(responses.child(status)))
    return int(status), example(spec, schema) if schema is not None else None


def webhook_example(spec: OpenAPIDocument, name: str) -> Any:
    """A lifecycle webhook's record, or any other webhook's payload."""
    webhook = spec.webhooks[name]
    if webhook.body is None:
        return {}
    if webhook.lifecycle is None:
        return example(spec, webhook.body)
    body = spec.deref(webhook.body)
    data = spec.deref(body.child("properties", "data"))
    return example(spec, data.child("properties", "record"))


def py(value: Any) -> str:
    """``value`` as a Python literal (JSON's true/false/null spelled the Python way)."""
    return repr(json.loads(json.dumps(value)))
