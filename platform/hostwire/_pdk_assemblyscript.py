"""The AssemblyScript PDK: names, types and files for ``pdk_templates/assemblyscript/``.

Everything a template prints is worked out here: identifiers (camelCase
members and functions, PascalCase classes and enum constants, reserved words
get a trailing ``_``, clashes a number), types and how each field is stored:

- required, not nullable: a plain field (``id: string``, ``brightness: i64``);
- a string, array, model or enum that is optional or nullable: ``T | null``;
- an integer, number or boolean that is optional or nullable: a getter and
  setter over a private value and a ``hasX()`` flag (AssemblyScript has no
  ``i64 | null``); setting the value sets the flag.

``null`` means absent; a required nullable field is written as JSON ``null``.
Free JSON (``any``) is ``JsonValue``; string enums are classes whose
constants are the only instances. Each type has a ``decodeX`` and ``encodeX``
function (``json.ts`` has those of the primitives), arrays ``decodeArray_X``.

The PDK declares the Extism kernel imports itself and needs nothing but the
AssemblyScript compiler.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from hostwire._openapi import OpenAPIDocument
from hostwire._pdk import RenderJob
from hostwire._pdk_model import Model, OperationDef, PdkModel, TypeRef, pascal_case

ASSEMBLYSCRIPT = "0.28.20"
BUILD = "npm install --no-audit --no-fund && npm run build"
ABORT = "plugin/abortPlugin"  # --use abort=<pdk folder>/plugin/abortPlugin

# Words that cannot name a parameter or member in AssemblyScript (measured
# with asc 0.28), and JavaScript's reserved words, which would read badly.
RESERVED_WORDS = frozenset(
    re.findall(
        r"\w+",
        """
        abstract arguments async await break case catch class const constructor continue
        debugger declare default delete do else enum eval export extends false finally for
        function if implements import in instanceof interface let new null of package private
        protected public return static super switch this throw true try typeof var void while
        with yield
        """,
    )
)
# Global names a class or function of the PDK must not take: AssemblyScript's
# globals and builtins, and the names the PDK's runtime exports.
GLOBAL_NAMES = frozenset(
    re.findall(
        r"\w+",
        """
        Array ArrayBuffer Boolean DataView Date Error Float32Array Float64Array Function
        Infinity Int16Array Int32Array Int64Array Int8Array JSON Map Math Mathf NaN Number
        Object Promise RangeError RegExp Set StaticArray String Symbol SyntaxError TypeError
        URIError Uint16Array Uint32Array Uint64Array Uint8Array Uint8ClampedArray WeakMap
        WeakSet console abort alignof assert bswap changetype heap idof instantiate isArray
        isBoolean isConstant isDefined isFinite isFloat isFunction isInteger isManaged isNaN
        isNullable isReference isSigned isString isVoid lengthof load memory nameof offsetof
        parseFloat parseInt select sizeof store trace unchecked unreachable
        Any ApiError Decoder Integer Json JsonKind JsonReader JsonValue JsonWriter Response
        MAX_DEPTH abortPlugin beginCall config configOr decodeAny decodeBoolean decodeInteger
        decodeJson decodeNumber decodeString encodeAny encodeBoolean encodeInteger encodeJson
        encodeNumber encodeString fail failed input inputJson inputString lastJsonError
        logDebug logError logInfo logTrace logWarn output outputAs outputJson outputString
        outputWriter quote readInputAs varGet varSet
        """,
    )
)
# Members every model class has.
MODEL_MEMBERS = frozenset({"constructor", "encode", "fromJson", "toJson", "toBytes"})
_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_WORD = re.compile(r"[^A-Za-z0-9]+")
_PRIMITIVES = {"string": "string", "integer": "i64", "number": "f64", "boolean": "bool"}
_CODECS = {"string": "String", "integer": "Integer", "number": "Number", "boolean": "Boolean"}
_FLAGGED = frozenset({"integer", "number", "boolean"})  # value types: no `| null`


def camel_case(text: str, fallback: str = "value") -> str:
    """``created_at`` → ``createdAt``, ``If-Match`` → ``ifMatch``, ``9lives`` → ``_9lives``."""
    words = [w for w in _NOT_WORD.split(_WORD_BOUNDARY.sub(" ", text)) if w]
    if not words:
        return fallback
    first = words[0].lower() if words[0].isupper() else words[0][:1].lower() + words[0][1:]
    name = first + "".join(w[:1].upper() + w[1:] for w in words[1:])
    return f"_{name}" if name[:1].isdigit() else name


def identifier(name: str) -> str:
    return f"{name}_" if name in RESERVED_WORDS else name


def literal(text: str) -> str:
    """A TypeScript string literal (JSON's escapes are TypeScript's)."""
    return json.dumps(text)


def doc_lines(text: str) -> list[str]:
    """Text for a /** */ comment, one entry per line."""
    return [line.rstrip() for line in text.replace("*/", "*\\/").strip().splitlines()]


class Names:
    """Hands out unique names: a taken name gets 2, 3, ... appended."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self.taken = set(taken)

    def claim(self, name: str) -> str:
        unique, number = name, 2
        while unique in self.taken:
            unique = f"{name}{number}"
            number += 1
        self.taken.add(unique)
        return unique


