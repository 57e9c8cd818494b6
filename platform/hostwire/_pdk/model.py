"""What a PDK contains, worked out from an OpenAPI document: models, operations,
lifecycle events and HTTP hooks. Language-neutral; the generator maps it to
each language's names and types, and the templates only format.

Types are ``TypeRef``s: a primitive (``string``, ``integer``, ``number``,
``boolean``), ``any`` (free JSON: maps, mixed unions), an ``array`` of a type,
or a ``model`` (an object or a string enum) by name. Inline objects and enums
get names from where they appear (``LightEvent`` + ``data`` → ``LightEventData``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostwire._contract import HTTP_HOOKS
from hostwire._hostapi import Node, OpenAPIDocument, Operation, Webhook, load_openapi
from hostwire._pdk.naming import Namer, type_name

HOOKS_SPEC = Path(__file__).resolve().parents[1] / "hooks.yaml"
# export → (input model, output model), from hooks.yaml
HOOK_MODELS = {
    "http_pre_hook": ("HttpPreHookInput", "HttpPreHookOutput"),
    "http_post_hook": ("HttpPostHookInput", "HttpPostHookOutput"),
    "http_stream_chunk_hook": ("HttpStreamChunkInput", "HttpStreamChunkOutput"),
}
PRIMITIVES = ("string", "integer", "number", "boolean")


@dataclass(frozen=True, slots=True)
class TypeRef:
    kind: str  # string | integer | number | boolean | any | array | model
    model: str = ""  # for kind == "model"
    items: TypeRef | None = None  # for kind == "array"

    def __str__(self) -> str:
        if self.kind == "model":
            return self.model
        if self.kind == "array":
            return f"{self.items}[]"
        return self.kind


ANY = TypeRef("any")


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # the JSON name
    type: TypeRef
    required: bool
    nullable: bool
    description: str = ""


@dataclass(slots=True)
class Model:
    name: str
    kind: str  # object | enum
    description: str = ""
    fields: list[Field] = field(default_factory=list)
    values: list[str] = field(default_factory=list)  # for enums


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    location: str  # path | query | header
    type: TypeRef
    required: bool
    description: str = ""


@dataclass(frozen=True, slots=True)
class OperationDef:
    name: str  # the host function, snake_case
    operation_id: str
    method: str
    path: str
    summary: str
    params: tuple[Param, ...]
    body: TypeRef | None
    body_required: bool
    response: TypeRef | None  # the JSON body of its 2xx answer


@dataclass(frozen=True, slots=True)
class EventDef:
    """A webhook as an optional export: its handler gets ``payload``.

    Lifecycle events (``light.before_save``) have a ``model``; every other
    webhook (``invoice.created``) has none and runs, like an after-event, from
    the outbox. ``enveloped`` says the payload is a Standard Webhooks envelope
    (``{"id", "type", "timestamp", "data"}``); otherwise the handler gets the
    payload as declared, bare.
    """

    export: str  # light_before_save, invoice_created
    type: str  # the webhook's name: light.before_save, invoice.created
    model: str  # light; "" for a webhook that is not a lifecycle event
    before: bool
    payload: TypeRef
    result: TypeRef | None  # what a before-handler answers
    summary: str = ""
    enveloped: bool = True

    @property
    def lifecycle(self) -> bool:
        return bool(self.model)


@dataclass(frozen=True, slots=True)
class HookDef:
    export: str
    input: TypeRef
    output: TypeRef


@dataclass(slots=True)
class PdkModel:
    title: str
    version: str
    source: str
    models: list[Model]
    operations: list[OperationDef]
    events: list[EventDef]
    hooks: list[HookDef]


class _Builder:
    def __init__(self, spec: OpenAPIDocument) -> None:
        self.spec = spec
        self.models: dict[str, Model] = {}
        self.names = Namer()  # the models' names
        self._by_uri: dict[str, str] = {}  # schema location → model name

    def component_name(self, node: Node) -> str | None:
        # components/schemas/X of this document or of a file it refers to
        _, _, fragment = node.uri.partition("#")
        prefix = "/components/schemas/"
        if fragment.startswith(prefix) and "/" not in fragment[len(prefix) :]:
            return type_name(fragment[len(prefix) :].replace("~1", "/").replace("~0", "~"))
        return None

    def type_of(self, node: Node, context: str) -> tuple[TypeRef, bool]:
        """The type at ``node`` and whether it admits null."""
        target = self.spec.deref(node)
        value = target.value
        if not isinstance(value, dict):
            return ANY, False
        nullable = bool(value.get("nullable"))
        composed = self._composed(target, context, nullable)
        if composed is not None:
            return composed
        kind, null = _kind(value)
        nullable = nullable or null
        name = self.component_name(target) or type_name(context)
        if kind == "string" and "enum" in value:
            return self.enum(target, name, value), nullable
        if kind in PRIMITIVES:
            return TypeRef(kind), nullable
        if kind == "array":
            if "items" not in value:
                return TypeRef("array", items=ANY), nullable
            items, _ = self.type_of(target.child("items"), f"{name}Item")
            return TypeRef("array", items=items), nullable
        if kind == "object" and (value.get("properties") or value.get("allOf")):
            return self.object(target, name), nullable
        return ANY, nullable

    def _composed(self, target: Node, context: str, nullable: bool) -> tuple[TypeRef, bool] | None:
        """The type of a schema that only wraps others (allOf of one, oneOf, anyOf), or None."""
        value = target.value
        parts = value.get("allOf") or []
        if len(parts) == 1 and not value.get("properties") and "type" not in value:
            # OpenAPI 3.0's way to make a reference nullable: {nullable, allOf: [$ref]}
            ref, inner_null = self.type_of(target.child("allOf", 0), context)
            return ref, nullable or inner_null
        options = value.get("oneOf") or value.get("anyOf")
        if options and not value.get("properties"):
            key = "oneOf" if "oneOf" in value else "anyOf"
            branches = [target.child(key, i) for i in range(len(options))]
            real = [b for b in branches if self.spec.deref(b).value.get("type") != "null"]
            if len(real) == 1:
                ref, inner_null = self.type_of(real[0], context)
                return ref, True if len(real) < len(branches) else inner_null
            return ANY, nullable
        return None

    def enum(self, node: Node, name: str, value: dict[str, Any]) -> TypeRef:
        if node.uri not in self._by_uri:
            name = self._unique(name, node)
            values = [str(v) for v in value["enum"] if v is not None]
            self.models[name] = Model(
                name, "enum", str(value.get("description", "")), values=values
            )
        return TypeRef("model", self._by_uri[node.uri])

    def object(self, node: Node, name: str) -> TypeRef:
        if node.uri in self._by_uri:
            return TypeRef("model", self._by_uri[node.uri])
        name = self._unique(name, node)
        model = Model(name, "object", str(node.value.get("description", "")))
        self.models[name] = model  # before the fields: schemas may refer to themselves
        required: set[str] = set()
        for part in self._parts(node):
            required |= set(part.value.get("required", []))
            for prop in part.value.get("properties") or {}:
                if any(f.name == prop for f in model.fields):
                    continue
                child = part.child("properties", prop)
                ref, nullable = self.type_of(child, f"{name}_{prop}")
                description = self.spec.deref(child).value
                text = child.value.get("description") or (
                    description.get("description", "") if isinstance(description, dict) else ""
                )
                model.fields.append(Field(prop, ref, False, nullable, str(text)))
        model.fields = [
            Field(f.name, f.type, f.name in required, f.nullable, f.description)
            for f in model.fields
        ]
        return TypeRef("model", name)

    def _parts(self, node: Node) -> list[Node]:
        """The object and, for allOf, each object it is made of."""
        parts = [node]
        for index in range(len(node.value.get("allOf") or [])):
            parts += self._parts(self.spec.deref(node.child("allOf", index)))
        return parts

    def _unique(self, name: str, node: Node) -> str:
        name = self.names.claim(name)
        self._by_uri[node.uri] = name
        return name


def _kind(value: dict[str, Any]) -> tuple[Any, bool]:
    """A schema's type (``object`` for properties or allOf, ``string`` for an enum
    of strings, None when unclear) and whether its list of types admits null."""
    kind = value.get("type")
    null = False
    if isinstance(kind, list):
        null = "null" in kind
        rest = [k for k in kind if k != "null"]
        kind = rest[0] if len(rest) == 1 else None
    if kind is None and ("properties" in value or "allOf" in value):
        kind = "object"
    if (
        kind is None
        and value.get("enum")
        and all(isinstance(v, str) or v is None for v in value["enum"])
    ):
        kind = "string"
    return kind, null


def build_model(spec: OpenAPIDocument) -> PdkModel:
    """Everything a PDK for ``spec`` declares, in a deterministic order."""
    builder = _Builder(spec)
    for name in sorted((spec.document.get("components") or {}).get("schemas") or {}):
        builder.type_of(spec.component_schema(name), name)
    operations = [_operation(spec, builder, op) for _, op in sorted(spec.operations.items())]
    events = _events(spec, builder)
    hooks = _hooks(builder)
    info = spec.document.get("info") or {}
    return PdkModel(
        # They appear in comments and package files: one line, always.
        title=" ".join(str(info.get("title", "")).split()),
        version=" ".join(str(info.get("version", "")).split()),
        source=Path(spec.source).name,
        models=sorted(builder.models.values(), key=lambda m: m.name),
        operations=operations,
        events=events,
        hooks=hooks,
    )


def _operation(spec: OpenAPIDocument, builder: _Builder, op: Operation) -> OperationDef:
    context = type_name(op.name)
    params = []
    for param in op.parameters:
        if param.location not in ("path", "query", "header"):
            continue
        ref = ANY
        if param.schema is not None:
            ref, _ = builder.type_of(param.schema, f"{context}_{param.name}")
        params.append(Param(param.name, param.location, ref, param.required, param.description))
    body = None
    if op.body is not None and op.body.schema is not None:
        body, _ = builder.type_of(op.body.schema, f"{context}Body")
    return OperationDef(
        name=op.name,
        operation_id=op.grant,
        method=op.method.upper(),
        path=op.path,
        summary=op.summary,
        params=tuple(params),
        body=body,
        body_required=bool(op.body and op.body.required),
        response=_response(spec, builder, op.node, f"{context}Response"),
    )


def _response(spec: OpenAPIDocument, builder: _Builder, node: Node, name: str) -> TypeRef | None:
    """The type of the JSON body of the operation's first 2xx answer, if it has one."""
    for status in sorted(node.value.get("responses") or {}):
        if str(status).startswith("2"):
            schema = spec.json_schema(spec.deref(node.child("responses", status)))
            return builder.type_of(schema, name)[0] if schema is not None else None
    return None


