"""The AssemblyScript PDK: names, types and files for ``pdk_templates/assemblyscript/``.

Everything a template prints is worked out here: identifiers (camelCase
members and functions, PascalCase classes and enum constants, reserved words
get a trailing ``_``, clashes a number), types and how each field is stored:

- required, not nullable: a plain field (``id: string``, ``brightness: i64``);
- a string, array, model or enum that is optional or nullable: ``T | null``;
- an integer, number or boolean that is optional or nullable: a getter and
  setter over a private value and a ``hasX()`` flag (AssemblyScript has no
  ``i64 | null``); setting the value sets the flag.

An unset field is absent; a required nullable field is written as JSON
``null``. An optional nullable field also has a public ``xIsNull`` flag, so a
plug-in can read and send an explicit ``null`` (absent, null and a value are
three states, as in the other PDKs).

AssemblyScript cannot make a value type nullable, so an operation whose 2xx
body is an integer, number or boolean answers a ``ValueResponse<T>`` (``body:
T`` and ``hasBody``) instead of a ``Response<T>`` (``body: T | null``), and an
optional request body of such a type is the ``body`` member of the
operation's options object (with ``hasBody()``).

Local variables of generated functions are named here too, clear of the
arguments and of the globals the function uses.
Free JSON (``any``) is ``JsonValue``; string enums are classes whose
constants are the only instances. Each type has a ``decodeX`` and ``encodeX``
function (``json.ts`` has those of the primitives), arrays ``decodeArray_X``.

The PDK declares the Extism kernel imports itself and needs nothing but the
AssemblyScript compiler.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from dataclasses import dataclass, field

from hostwire._contract import INPUT_SECTIONS
from hostwire._hostapi import OpenAPIDocument
from hostwire._pdk.generate import RenderJob, templates_root
from hostwire._pdk.model import EventDef, Field, Model, OperationDef, Param, PdkModel, TypeRef
from hostwire._pdk.naming import Namer, camel_case, escape_reserved, type_name

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
        bool f32 f64 i16 i32 i64 i8 isize string u16 u32 u64 u8 usize v128 void
        Any ApiError Decoder Integer Json JsonKind JsonReader JsonValue JsonWriter Response
        ResponseBase ValueResponse
        MAX_DEPTH abortPlugin base64 beginCall config configOr decodeAny decodeBoolean decodeInteger
        decodeJson decodeNumber decodeString encodeAny encodeBoolean encodeInteger encodeJson
        encodeNumber encodeString fail failed input inputJson inputString lastJsonError
        logDebug logError logInfo logTrace logWarn output outputAs outputJson outputString
        outputWriter quote readInputAs requestBody requestHeader respond responseBody
        responseHeader varGet varSet
        """,
    )
)
# The runtime's own files: everything they export is taken (read from the
# templates, so the list cannot fall behind them).
RUNTIME_FILES = ("host.ts.j2", "json.ts.j2", "kernel.ts.j2", "plugin.ts.j2")
_EXPORT = re.compile(
    r"^export\s+(?:declare\s+)?(?:abstract\s+)?(?:function|class|const|let|enum)\s+(\w+)", re.M
)


@functools.cache
def runtime_names() -> frozenset[str]:
    """The names the PDK's runtime files export, and AssemblyScript's globals."""
    folder = templates_root() / "assemblyscript"
    text = "\n".join((folder / name).read_text(encoding="utf-8") for name in RUNTIME_FILES)
    return GLOBAL_NAMES | frozenset(_EXPORT.findall(text))


# Members every model class has.
MODEL_MEMBERS = frozenset({"constructor", "encode", "fromJson", "toJson", "toBytes"})
_PRIMITIVES = {"string": "string", "integer": "i64", "number": "f64", "boolean": "bool"}
_CODECS = {"string": "String", "integer": "Integer", "number": "Number", "boolean": "Boolean"}
_FLAGGED = frozenset({"integer", "number", "boolean"})  # value types: no `| null`
# Contract 1 input sections: parameter location → key.
# (OpenAPI location, key of the host call's input), as in Contract 1.
_SECTIONS = tuple((location, key) for key, location in INPUT_SECTIONS.items())
# What an operation's function refers to besides its codecs and host binding:
# its arguments and locals must not shadow these.
_OPERATION_GLOBALS = frozenset(
    {"Decoder", "JsonValue", "JsonWriter", "Response", "ValueResponse", "__free", "__storeBlock"}
)
# The parameters and locals of the generated model codecs.
_CODEC_LOCALS = frozenset({"d", "v", "w", "out", "field"})
# An operation's locals (as __<name>), in TsLocals' order after its arguments.
_OPERATION_LOCALS = ("w", "options", "body", "input", "reply", "response", "answer", "d")