# -- what the templates print -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TsType:
    name: str  # the AssemblyScript type: string, i64, Array<Light>, Color, JsonValue
    codec: str  # decode<codec> / encode<codec>
    default: str  # the value of a required field before it is set
    flagged: bool  # a value type: optional or nullable needs a presence flag

    @property
    def decode(self) -> str:
        return f"decode{self.codec}"

    @property
    def encode(self) -> str:
        return f"encode{self.codec}"


@dataclass(frozen=True, slots=True)
class TsField:
    json: str  # the JSON name, as a literal
    member: str
    type: TsType
    storage: str  # plain | nullable | flagged
    required: bool
    nullable: bool
    doc: list[str]
    value: str = ""  # flagged: the private value
    flag: str = ""  # flagged: the private presence flag
    has: str = ""  # flagged: the public presence method
    clear: str = ""  # flagged: the public method that unsets it

    @property
    def declared(self) -> str:
        """The member's type as a reader sees it."""
        return self.type.name if self.storage != "nullable" else f"{self.type.name} | null"


@dataclass(frozen=True, slots=True)
class TsClass:
    name: str
    doc: list[str]
    fields: list[TsField]
    constructor: list[TsField]  # required plain fields, in order

    @property
    def decode(self) -> str:
        return f"decode{self.name}"

    @property
    def encode(self) -> str:
        return f"encode{self.name}"


@dataclass(frozen=True, slots=True)
class TsEnum:
    name: str
    doc: list[str]
    constants: list[tuple[str, str]]  # (constant, value literal)
    listing: str  # the values, for messages, as a literal

    @property
    def decode(self) -> str:
        return f"decode{self.name}"

    @property
    def encode(self) -> str:
        return f"encode{self.name}"


@dataclass(frozen=True, slots=True)
class TsArray:
    type: TsType
    item: TsType


@dataclass(frozen=True, slots=True)
class TsParam:
    json: str  # the parameter's name, as a literal
    name: str  # the argument or the options member
    location: str  # path | query | header
    type: TsType
    doc: list[str]


@dataclass(frozen=True, slots=True)
class TsOperation:
    function: str
    host: str  # the host function: its import name
    binding: str  # what the import is called in api.ts
    method: str
    path: str
    operation_id: str
    doc: list[str]
    required: list[TsParam]
    options: TsClass | None
    option_locations: dict[str, str]  # options member → path | query | header
    body: TsType | None
    body_required: bool
    response: TsType  # JsonValue when the operation declares no JSON body
    decodes: bool  # whether the 2xx body is decoded into a generated type

    @property
    def host_literal(self) -> str:
        return literal(self.host)

    def section(self, location: str) -> tuple[list[TsParam], list[TsField]]:
        """The required parameters and option fields that go into one section."""
        required = [p for p in self.required if p.location == location]
        options = self.options.fields if self.options is not None else []
        return required, [f for f in options if self.option_locations[f.member] == location]


