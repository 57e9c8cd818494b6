"""Check a plug-in's call against its OpenAPI operation before anything is sent.

openapi-core's request validator re-walks the document on every request,
which costs more than the whole in-process round trip may. So each
operation is compiled once: its parameters and body schema are resolved
through the document's $refs, and the schemas are checked with
openapi-schema-validator, the schema validator openapi-core itself uses.
``tests/hostapi/test_validate.py`` checks both agree.

A valid call becomes an ``HttpCall``: the method, the path with every
parameter percent-encoded, the query, the headers and the body bytes.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import fastjsonschema
from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import (
    OAS30Validator,
    OAS31Validator,
    oas30_format_checker,
    oas31_format_checker,
)

from hostwire._contract import INPUT_SECTIONS
from hostwire._errors import InvalidCall
from hostwire._hostapi.openapi import (
    Node,
    OpenAPIDocument,
    Operation,
    Parameter,
    dumps,
    is_json,
)
from hostwire._targets import RESERVED_HEADERS, RESERVED_PREFIX, HttpCall

# Error messages quote at most this much of a bad value (or name): an input of
# megabytes must not come back doubled in the error reply.
QUOTE_CHARS = 80
MAX_MESSAGE = 240
# How many problems one error reply lists (a long array can break on every item).
MAX_DETAILS = 20
# Header values a plug-in may send: visible latin-1 text, tabs and spaces; never CR or LF.
HEADER_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text``, or its first ``limit`` characters and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text.encode('utf-8', 'surrogatepass'))} bytes)"


def quote_value(value: Any) -> str:
    """A value for an error message: at most QUOTE_CHARS of it, and its size in bytes."""
    shown = repr(value)
    if len(shown) <= QUOTE_CHARS:
        return shown
    if isinstance(value, str):
        size = len(value.encode("utf-8", "surrogatepass"))
    else:
        size = len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "replace"))
    return f"{shown[:QUOTE_CHARS]}…({size} bytes)"


def _problem(where: str, name: str, message: str) -> dict[str, str]:
    return {"in": where, "field": clip(name, MAX_MESSAGE), "message": clip(message, MAX_MESSAGE)}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _joined(value: Any) -> str:
    return ",".join(_text(v) for v in _items(value))


def _encode_segment(value: str) -> str:
    # quote() leaves "." alone, and "." or ".." as a whole segment would be
    # collapsed by URL normalisation: the call would escape its path.
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if set(value) <= {"."} else encoded


# Keywords that mean the same in draft 7 (fastjsonschema) and in OpenAPI's
# dialects. A schema using anything else is only checked by openapi-schema-validator.
_PORTABLE = frozenset(
    {
        "$ref", "additionalProperties", "allOf", "anyOf", "const", "default", "deprecated",
        "description", "enum", "examples", "exclusiveMaximum", "exclusiveMinimum", "format",
        "items", "maxItems", "maxLength", "maxProperties", "maximum", "minItems", "minLength",
        "minProperties", "minimum", "multipleOf", "not", "oneOf", "pattern", "properties",
        "readOnly", "required", "title", "type", "uniqueItems", "writeOnly",
    }
)  # fmt: skip
_ANNOTATIONS = frozenset({"default", "deprecated", "description", "examples", "title"})


def _portable(spec: OpenAPIDocument, node: Node, seen: set[str]) -> bool:
    """Whether the schema at ``node`` (and all it refers to) uses portable keywords only."""
    if node.uri in seen:
        return True
    seen.add(node.uri)
    value = node.value
    if isinstance(value, bool):
        return True
    if not isinstance(value, dict) or not set(value) <= _PORTABLE:
        return False
    if "$ref" in value:
        # Draft 7 ignores a $ref's siblings; OpenAPI 3.1 applies them.
        if set(value) - {"$ref"} - _ANNOTATIONS:
            return False
        return _portable(spec, spec.deref(node), seen)
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in value and isinstance(value[key], bool):  # OpenAPI 3.0's boolean form
            return False
    children: list[Node] = []
    for key in ("properties",):
        for name in value.get(key) or {}:
            children.append(node.child(key, name))
    for key in ("allOf", "anyOf", "oneOf"):
        children += [node.child(key, i) for i in range(len(value.get(key) or []))]
    for key in ("items", "additionalProperties", "not"):
        if isinstance(value.get(key), dict):
            children.append(node.child(key))
        elif key == "items" and isinstance(value.get(key), list):
            return False
    return all(_portable(spec, child, seen) for child in children)


class Schema:
    """A compiled schema, what ``compile_schema`` returns: immutable, shared by threads.

    ``problems(where, name, value)`` lists every way ``value`` breaks the
    schema; ``cast`` and ``cast_item`` read a parameter's text as the number or
    boolean its schema declares (``kind``, and ``item_kind`` for an array).

    Checking goes through fastjsonschema's generated code when the schema is
    portable (many times faster); only a value it refuses is checked again, and reported, by
    openapi-schema-validator, whose verdict is the one that counts. Formats
    are checked by the same format checker on both paths.
    """

    __slots__ = ("_fast", "_validator", "item_kind", "kind")
    kind: str | None  # the schema's primitive type, if it declares one
    item_kind: str | None  # an array's item type, if it declares one
    _validator: Any  # openapi-schema-validator's, for the dialect of the document
    _fast: Callable[[Any], Any] | None  # fastjsonschema's, for portable schemas

    def __init__(self, spec: OpenAPIDocument, node: Node, *, fast: bool = True) -> None:
        cls, checker = (
            (OAS30Validator, oas30_format_checker)
            if spec.is_v30
            else (OAS31Validator, oas31_format_checker)
        )
        validator = cls({"$ref": node.uri}, registry=spec.registry, format_checker=checker)
        compiled: Callable[[Any], Any] | None = None
        if fast and _portable(spec, node, set()):
            compiled = fastjsonschema.compile(
                {"$ref": node.uri},
                handlers={"file": spec.document_at},
                formats={name: _format(checker, name) for name in checker.checkers},
                use_default=False,  # it would otherwise write defaults into the value
            )
        resolved = spec.deref(node).value
        kind = _type_of(resolved)
        item_kind = None
        if kind == "array" and isinstance(resolved.get("items"), dict):
            item_kind = _type_of(spec.deref(node.child("items")).value)
        # Shared by every thread that calls the operation: set once, here.
        for name, value in (
            ("_validator", validator),
            ("_fast", compiled),
            ("kind", kind),
            ("item_kind", item_kind),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a compiled schema is immutable (tried to set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a compiled schema is immutable (tried to delete {name!r})")

    def cast(self, value: Any) -> Any:
        """Strings for numbers and booleans arrive as text over HTTP: accept them."""
        return _cast(self.kind, value)

    def cast_item(self, value: Any) -> Any:
        """Cast one item of an array parameter, the way ``cast`` does a scalar."""
        return _cast(self.item_kind, value)

    def problems(self, where: str, name: str, value: Any) -> list[dict[str, str]]:
        """Every way ``value`` breaks the schema, as ``{"in": where, "field", "message"}``.

        ``field`` is ``name`` followed by the JSON pointer of the part that breaks it.
        """
        if self._fast is not None:
            try:
                self._fast(value)
            except fastjsonschema.JsonSchemaException:
                pass  # look closer below
            else:
                return []
        found = []
        # A long array can break on every item: enough for a reply, not all of them.
        first = itertools.islice(self._validator.iter_errors(value), MAX_DETAILS + 1)
        errors = sorted(first, key=lambda e: [str(part) for part in e.absolute_path])
        for error in errors:
            found.append(_problem(where, _field(name, error), _message(error)))
        return found


def _type_of(schema: Any) -> str | None:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return kind if isinstance(kind, str) else None


def _cast(kind: str | None, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            number = float(value)
            return number if math.isfinite(number) else value
    except ValueError:
        return value
    if kind == "boolean" and value in {"true", "false"}:
        return value == "true"
    return value


def _message(error: ValidationError) -> str:
    """jsonschema's message, with the bad value quoted short (it may be megabytes)."""
    message = error.message
    if len(message) > MAX_MESSAGE:
        shown = repr(error.instance)
        if len(shown) > QUOTE_CHARS:
            message = message.replace(shown, quote_value(error.instance))
    return clip(message, MAX_MESSAGE)