def camel_ident(text: str, fallback: str = "value") -> str:
    """``created_at`` → ``createdAt``, ``If-Match`` → ``ifMatch``, ``9lives`` → ``_9lives``."""
    return camel_case(text, digit_prefix="_") or fallback


def identifier(name: str) -> str:
    """``name``, or ``name_`` if it is a reserved word."""
    return escape_reserved(name, RESERVED_WORDS)


def literal(text: str) -> str:
    """A TypeScript string literal (JSON's escapes are TypeScript's)."""
    return json.dumps(text)


def doc_lines(text: str) -> list[str]:
    """Text for a /** */ comment, one entry per line."""
    return [line.rstrip() for line in text.replace("*/", "*\\/").strip().splitlines()]


def one_line(text: str) -> str:
    """Text for a // comment, a Markdown heading or a JSON string: one line."""
    return " ".join(text.split())


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
    is_null: str = ""  # optional and nullable: the public explicit-null flag
    local: str = ""  # nullable: the encoder's local variable for the value

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
class TsSection:
    """One object of the Contract 1 input: "path", "query" or "headers"."""

    key: str  # as a literal
    required: list[TsParam]  # required parameters: arguments
    optional: list[TsField]  # optional parameters: members of the options object


@dataclass(frozen=True, slots=True)
class TsLocals:
    """The names an operation's function uses for its arguments and locals."""

    body: str  # the body argument
    options: str  # the options argument
    writer: str
    options_value: str  # the options, as a local (null-checked)
    body_value: str  # an optional body, as a local (null-checked)
    input: str
    reply: str
    response: str
    answer: str
    decoder: str


@dataclass(frozen=True, slots=True)
class TsOperation:
    function: str
    host: str  # the host function: its import name
    binding: str  # what the import is called in api.ts
    method: str
    path: str
    operation_id: str
    doc: list[str]  # the function's whole doc comment, one entry per line
    required: list[TsParam]
    options: TsClass | None
    sections: list[TsSection]  # those with parameters, in path, query, headers order
    body: TsType | None
    body_mode: str  # "" (no body) | required | nullable (`T | null` argument) | option
    body_option: TsField | None  # body_mode "option": the options member that holds it
    response: TsType  # JsonValue when the operation declares no JSON body
    response_class: str  # Response<T>, or ValueResponse<T> for an integer, number, boolean
    decodes: bool  # whether the 2xx body is decoded into a generated type
    names: TsLocals
    signature: str  # for the README: getLight(id, options?)

    @property
    def host_literal(self) -> str:
        return literal(self.host)

    @property
    def body_required(self) -> bool:
        return self.body_mode == "required"