@dataclass(frozen=True, slots=True)
class TsHandler:
    export: str  # light_before_save
    event: str  # light.before_save, or the hook's export
    helper: str  # onLightBeforeSave
    input: TsType
    output: TsType | None  # None: an after-event, whose answer is not used
    what: str  # "the light.before_save event", for messages
    doc: list[str]

    @property
    def label(self) -> str:
        """The event and a colon, as a literal: for log lines."""
        return literal(f"{self.event}: ")


@dataclass(slots=True)
class _Pdk:
    """The PDK's classes, enums, array codecs, operations and handlers."""

    enums: list[TsEnum] = field(default_factory=list)
    classes: list[TsClass] = field(default_factory=list)
    arrays: dict[str, TsArray] = field(default_factory=dict)
    operations: list[TsOperation] = field(default_factory=list)
    events: list[TsHandler] = field(default_factory=list)
    hooks: list[TsHandler] = field(default_factory=list)


class _Builder:
    """Maps a PdkModel to AssemblyScript: one namespace for every exported name."""

    def __init__(self, model: PdkModel) -> None:
        self.model = model
        self.by_name = {m.name: m for m in model.models}
        self.globals = Names(GLOBAL_NAMES)
        self.class_names = {
            m.name: self.globals.claim(self._class_name(m.name)) for m in model.models
        }
        for name in sorted(self.class_names.values()):
            self.globals.taken |= {f"decode{name}", f"encode{name}"}
        self.cyclic = _cyclic_models(model.models)
        self.pdk = _Pdk()

    def _class_name(self, name: str) -> str:
        return f"{name}Model" if name in GLOBAL_NAMES else name

    def type_of(self, ref: TypeRef) -> TsType:
        if ref.kind in _PRIMITIVES:
            default = {"string": '""', "integer": "0", "number": "0.0", "boolean": "false"}
            return TsType(
                _PRIMITIVES[ref.kind], _CODECS[ref.kind], default[ref.kind], ref.kind in _FLAGGED
            )
        if ref.kind == "array" and ref.items is not None:
            item = self.type_of(ref.items)
            ts = TsType(
                f"Array<{item.name}>", f"Array_{item.codec}", f"new Array<{item.name}>()", False
            )
            self.pdk.arrays.setdefault(ts.codec, TsArray(ts, item))
            return ts
        if ref.kind == "model" and ref.model in self.by_name:
            model = self.by_name[ref.model]
            name = self.class_names[model.name]
            if model.kind == "enum":
                if not model.values:
                    return self.type_of(TypeRef("string"))
                return TsType(name, name, f"{name}.{self._constants(model)[0][0]}", False)
            return TsType(name, name, f"new {name}()", False)
        return TsType("JsonValue", "Any", "JsonValue.newObject()", False)

    def _constants(self, model: Model) -> list[tuple[str, str]]:
        names = Names()
        return [(names.claim(pascal_case(v) or "Empty"), literal(v)) for v in model.values]

    def fields(
        self, owner: str, specs: list[tuple[str, TypeRef, bool, bool, str]]
    ) -> list[TsField]:
        """Fields from (JSON name, type, required, nullable, description)."""
        names = Names(MODEL_MEMBERS | RESERVED_WORDS)
        # A name that is already camelCase keeps it when another would mangle into it.
        members = {}
        for json_name, *_ in specs:
            if camel_case(json_name) == json_name:
                members[json_name] = names.claim(identifier(json_name))
        for json_name, *_ in specs:
            if json_name not in members:
                members[json_name] = names.claim(identifier(camel_case(json_name)))
        out = []
        for json_name, ref, required, nullable, description in specs:
            ts = self.type_of(ref)
            member = members[json_name]
            cyclic = ref.kind == "model" and (owner, ref.model) in self.cyclic
            if ts.flagged and (nullable or not required):
                upper = member.strip("_")
                upper = upper[:1].upper() + upper[1:]
                out.append(
                    TsField(
                        literal(json_name), member, ts, "flagged", required, nullable,
                        doc_lines(description),
                        value=names.claim(f"_{member}"),
                        flag=names.claim(f"_has{upper}"),
                        has=names.claim(f"has{upper}"),
                        clear=names.claim(f"clear{upper}"),
                    )
                )  # fmt: skip
                continue
            storage = "nullable" if nullable or not required or cyclic else "plain"
            out.append(
                TsField(
                    literal(json_name), member, ts, storage, required, nullable,
                    doc_lines(description),
                )
            )  # fmt: skip
        return out

    def build(self) -> _Pdk:
        for model in self.model.models:
            name = self.class_names[model.name]
            if model.kind == "enum":
                if model.values:
                    listing = " is not one of " + ", ".join(json.dumps(v) for v in model.values)
                    self.pdk.enums.append(
                        TsEnum(
                            name,
                            doc_lines(model.description),
                            self._constants(model),
                            literal(listing),
                        )
                    )
                continue
            specs = [(f.name, f.type, f.required, f.nullable, f.description) for f in model.fields]
            fields = self.fields(model.name, specs)
            self.pdk.classes.append(
                TsClass(
                    name,
                    doc_lines(model.description),
                    fields,
                    [f for f in fields if f.storage == "plain"],
                )
            )
        for op in self.model.operations:
            self.pdk.operations.append(self.operation(op))
        self.handlers()
        return self.pdk

    def operation(self, op: OperationDef) -> TsOperation:
        function = self.globals.claim(identifier(camel_case(op.name, "call")))
        args = Names({"body", "options"} | RESERVED_WORDS)
        required = [
            TsParam(
                literal(p.name),
                args.claim(identifier(camel_case(p.name))),
                p.location,
                self.type_of(p.type),
                doc_lines(p.description),
            )
            for p in op.params
            if p.required
        ]
        optional = [p for p in op.params if not p.required]
        options = None
        locations: dict[str, str] = {}
        if optional:
            name = self.globals.claim(f"{pascal_case(function)}Options")
            fields = self.fields(
                name, [(p.name, p.type, False, False, p.description) for p in optional]
            )
            locations = {f.member: p.location for f, p in zip(fields, optional, strict=True)}
            options = TsClass(name, [f"Optional parameters of {function}()."], fields, [])
        response = self.type_of(op.response) if op.response is not None else None
        summary = doc_lines(op.summary)
        return TsOperation(
            function=function,
            host=op.name,
            binding=f"host_{op.name}",
            method=op.method,
            path=op.path,
            operation_id=op.operation_id,
            doc=summary,
            required=required,
            options=options,
            option_locations=locations,
            body=self.type_of(op.body) if op.body is not None else None,
            body_required=op.body_required,
            response=response or self.type_of(TypeRef("any")),
            decodes=response is not None and response.codec != "Any",
        )

    def handlers(self) -> None:
        for event in self.model.events:
            helper = self.globals.claim("on" + pascal_case(event.export))
            output = self.type_of(event.result) if event.result is not None else None
            if event.before and output is None:
                output = self.type_of(TypeRef("any"))
            self.pdk.events.append(
                TsHandler(
                    event.export,
                    event.type,
                    helper,
                    self.type_of(event.payload),
                    output,
                    literal(f"the {event.type} event"),
                    doc_lines(event.summary),
                )
            )
        for hook in self.model.hooks:
            helper = self.globals.claim("on" + pascal_case(hook.export))
            self.pdk.hooks.append(
                TsHandler(
                    hook.export,
                    hook.export,
                    helper,
                    self.type_of(hook.input),
                    self.type_of(hook.output),
                    literal(f"the input of {hook.export}"),
                    [],
                )
            )


