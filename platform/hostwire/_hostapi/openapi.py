"""OpenAPI documents: load one, resolve its $refs and list its operations.

Each operation becomes one host function (Contract 1). Its name is the
operationId in snake_case, or ``<method>_<path>`` when it has none; two
operations that map to one name make the document unusable.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urldefrag, urljoin, urlparse
from urllib.request import url2pathname

import httpx
import yaml
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT4, DRAFT202012

from hostwire._contract import EVENT_TYPE, HTTP_HOOKS, event_export
from hostwire._errors import SpecError
from hostwire._hostapi.speccache import validate_once
from hostwire._runtime import dumps as strict_dumps
from hostwire._text import one_line, yaml_problem

_FETCH_TIMEOUT_S = 30.0
# Where a document that is not a file lives, for $refs inside it (validators resolve file: URIs).
_IN_MEMORY_URI = "file:///hostwire-in-memory/openapi.json"
_MAX_FETCH_BYTES = 16 * 1024 * 1024
# libyaml's parser (with PyYAML's safe constructor) is ten times faster than the
# pure-Python one; PyYAML built without libyaml has only the latter.
_FAST_YAML: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
if TYPE_CHECKING:
    from hostwire._hostapi.validate import OperationValidator

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_WORD = re.compile(r"[^A-Za-z0-9]+")


def snake_case(text: str) -> str:
    """``getStates`` → ``get_states``, ``HTTPStatus`` → ``http_status``."""
    words = _NOT_WORD.sub("_", _WORD_BOUNDARY.sub("_", text)).strip("_").lower()
    name = re.sub(r"_+", "_", words)
    return f"op_{name}" if name[:1].isdigit() else name


def _pointer_part(part: str | int) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True, slots=True)
class Node:
    """A value in the document and the absolute URI (with JSON pointer) it lives at."""

    uri: str
    value: Any

    def child(self, *parts: str | int) -> Node:
        uri, value = self.uri, self.value
        for part in parts:
            uri = f"{uri}/{_pointer_part(part)}"
            value = value[part]
        return Node(uri, value)


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    location: str  # path, query, header or cookie
    required: bool
    schema: Node | None
    description: str = ""
    explode: bool = True


@dataclass(frozen=True, slots=True)
class RequestBody:
    required: bool
    media_type: str
    schema: Node | None


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the document and the host function it becomes."""

    name: str
    operation_id: str | None
    method: str
    path: str
    summary: str
    parameters: tuple[Parameter, ...]
    body: RequestBody | None
    # The operation object itself, its path item's $ref already followed: read
    # responses and the rest from here, never from document["paths"].
    node: Node = field(compare=False, repr=False)
    responses: tuple[str, ...] = ()

    @property
    def grant(self) -> str:
        """What a plug-in's ``grants`` list names to be allowed this operation."""
        return self.operation_id or self.name

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"


@dataclass(frozen=True, slots=True)
class Webhook:
    """One entry of the document's ``webhooks`` (OpenAPI 3.1), $refs followed: an event.

    Every webhook is an event a plug-in may handle by exporting ``export``:
    ``<model>_<phase>_<step>`` for a lifecycle webhook ``<model>.<phase>_<step>``
    (``lifecycle`` then holds the model and the step), else the name in
    snake_case (``invoice.created`` → ``invoice_created``). ``enveloped`` says
    the body is declared as a Standard Webhooks envelope (an object with
    ``type``, ``timestamp`` and ``data``): handlers get ``{"id", "type",
    "timestamp", "data"}``; otherwise they get the payload as declared.
    """

    name: str
    item: Node  # the path item
    operation: Node | None  # its post operation, if it has one
    body: Node | None  # the JSON schema of the post's request body, if declared
    export: str = ""
    lifecycle: tuple[str, str] | None = None  # (model, step), e.g. ("light", "after_update")
    enveloped: bool = False

    @property
    def summary(self) -> str:
        value = self.operation.value if self.operation is not None else {}
        return str(value.get("summary", ""))

    @property
    def before(self) -> bool:
        """A lifecycle before-event: it runs synchronously and may answer."""
        return self.lifecycle is not None and self.lifecycle[1].startswith("before_")


