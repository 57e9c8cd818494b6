"""Does a response keep the API's contract? Checked against the OpenAPI document.

The HTTP hooks use it for responses a post-hook rewrote: the operation is
found from the method and path the app served, then the response declared
for the status (``404``, else ``4XX``, else ``default``) and the media type;
a JSON body must match that media type's schema. Each operation's schemas are
compiled once, on first use, and what the document declares for each operation,
status and media type is looked up once too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hostwire._hostapi import Node, OpenAPIDocument, Operation, compile_schema, is_json
from hostwire._runtime import parse_json

_TEMPLATE = re.compile(r"\{[^/{}]+\}")
# A response's verdict whatever its body (None: it keeps the document), the
# response code it is declared under, and the schema a JSON body must match.
_Declared = tuple[str | None, str, Any]


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


@dataclass
class ResponseContract:
    """The responses the document ``spec`` declares, by method and path."""

    spec: OpenAPIDocument
    _routes: list[tuple[re.Pattern[str], Operation]] = field(default_factory=list, repr=False)
    _schemas: dict[str, Any] = field(default_factory=dict, repr=False)
    # By (method, path template, status, media type): resolved once, on first use.
    _declared: dict[tuple[str, str, int, str], _Declared] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        base = re.escape(self.spec.base_path)
        # A path without templates wins over a templated one (OpenAPI's rule).
        ordered = sorted(
            self.spec.operations.values(), key=lambda op: (len(_TEMPLATE.findall(op.path)), op.path)
        )
        for op in ordered:
            parts = _TEMPLATE.split(op.path)
            pattern = "[^/]+".join(re.escape(part) for part in parts)
            self._routes.append((re.compile(f"{base}{pattern}"), op))

    def operation(self, method: str, path: str) -> Operation | None:
        """The operation that serves ``method`` ``path`` (HEAD falls back to GET)."""
        wanted = method.lower()
        for candidate in (wanted, "get") if wanted == "head" else (wanted,):
            for pattern, op in self._routes:
                if op.method == candidate and pattern.fullmatch(path):
                    return op
        return None

    def problem(
        self, method: str, path: str, status: int, content_type: str, body: bytes
    ) -> str | None:
        """Why this response breaks the document, or None when it keeps it."""
        op = self.operation(method, path)
        if op is None:
            return f"the OpenAPI document declares no operation {method.upper()} {path}"
        media = _media(content_type)
        key = (op.method, op.path, status, media)
        declared = self._declared.get(key)
        if declared is None:
            declared = self._declared[key] = self._declare(op, status, media)
        verdict, code, schema = declared
        if schema is None:
            return verdict
        try:
            value = parse_json(body, "the body")
        except ValueError as exc:
            return str(exc)
        found = schema.problems("body", "", value)
        if not found:
            return None
        first = found[0]
        return f"the body breaks the {code} schema of {op}: {first['field']}: {first['message']}"

    def _declare(self, op: Operation, status: int, media: str) -> _Declared:
        """What the document says of a ``status`` response in ``media`` from ``op``:
        a verdict that holds for any body, or the schema a JSON body must match."""
        item = self.spec.deref(self.spec.at("paths", op.path))
        responses = item.child(op.method).value.get("responses") or {}
        code = next(
            (c for c in (str(status), f"{str(status)[0]}XX", "default") if c in responses), None
        )
        if code is None:
            return f"{op} declares no {status} response", "", None
        declared = self.spec.deref(item.child(op.method, "responses", code))
        content = declared.value.get("content") or {}
        if not content:
            return None, code, None  # no body is declared, nothing to check it against
        key = next(
            (
                k
                for k in sorted(content)
                if _media(k) in (media, f"{media.partition('/')[0]}/*", "*/*")
            ),
            None,
        )
        if key is None:
            kinds = ", ".join(sorted(content))
            return (
                f"{op} {code} declares {kinds}, not {media or 'a body without Content-Type'}",
                code,
                None,
            )
        if not is_json(key) or "schema" not in content[key]:
            return None, code, None
        return None, code, self._schema(declared.child("content", key, "schema"))

    def _schema(self, node: Node) -> Any:
        schema = self._schemas.get(node.uri)
        if schema is None:
            schema = self._schemas[node.uri] = compile_schema(self.spec, node)
        return schema