@dataclass(frozen=True, slots=True)
class TsHandler:
    export: str  # light_before_save
    event: str  # light.before_save, or the hook's export
    helper: str  # onLightBeforeSave
    input: TsType
    output: TsType | None  # None: an after-event, whose answer is not used
    what: str  # "the light.before_save event", for messages
    doc: list[str]
    lifecycle: bool = True  # a lifecycle event or a hook; False for any other webhook
    receives: str = ""  # for another webhook: what its handler gets

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
        self.globals = Namer(runtime_names())
        self.class_names = {
            m.name: self.globals.claim(self._class_name(m.name)) for m in model.models
        }
        for name in sorted(self.class_names.values()):
            self.globals.take({f"decode{name}", f"encode{name}"})
        self.cyclic = _cyclic_models(model.models)
        self.pdk = _Pdk()

    def _class_name(self, name: str) -> str:
        taken = runtime_names()
        clash = {name, f"decode{name}", f"encode{name}"} & taken
        return f"{name}Model" if clash else name

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
        names = Namer()
        return [(names.claim(type_name(v) or "Empty"), literal(v)) for v in model.values]

    def fields(self, owner: str, specs: list[Field], scope: Namer) -> list[TsField]:
        """The members of class ``owner`` for ``specs``.

        ``scope`` hands out the names of the encoder's locals.
        """
        names = Namer(MODEL_MEMBERS | RESERVED_WORDS)
        members = _members([spec.name for spec in specs], names)
        return [self._field(owner, spec, members[spec.name], names, scope) for spec in specs]

    def _field(self, owner: str, spec: Field, member: str, names: Namer, scope: Namer) -> TsField:
        """One member: ``names`` hands out the class's names, ``scope`` the encoder's locals."""
        ts = self.type_of(spec.type)
        json_name, required, nullable = literal(spec.name), spec.required, spec.nullable
        doc = doc_lines(spec.description)
        # Optional and nullable: absent, null and a value are three states.
        is_null = names.claim(f"{member.rstrip('_')}IsNull") if nullable and not required else ""
        if ts.flagged and (nullable or not required):
            upper = member.strip("_")
            upper = upper[:1].upper() + upper[1:]
            return TsField(
                json_name, member, ts, "flagged", required, nullable, doc,
                value=names.claim(f"_{member}"),
                flag=names.claim(f"_has{upper}"),
                has=names.claim(f"has{upper}"),
                clear=names.claim(f"clear{upper}"),
                is_null=is_null,
            )  # fmt: skip
        cyclic = spec.type.kind == "model" and (owner, spec.type.model) in self.cyclic
        storage = "nullable" if nullable or not required or cyclic else "plain"
        return TsField(
            json_name, member, ts, storage, required, nullable, doc,
            is_null=is_null,
            local=scope.claim(f"__{member}") if storage == "nullable" else "",
        )  # fmt: skip

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
            fields = self.fields(model.name, model.fields, Namer(_CODEC_LOCALS | RESERVED_WORDS))
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
        function = self.globals.claim(identifier(camel_ident(op.name, "call")))
        binding = f"host_{op.name}"
        scope = self._scope(binding)
        body_arg, options_arg = scope.claim("body"), scope.claim("options")
        required = [self._param(p, scope) for p in op.params if p.required]
        names = TsLocals(body_arg, options_arg, *(scope.claim(f"__{n}") for n in _OPERATION_LOCALS))
        body = self.type_of(op.body) if op.body is not None else None
        body_mode = _body_mode(body, op.body_required)
        options = self._options(op, function, body_mode, scope)
        response = self.type_of(op.response) if op.response is not None else None
        answer = response or self.type_of(TypeRef("any"))
        kind = "ValueResponse" if answer.flagged else "Response"
        return TsOperation(
            function=function,
            host=op.name,
            binding=binding,
            method=op.method,
            path=op.path,
            operation_id=op.operation_id,
            doc=self._operation_doc(op, required, body_mode, names, options.cls),
            required=required,
            options=options.cls,
            sections=_sections(required, options.params),
            body=body,
            body_mode=body_mode,
            body_option=options.body,
            response=answer,
            response_class=f"{kind}<{answer.name}>",
            decodes=response is not None and response.codec != "Any",
            names=names,
            signature=_signature(function, required, body_mode, names, options.cls),
        )

    def _scope(self, binding: str) -> Namer:
        """Names for an operation's arguments and locals: they must not shadow what
        the function body refers to (its codecs and host binding among them)."""
        codecs = {n for n in self.globals.taken if n.startswith(("decode", "encode"))}
        return Namer(RESERVED_WORDS | _OPERATION_GLOBALS | codecs | {binding})

    def _param(self, param: Param, scope: Namer) -> TsParam:
        """A required parameter: an argument of the operation's function."""
        return TsParam(
            literal(param.name),
            scope.claim(identifier(camel_ident(param.name))),
            param.location,
            self.type_of(param.type),
            doc_lines(param.description),
        )

    def _options(self, op: OperationDef, function: str, body_mode: str, scope: Namer) -> _Options:
        """The options class: the optional parameters (and an optional value-type body)."""
        optional = [p for p in op.params if not p.required]
        specs = [Field(p.name, p.type, False, False, p.description) for p in optional]
        if body_mode == "option" and op.body is not None:
            specs.insert(0, Field("body", op.body, False, False, "The request body."))
        if not specs:
            return _Options(None, None, [])
        name = self.globals.claim(f"{type_name(function)}Options")
        fields = self.fields(name, specs, scope)
        what = "parameters and request body" if body_mode == "option" else "parameters"
        cls = TsClass(name, [f"Optional {what} of {function}()."], fields, [])
        body = fields[0] if body_mode == "option" else None
        params = fields[1:] if body_mode == "option" else fields
        return _Options(cls, body, [(p.location, f) for p, f in zip(optional, params, strict=True)])

    @staticmethod
    def _operation_doc(
        op: OperationDef,
        required: list[TsParam],
        body_mode: str,
        names: TsLocals,
        options: TsClass | None,
    ) -> list[str]:
        lines = doc_lines(op.summary)
        if lines:
            lines.append("")
        lines.append(
            f"{op.method} {op.path}: operationId {op.operation_id}, host function {op.name}."
        )
        for p in required:
            lines.append(
                f"@param {p.name} {p.location} parameter {p.json}"
                + (": " + " ".join(p.doc) if p.doc else "")
            )
        if body_mode in ("required", "nullable"):
            optional = "" if body_mode == "required" else " (optional)"
            lines.append(f"@param {names.body} the request body{optional}")
        if options is not None:
            what = "parameters and request body" if body_mode == "option" else "parameters"
            lines.append(f"@param {names.options} the optional {what}")
        return [line.replace("*/", "*\\/") for line in lines]

    def handlers(self) -> None:
        for event in self.model.events:
            helper = self.globals.claim("on" + type_name(event.export))
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
                    event.lifecycle,
                    "" if event.lifecycle else _receives(event),
                )
            )
        for hook in self.model.hooks:
            helper = self.globals.claim("on" + type_name(hook.export))
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