def _cyclic_models(models: list[Model]) -> set[tuple[str, str]]:
    """(model, field model) pairs of required fields that lead back to the model.

    Such a field cannot default to a new instance (that would never end), so
    it is stored as ``T | null``.
    """
    edges = {
        m.name: [
            f.type.model
            for f in m.fields
            if f.required and not f.nullable and f.type.kind == "model"
        ]
        for m in models
    }

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            name = stack.pop()
            if name == goal:
                return True
            if name not in seen:
                seen.add(name)
                stack.extend(edges.get(name, []))
        return False

    return {(m, target) for m, targets in edges.items() for target in targets if reaches(target, m)}


@dataclass(frozen=True, slots=True)
class Example:
    """What the scaffold's example (also the README's) calls and handles."""

    operation: TsOperation | None
    arguments: str
    event: TsHandler | None
    imports: list[str]


def _example(pdk: _Pdk) -> Example:
    # A GET without required parameters is the gentlest call; a before-event
    # shows how to answer one.
    callable_ops = [op for op in pdk.operations if not op.required]
    op = next((o for o in callable_ops if o.method == "GET"), None) or next(
        iter(callable_ops), None
    )
    event = next((h for h in pdk.events if h.output), None) or next(iter(pdk.events), None)
    arguments = op.body.default if op and op.body and op.body_required else ""
    types = [arguments]
    if event is not None:
        types += [event.input.name, event.output.name if event.output else ""]
    names = {n for t in types for n in re.findall(r"\b[A-Z]\w*", t)} - {"Array"}
    names |= {"JsonWriter", "configOr", "logInfo", "outputWriter"}
    if op is not None:
        names |= {op.function, "fail"}
    if event is not None:
        names.add(event.helper)
    return Example(op, arguments, event, sorted(names))