def _events(spec: OpenAPIDocument, builder: _Builder) -> list[EventDef]:
    """One event per webhook with a body: the lifecycle events, then the others,
    each in the order of their names.

    Lifecycle payloads are named first (``LightEvent``), so the names they
    had before other webhooks became events stay theirs; an inline payload of
    another webhook is named after its export (``InvoiceCreatedEvent``).
    """
    webhooks = [w for _, w in sorted(spec.webhooks.items()) if w.body is not None]
    events = [_lifecycle_event(spec, builder, w) for w in webhooks if w.lifecycle is not None]
    for webhook in webhooks:
        if webhook.lifecycle is not None or webhook.body is None:
            continue
        payload, _ = builder.type_of(webhook.body, f"{webhook.export}_event")
        events.append(
            EventDef(
                webhook.export,
                webhook.name,
                "",
                False,
                payload,
                None,
                webhook.summary,
                webhook.enveloped,
            )
        )
    return events


def _lifecycle_event(spec: OpenAPIDocument, builder: _Builder, webhook: Webhook) -> EventDef:
    assert webhook.lifecycle is not None
    assert webhook.body is not None
    assert webhook.operation is not None
    model = webhook.lifecycle[0]
    payload, _ = builder.type_of(webhook.body, f"{model}_event")
    result = None
    if webhook.before:
        post = webhook.operation
        for status in sorted(post.value.get("responses") or {}):
            schema = spec.json_schema(spec.deref(post.child("responses", status)))
            if schema is not None:
                result, _ = builder.type_of(schema, f"{model}_before_result")
                break
    return EventDef(
        webhook.export,
        webhook.name,
        model,
        webhook.before,
        payload,
        result,
        webhook.summary,
        webhook.enveloped,
    )


def _hooks(builder: _Builder) -> list[HookDef]:
    hooks_spec = load_openapi(HOOKS_SPEC)
    hook_builder = _Builder(hooks_spec)
    # One namespace: names must not clash.
    hook_builder.models, hook_builder.names = builder.models, builder.names
    hooks = []
    for export in HTTP_HOOKS:
        inp, out = HOOK_MODELS[export]
        hooks.append(
            HookDef(
                export,
                hook_builder.type_of(hooks_spec.component_schema(inp), inp)[0],
                hook_builder.type_of(hooks_spec.component_schema(out), out)[0],
            )
        )
    return hooks