def _receives(event: EventDef) -> str:
    """What the handler of a webhook that is not a lifecycle event gets."""
    if event.enveloped:
        return "the Standard Webhooks envelope (id, type, timestamp, data)"
    return "the payload as the app sends it, bare (no envelope)"


@dataclass(frozen=True, slots=True)
class _Options:
    """An operation's options class and what its members hold."""

    cls: TsClass | None
    body: TsField | None  # body_mode "option": the member that holds the body
    params: list[tuple[str, TsField]]  # (location, member) of each optional parameter


def _members(json_names: list[str], names: Namer) -> dict[str, str]:
    """JSON name → member name; a name that is already camelCase keeps it when
    another would mangle into it."""
    members = {}
    for json_name in json_names:
        if camel_ident(json_name) == json_name:
            members[json_name] = names.claim(identifier(json_name))
    for json_name in json_names:
        if json_name not in members:
            members[json_name] = names.claim(identifier(camel_ident(json_name)))
    return members


def _body_mode(body: TsType | None, required: bool) -> str:
    """How the function takes its body: "" (none), required, nullable or option."""
    if body is None:
        return ""
    if body.flagged and not required:
        return "option"  # no `i64 | null`: a flagged member of the options
    return "required" if required else "nullable"


def _sections(required: list[TsParam], optional: list[tuple[str, TsField]]) -> list[TsSection]:
    """The input's sections that have parameters, in path, query, headers order."""
    sections = []
    for location, key in _SECTIONS:
        section = TsSection(
            literal(key),
            [p for p in required if p.location == location],
            [f for where, f in optional if where == location],
        )
        if section.required or section.optional:
            sections.append(section)
    return sections