def _format(checker: FormatChecker, name: str) -> Callable[[Any], bool]:
    def conforms(value: Any) -> bool:
        return bool(checker.conforms(value, name))

    return conforms


def compile_schema(spec: OpenAPIDocument, node: Node) -> Schema:
    """A reusable checker for the schema at ``node``: ``.problems(where, name, value)``."""
    return Schema(spec, node)


def _field(name: str, error: ValidationError) -> str:
    path = [str(part) for part in error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        path += [k for k in error.validator_value if k not in error.instance][:1]
    pointer = "/" + "/".join(path) if path else ""
    return f"{name}{pointer}" if name else pointer or "/"


class OperationValidator:
    """Checks calls to one operation and turns them into ``HttpCall``s."""

    def __init__(self, spec: OpenAPIDocument, operation: Operation) -> None:
        self.operation = operation
        self._params: dict[str, dict[str, tuple[Parameter, Schema | None]]] = {
            loc: {} for loc in INPUT_SECTIONS.values()
        }
        for param in operation.parameters:
            if param.location in self._params:
                schema = Schema(spec, param.schema) if param.schema else None
                key = param.name.lower() if param.location == "header" else param.name
                self._params[param.location][key] = (param, schema)
        body = operation.body
        self._body_schema = Schema(spec, body.schema) if body and body.schema else None
        # OpenAPI's default for query parameters is style form, explode true.
        self._explode = {p.name: p.explode for p in operation.parameters if p.location == "query"}
        # An empty input ({}) is a valid call when nothing is required: built at once.
        self._empty_ok = not any(
            p.required for params in self._params.values() for p, _ in params.values()
        ) and not (body is not None and body.required)

    def prepare(self, call: Any) -> HttpCall:
        """Validate ``call`` (the plug-in's input JSON) and build the request."""
        if call == {} and self._empty_ok:
            return self._build({"path": {}, "query": {}, "header": {}}, None)
        if not isinstance(call, dict):
            raise InvalidCall(
                "The input must be a JSON object with optional keys path, query, headers, body.",
                [_problem("input", "/", f"expected an object, got {type(call).__name__}")],
            )
        problems: list[dict[str, str]] = []
        unknown = sorted(set(call) - {*INPUT_SECTIONS, "body"})
        problems += [
            _problem("input", k, "unknown key; use path, query, headers or body") for k in unknown
        ]
        values: dict[str, dict[str, Any]] = {}
        for section, location in INPUT_SECTIONS.items():
            given = call.get(section) or {}
            if not isinstance(given, dict):
                problems.append(_problem(section, "/", "must be an object"))
                given = {}
            values[location] = self._check_section(location, given, problems)
        body = self._check_body(call, problems)
        if problems:
            first = problems[0]
            if len(problems) > MAX_DETAILS:
                more = len(problems) - MAX_DETAILS
                problems = problems[:MAX_DETAILS]
                problems.append(_problem("input", "/", f"and {more} more problems"))
            raise InvalidCall(
                f"{self.operation.name}: {first['in']} {first['field']}: {first['message']}.",
                problems,
            )
        try:
            return self._build(values, body)
        except UnicodeEncodeError as exc:  # lone surrogates from "\ud800" escapes
            raise InvalidCall(
                f"{self.operation.name}: the input holds text that is not valid Unicode.",
                [_problem("input", "/", f"cannot be encoded as UTF-8: {exc.reason}")],
            ) from exc

    def query_problems(self, query: Mapping[str, str | list[str]]) -> list[dict[str, str]]:
        """Problems with a request's query parameters, checked as a host call's are.

        Names the operation does not declare are left alone: an HTTP client may
        send them. Problems come in the order the parameters are declared.
        """
        declared = self._params["query"]
        problems: list[dict[str, str]] = []
        self._check_section(
            "query", {name: query[name] for name in declared if name in query}, problems
        )
        return problems

    def _check_section(
        self, location: str, given: Mapping[str, Any], problems: list[dict[str, str]]
    ) -> dict[str, Any]:
        declared = self._params[location]
        accepted: dict[str, Any] = {}
        for raw_name, value in given.items():
            name = raw_name.lower() if location == "header" else raw_name
            if location == "header" and (
                name in RESERVED_HEADERS or name.startswith(RESERVED_PREFIX)
            ):
                problems.append(
                    _problem(location, raw_name, "set by the host; a plug-in may not set it")
                )
                continue
            if name not in declared:
                known = ", ".join(sorted(p.name for p, _ in declared.values())) or "none"
                problems.append(
                    _problem(
                        location,
                        raw_name,
                        f"not a {location} parameter of this operation (declared: {known})",
                    )
                )
                continue
            param, schema = declared[name]
            if value is None:
                continue
            if schema is None:
                cast = value
            elif isinstance(value, list):
                cast = [schema.cast_item(v) for v in value]
            else:
                cast = schema.cast(value)
            if schema is not None:
                problems += schema.problems(location, param.name, cast)
            text = _joined(cast)
            if location == "path" and (text == "" or any(not _text(v) for v in _items(cast))):
                problems.append(_problem(location, param.name, "must not be empty"))
            if location == "header" and not HEADER_VALUE.match(text):
                problems.append(
                    _problem(location, param.name, "must be visible latin-1 text, no CR or LF")
                )
            if location == "query" and isinstance(cast, dict):
                problems.append(_problem(location, param.name, "objects are not supported here"))
            accepted[param.name] = cast
        for param, _ in declared.values():
            if (
                param.required
                and param.name not in accepted
                and not any(p["field"] == param.name for p in problems)
            ):
                problems.append(_problem(location, param.name, "is required"))
        return accepted

    def _check_body(self, call: dict[str, Any], problems: list[dict[str, str]]) -> Any:
        spec_body = self.operation.body
        present = call.get("body") is not None
        if spec_body is None:
            if present:
                problems.append(_problem("body", "/", "this operation takes no request body"))
            return None
        if not present:
            if spec_body.required:
                problems.append(_problem("body", "/", "a request body is required"))
            return None
        if self._body_schema is not None:
            problems += self._body_schema.problems("body", "", call["body"])
        return call["body"]

    def _build(self, values: dict[str, dict[str, Any]], body: Any) -> HttpCall:
        op = self.operation
        path = op.path
        for name, value in values["path"].items():
            path = path.replace("{" + name + "}", _encode_segment(_joined(value)))
        query: list[tuple[str, str]] = []
        for name, value in values["query"].items():
            if self._explode.get(name, True):
                query += [(name, _text(item)) for item in _items(value)]
            else:
                query.append((name, _joined(value)))
        for _, text in query:
            text.encode("utf-8")  # fails here, as a 400, rather than in the target
        headers = [(name, _joined(v)) for name, v in values["header"].items()]
        call = HttpCall(
            op.method.upper(), path, query, headers, operation=op.name, operation_id=op.grant
        )
        if body is not None and op.body is not None:
            media = op.body.media_type
            if is_json(media):
                call.content_type = media
                call.body = dumps(body)
            else:
                call.content_type = "text/plain; charset=utf-8" if "*" in media else media
                call.body = (body if isinstance(body, str) else json.dumps(body)).encode()
        return call