def _load_text(text: str, where: str) -> Any:
    with _gc_paused():
        found = _parse_fast(text)
    if found is not _UNPARSED:
        return found
    try:
        return yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise SpecError(f"{where}: invalid YAML or JSON{yaml_problem(exc)}.", path=where) from exc


_UNPARSED = object()


def _parse_fast(text: str) -> Any:
    """The document parsed by the fastest parser that takes it, or ``_UNPARSED``.

    JSON first when it looks like JSON (the json module is five times faster
    than libyaml), then libyaml. What neither takes is left to the pure-Python
    parser, whose messages (and leniencies, such as a ``%YAML 1.3`` directive)
    are those hostwire always gave.
    """
    if text.lstrip(" \t\r\n")[:1] == "{":
        try:
            return json.loads(text, parse_constant=_not_json)
        except (ValueError, RecursionError):
            pass  # YAML then: a JSON document with a comment or a YAML-only token
    try:
        return yaml.load(text, Loader=_FAST_YAML)
    except (yaml.YAMLError, UnicodeEncodeError):  # libyaml cannot take lone surrogates
        return _UNPARSED


def _not_json(constant: str) -> Any:
    # json reads NaN and Infinity; YAML reads them as text, as hostwire always did.
    raise ValueError(f"{constant} is not JSON")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Reading a large document builds ~100k containers and no cycles; the cyclic
    collector's passes over them took two thirds of the parse, and as long again
    while its operations were collected. Paused, then on again (unless it was off)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_document(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SpecError(f"{path}: no such OpenAPI document.", path=str(path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read it: {exc}.", path=str(path)) from exc
    return _load_text(text, str(path))


@dataclass
class OpenAPIDocument:
    """A loaded, validated OpenAPI 3.0 or 3.1 document and its operations."""

    source: str
    document: dict[str, Any]
    uri: str
    registry: Registry[Any] = field(repr=False)
    operations: dict[str, Operation] = field(default_factory=dict, repr=False)
    webhooks: dict[str, Webhook] = field(default_factory=dict, repr=False)
    # Compiled on first use by query_problems, one per operation.
    _checks: dict[str, OperationValidator] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def version(self) -> str:
        return str(self.document.get("openapi", ""))

    @property
    def base_path(self) -> str:
        """The path of the first server URL (``/api`` for ``https://x/api``), or empty."""
        servers = self.document.get("servers") or [{}]
        url = str(servers[0].get("url", "/"))
        path = url.split("://", 1)[1].partition("/")[2] if "://" in url else url.lstrip("/")
        return f"/{path}".rstrip("/") if path else ""

    @property
    def is_v30(self) -> bool:
        return self.version.startswith("3.0")

    def operation(self, name_or_id: str) -> Operation | None:
        """The operation named ``name_or_id`` (host-function name or operationId)."""
        found = self.operations.get(name_or_id)
        if found is not None:
            return found
        return next((op for op in self.operations.values() if op.operation_id == name_or_id), None)

    def query_problems(
        self, operation: str, query: Mapping[str, str | list[str]]
    ) -> list[dict[str, str]]:
        """Every way an HTTP request's ``query`` breaks the parameters of ``operation``.

        ``operation`` is a host-function name or an operationId. Values are
        text, as they arrive (numbers and booleans are cast first); each problem
        is ``{"in": "query", "field", "message"}``, as in a host call's 400 reply,
        whose check this is. Undeclared names are left alone. The checks are
        compiled on the first call for an operation and kept.
        """
        found = self.operation(operation)
        if found is None:
            raise KeyError(f"{self.source} has no operation {operation!r}")
        checker = self._checks.get(found.name)
        if checker is None:
            # Imported here: validate compiles schemas against this module's document.
            from hostwire._hostapi.validate import OperationValidator  # noqa: PLC0415

            checker = self._checks[found.name] = OperationValidator(self, found)
        return checker.query_problems(query)

    def document_at(self, uri: str) -> Any:
        """The whole document at ``uri`` (this one, or a file it refers to)."""
        return self.registry.resolver().lookup(urldefrag(uri)[0]).contents

    def at(self, *parts: str | int) -> Node:
        """The value at ``parts`` from the top of the document, e.g. ``at("paths", "/a")``."""
        return Node(f"{self.uri}#", self.document).child(*parts)

    def component_schema(self, name: str) -> Node:
        """``components/schemas/<name>``, for checking values with ``compile_schema``."""
        if name not in (self.document.get("components") or {}).get("schemas", {}):
            raise KeyError(f"{self.source} has no schema {name!r}")
        return self.at("components", "schemas", name)

    def webhook_body(self, name: str) -> Node | None:
        """The JSON request body schema of webhook ``name`` (OpenAPI 3.1), if declared."""
        webhook = self.webhooks.get(name)
        return webhook.body if webhook is not None else None

    def json_schema(self, holder: Node) -> Node | None:
        """The schema of the first JSON media type (sorted) that has one, in a
        request body or response at ``holder``."""
        content = holder.value.get("content") or {}
        for media in sorted(content):
            if is_json(media) and "schema" in content[media]:
                return holder.child("content", media, "schema")
        return None

    def deref(self, node: Node) -> Node:
        """Follow ``$ref`` until a value that is not a reference."""
        seen = set()
        while isinstance(node.value, dict) and isinstance(node.value.get("$ref"), str):
            target = urljoin(node.uri, node.value["$ref"])
            if target in seen:
                raise SpecError(f"{self.source}: $ref cycle at {target}.", path=self.source)
            seen.add(target)
            try:
                resolved = self.registry.resolver().lookup(target)
            except (Unresolvable, NoSuchResource) as exc:
                raise SpecError(
                    f"{self.source}: cannot resolve $ref {node.value['$ref']!r}: {exc}.",
                    path=self.source,
                ) from exc
            base, fragment = urldefrag(target)
            node = Node(f"{base}#{fragment}", resolved.contents)
        return node


def _string_keys(value: Any, source: str, where: str) -> Any:
    """JSON has only string keys; YAML does not. Status codes written as 200 become
    "200"; keys YAML read as booleans or null (on, off, yes, no, ~) are refused."""
    if isinstance(value, list):
        return [_string_keys(v, source, f"{where}/{i}") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    result = {}
    for key, item in value.items():
        if isinstance(key, bool) or key is None or isinstance(key, float):
            raise SpecError(
                f"{source}: at {where or '/'}: YAML read the key {key!r} as "
                f'{type(key).__name__}, not text; quote it (e.g. "on").',
                path=source,
            )
        name = str(key)
        if name == "enum" and isinstance(item, list) and any(isinstance(v, bool) for v in item):
            raise SpecError(
                f"{source}: at {where}/enum: YAML read on/off/yes/no as booleans; quote them.",
                path=source,
            )
        result[name] = _string_keys(item, source, f"{where}/{name}")
    return result


def _specification(document: dict[str, Any]) -> Any:
    return DRAFT4 if str(document.get("openapi", "")).startswith("3.0") else DRAFT202012


def load_openapi(
    source: str | Path | Mapping[str, Any], *, name: str = "the OpenAPI document"
) -> OpenAPIDocument:
    """Load an OpenAPI document: a file (YAML or JSON), an http(s) URL, or a parsed dict.

    A file's $refs may point inside it or to other files; a URL's or a dict's
    only inside the document. ``name`` says what a dict is in error messages.
    """
    if isinstance(source, Mapping):
        return _checked(dict(source), name, _IN_MEMORY_URI)
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return _checked(_fetch_document(source), source, _IN_MEMORY_URI)
    path = Path(source).resolve()
    return _checked(_read_document(path), str(path), path.as_uri())


def _fetch_document(url: str) -> Any:
    try:
        response = httpx.get(url, timeout=_FETCH_TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise SpecError(f"{url}: cannot fetch the OpenAPI document: {exc}.", path=url) from exc
    if response.status_code != 200:
        raise SpecError(
            f"{url}: fetching the OpenAPI document answered {response.status_code}, not 200.",
            path=url,
        )
    if len(response.content) > _MAX_FETCH_BYTES:
        raise SpecError(f"{url}: the OpenAPI document is over {_MAX_FETCH_BYTES} bytes.", path=url)
    try:
        text = response.content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{url}: the OpenAPI document is not UTF-8: {exc}.", path=url) from exc
    return _load_text(text, url)


def _checked(document: Any, where: str, uri: str) -> OpenAPIDocument:
    if not isinstance(document, dict) or "openapi" not in document:
        raise SpecError(f"{where}: not an OpenAPI document (no 'openapi' field).", path=where)
    with _gc_paused():
        document = _string_keys(document, where, "")
    try:
        validate_once(document, uri)
    except OpenAPIValidationError as exc:
        at = "/".join(str(p) for p in exc.absolute_path) or "top level"
        raise SpecError(
            f"{where}: invalid OpenAPI document at {at}: {one_line(exc.message)}.",
            path=where,
        ) from exc
    except (RecursionError, Unresolvable, OSError, ValueError) as exc:
        raise SpecError(
            f"{where}: cannot check the document: {one_line(str(exc)) or type(exc).__name__}.",
            path=where,
        ) from exc
    specification = _specification(document)

    def retrieve(uri: str) -> Resource[Any]:
        if not uri.startswith("file://"):
            raise NoSuchResource(ref=uri)  # type: ignore[call-arg]
        file = Path(url2pathname(urlparse(uri).path))
        contents = _string_keys(_read_document(file), str(file), "")
        resource: Resource[Any] = specification.create_resource(contents)
        return resource

    registry: Registry[Any] = Registry(retrieve=retrieve).with_resource(  # type: ignore[call-arg]
        uri, specification.create_resource(document)
    )
    spec = OpenAPIDocument(where, document, uri, registry)
    with _gc_paused():
        spec.operations = _collect_operations(spec)
        spec.webhooks = _collect_webhooks(spec)
    return spec


def _parameters(spec: OpenAPIDocument, holder: Node) -> dict[tuple[str, str], Parameter]:
    found: dict[tuple[str, str], Parameter] = {}
    if "parameters" not in holder.value:
        return found
    for index in range(len(holder.value["parameters"])):
        node = spec.deref(holder.child("parameters", index))
        raw = node.value
        location = raw["in"]
        schema = node.child("schema") if "schema" in raw else None
        if schema is None and "content" in raw:
            media = next(iter(raw["content"]))
            if "schema" in raw["content"][media]:
                schema = node.child("content", media, "schema")
        found[(raw["name"], location)] = Parameter(
            name=raw["name"],
            location=location,
            required=bool(raw.get("required", location == "path")),
            schema=schema,
            description=str(raw.get("description", "")),
            explode=bool(raw.get("explode", raw.get("style", "form") == "form")),
        )
    return found


def is_json(media_type: str) -> bool:
    base = media_type.split(";", 1)[0].strip().lower()
    return base == "application/json" or base.endswith("+json")


def _request_body(spec: OpenAPIDocument, operation: Node) -> RequestBody | None:
    if "requestBody" not in operation.value:
        return None
    node = spec.deref(operation.child("requestBody"))
    content = node.value.get("content", {})
    media = next((m for m in content if is_json(m)), next(iter(content), "application/json"))
    schema = node.child("content", media, "schema") if "schema" in content.get(media, {}) else None
    return RequestBody(bool(node.value.get("required", False)), media, schema)


def _walk(spec: OpenAPIDocument) -> Iterator[tuple[str, str, Node, Node]]:
    root = Node(f"{spec.uri}#", spec.document)
    for path in sorted(spec.document.get("paths") or {}):
        item = spec.deref(root.child("paths", path))
        for method in METHODS:
            if method in item.value:
                yield path, method, item, item.child(method)


def _collect_operations(spec: OpenAPIDocument) -> dict[str, Operation]:
    operations: dict[str, Operation] = {}
    for path, method, item, node in _walk(spec):
        raw = node.value
        operation_id = raw.get("operationId")
        name = snake_case(operation_id) if operation_id else snake_case(f"{method}_{path}")
        parameters = _parameters(spec, item) | _parameters(spec, node)
        operation = Operation(
            name=name,
            operation_id=operation_id,
            method=method,
            path=path,
            summary=str(raw.get("summary") or raw.get("description") or "").strip(),
            parameters=tuple(parameters.values()),
            body=_request_body(spec, node),
            responses=tuple(sorted(str(code) for code in raw.get("responses") or {})),
            node=node,
        )
        if name in operations:
            other = operations[name]
            raise SpecError(
                f"{spec.source}: operations {other} and {operation} both map to host function "
                f'"{name}"; give one of them a different operationId.',
                path=spec.source,
            )
        operations[name] = operation
    return operations


def webhook_export(name: str) -> str:
    """The export that handles webhook ``name``: ``light.before_save`` → ``light_before_save``,
    ``invoice.created`` → ``invoice_created``, ``customer_created`` stays."""
    found = EVENT_TYPE.match(name)
    if found:
        return event_export(found["model"], found["step"])
    return snake_case(name)


_ENVELOPE_FIELDS = frozenset({"type", "timestamp", "data"})


def _collect_webhooks(spec: OpenAPIDocument) -> dict[str, Webhook]:
    """Every webhook, resolved once, for the event bus and the PDKs alike.

    Two webhooks whose exports would be the same name, or a webhook whose
    export is an HTTP hook's, make the document unusable: a ``SpecError``.
    """
    root = Node(f"{spec.uri}#", spec.document)
    webhooks: dict[str, Webhook] = {}
    by_export: dict[str, str] = {}
    for name in sorted(spec.document.get("webhooks") or {}):
        item = spec.deref(root.child("webhooks", name))
        operation = spec.deref(item.child("post")) if "post" in item.value else None
        body = None
        if operation is not None and "requestBody" in operation.value:
            body = spec.json_schema(spec.deref(operation.child("requestBody")))
        export = webhook_export(name)
        if export in HTTP_HOOKS:
            raise SpecError(
                f'{spec.source}: webhook "{name}" maps to export "{export}", which is an HTTP '
                "hook's; rename the webhook.",
                path=spec.source,
            )
        if export in by_export:
            raise SpecError(
                f'{spec.source}: webhooks "{by_export[export]}" and "{name}" both map to the '
                f'plug-in export "{export}"; rename one of them.',
                path=spec.source,
            )
        by_export[export] = name
        found = EVENT_TYPE.match(name)
        lifecycle = (found["model"], found["step"]) if found else None
        webhooks[name] = Webhook(
            name, item, operation, body, export, lifecycle, _is_envelope(spec, body)
        )
    return webhooks


def _is_envelope(spec: OpenAPIDocument, body: Node | None) -> bool:
    """Whether a webhook body is declared as a Standard Webhooks envelope."""
    if body is None:
        return False
    value = spec.deref(body).value
    properties = value.get("properties") if isinstance(value, dict) else None
    return isinstance(properties, dict) and set(properties) >= _ENVELOPE_FIELDS


def dumps(value: Any) -> bytes:
    """Compact JSON, the way host functions answer."""
    return strict_dumps(value)