def _signature(
    function: str,
    required: list[TsParam],
    body_mode: str,
    names: TsLocals,
    options: TsClass | None,
) -> str:
    """The call as the README shows it: getLight(id, options?)."""
    arguments = [p.name for p in required]
    if body_mode in ("required", "nullable"):
        arguments.append(names.body if body_mode == "required" else f"{names.body}?")
    if options is not None:
        arguments.append(f"{names.options}?")
    return f"{function}({', '.join(arguments)})"


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
    handler: TsHandler  # the event, or else the first hook: how to export a handler
    imports: list[str]
    constructor: str  # a model's constructor call, for the README: new Light(id, name)


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
    sample = next((c for c in pdk.classes if c.constructor), None)
    constructor = (
        f"new {sample.name}({', '.join(f.member for f in sample.constructor)})" if sample else ""
    )
    handler = event or pdk.hooks[0]
    return Example(op, arguments, event, handler, sorted(names), constructor)


# -- the Language protocol ----------------------------------------------------------


def _respond(model: PdkModel, pdk: _Pdk) -> dict[str, str] | None:
    """respond(context, status, headers, body) for the pre-hook (hooks.yaml's shapes)."""
    hook = next((h for h in pdk.hooks if h.export == "http_pre_hook"), None)
    if hook is None or hook.output is None:
        return None
    classes = {c.name: c for c in pdk.classes}
    output = classes.get(hook.output.name)
    if output is None:
        return None

    def member(cls: TsClass, json_name: str) -> str:
        return next(f.member for f in cls.fields if f.json == literal(json_name))

    field = next(f for f in output.fields if f.json == literal("response"))
    response = classes[field.type.name.removesuffix(" | null")]
    return {
        "output": output.name,
        "response": response.name,
        "context": member(output, "context"),
        "field": field.member,
        "flag": member(output, "has_response"),
        "status": member(response, "status_code"),
        "headers": member(response, "headers"),
        "body": member(response, "body"),
    }


# The hook messages' helpers (events.ts), reserved in GLOBAL_NAMES: (header, body).
_MESSAGE_HELPERS = {
    "request": ("requestHeader", "requestBody"),
    "response": ("responseHeader", "responseBody"),
}


def _hook_messages(pdk: _Pdk) -> list[dict[str, str]]:
    """requestHeader / requestBody (and the response's) for the hooks' messages (hooks.yaml)."""
    classes = {c.name: c for c in pdk.classes}
    found: dict[str, dict[str, str]] = {}
    for hook in pdk.hooks:
        cls = classes.get(hook.input.name)
        if cls is None:
            continue
        for f in cls.fields:
            key = next((k for k in _MESSAGE_HELPERS if f.json == literal(k)), None)
            message = classes.get(f.type.name)
            if key is None or key in found or message is None:
                continue
            members = {
                g.json: g.member for g in message.fields if g.type.name in ("string", "JsonValue")
            }
            if literal("headers") not in members or literal("body") not in members:
                continue
            header, body = _MESSAGE_HELPERS[key]
            found[key] = {
                "type": message.name,
                "header": header,
                "body": body,
                "headers": members[literal("headers")],
                "body_member": members[literal("body")],
            }
    return [found[k] for k in _MESSAGE_HELPERS if k in found]


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
        "first_handler": (pdk.events or pdk.hooks)[0],
        "lifecycle_events": [h for h in pdk.events if h.lifecycle],
        "webhook_events": [h for h in pdk.events if not h.lifecycle],
        "respond": _respond(model, pdk),
        "hook_messages": _hook_messages(pdk),
        "title": one_line(model.title),  # for comments and headings
        "version": one_line(model.version),
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
    context = _context(model)
    title = context["title"]
    description = f"A hostwire plug-in for {title}; pdk/ is generated by hostwire — do not edit it."
    context |= {
        "name": name,
        "package": json.dumps(package_name(name)),
        "description": json.dumps(description, ensure_ascii=False),
        "build_script": json.dumps(
            "asc assembly/index.ts -O3 --runtime incremental "
            f"--use abort=pdk/{ABORT} --outFile build/plugin.wasm"
        ),
        "dependency": json.dumps(ASSEMBLYSCRIPT),
        # README commands name the spec this project was made from.
        "spec_path": shlex.quote(spec.source),
    }
    files = {
        "README.md": "scaffold/README.md.j2",
        "assembly/index.ts": "scaffold/index.ts.j2",
        "assembly/tsconfig.json": "scaffold/tsconfig.json.j2",
        "package.json": "scaffold/package.json.j2",
    }
    return [RenderJob(template, path, context) for path, template in sorted(files.items())]