# -- the Language protocol ----------------------------------------------------------


def _context(model: PdkModel) -> dict[str, object]:
    pdk = _Builder(model).build()
    arrays = [pdk.arrays[k] for k in sorted(pdk.arrays)]
    types: list[TsEnum | TsClass] = [*pdk.enums, *pdk.classes]
    exported = [n for t in types for n in (t.name, t.decode, t.encode)]
    exported += [n for a in arrays for n in (a.type.decode, a.type.encode)]
    return {
        "ts": pdk,
        "arrays": arrays,
        "imports": sorted(exported),
        "assemblyscript": ASSEMBLYSCRIPT,
        "abort": ABORT,
        "build": BUILD,
        "example": _example(pdk),
    }


_FILES = ("README.md", "api.ts", "events.ts", "host.ts", "index.ts", "json.ts", "kernel.ts",
          "models.ts", "plugin.ts")  # fmt: skip


def jobs(model: PdkModel, spec: OpenAPIDocument) -> list[RenderJob]:
    """The PDK's files."""
    context = _context(model)
    return [RenderJob(f"{name}.j2", name, context) for name in _FILES]


def package_name(name: str) -> str:
    """An npm package name for plug-in ``name`` (lower case, no underscores at the start)."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).lstrip("._-") or "plugin"


def scaffold_jobs(model: PdkModel, spec: OpenAPIDocument, name: str) -> list[RenderJob]:
    """A new plug-in project: package.json, assembly/index.ts, README; its PDK goes in pdk/."""
    context = {**_context(model), "name": name, "package": package_name(name)}
    files = {
        "README.md": "scaffold/README.md.j2",
        "assembly/index.ts": "scaffold/index.ts.j2",
        "assembly/tsconfig.json": "scaffold/tsconfig.json.j2",
        "package.json": "scaffold/package.json.j2",
    }
    return [RenderJob(template, path, context) for path, template in sorted(files.items())]
