"""The C PDK: C names and types for the PDK model; ``pdk_templates/c`` formats them.

Everything is decided here, the templates only format:

- runtime: ``hw_`` / ``HW_`` (private: ``hw__``), in ``hw_runtime.[ch]``; a
  generated name never equals a runtime name (they are read from the runtime's
  sources; a clash would get ``_2``), and a model named ``HW`` becomes ``HWModel``;
- object models: ``typedef struct Light Light;`` with ``Light_read``,
  ``Light_write``, ``Light_parse``, ``Light_to_json``; nested objects are
  pointers (``Light *record``), so models may refer to themselves;
- string enums: ``typedef enum Color { Color_RED = 1, ... } Color;`` (0 is "no
  value") with ``Color_to_string`` / ``Color_from_string``;
- arrays: ``Light_array`` / ``hw_str_array`` / ``hw_int_array_array`` /
  ``hw_any_array`` (free JSON values) (``items`` + ``count``);
- operations: ``api_<name>(...)`` returning ``api_<name>_response``;
- events and HTTP hooks: ``HW_ON_<EXPORT>(handler)`` defines the export.

Field conventions: an optional field of a value type (integer, number,
boolean, enum, array) is sent when it holds anything but 0 / false / empty, and
has ``bool has_<name>`` to send 0, false or ``[]`` too; pointer-like types (objects,
strings, ``any``) are NULL when absent; a nullable field has
``bool <name>_null``. JSON names that are not C identifiers, or are keywords,
are mangled (``part-no`` → ``part_no``, ``default`` → ``default_``).
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from hostwire._contract import INPUT_SECTIONS
from hostwire._hostapi import OpenAPIDocument
from hostwire._pdk import naming
from hostwire._pdk.generate import RenderJob, templates_root
from hostwire._pdk.model import ANY, EventDef, Field, Model, OperationDef, Param, PdkModel, TypeRef

CC_FLAGS = "--target=wasm32-freestanding -O2 -s -nostdlib -Wl,--no-entry"
# The one command that builds a project made by `hostwire plugin new --lang c`:
# zig's clang from PyPI, through the interpreter that created the project (it has
# ziglang when hostwire was installed with its dev extra: pip install ziglang).
BUILD = "make"
# What the PDK's README shows (no machine paths in generated files).
README_BUILD = f"python3 -m ziglang cc {CC_FLAGS} -Ipdk -o build/plugin.wasm main.c pdk/*.c"
SOURCES = ("hw_api.c", "hw_exports.c", "hw_models.c", "hw_runtime.c")

_C_KEYWORDS = frozenset(
    """
    auto break case char const continue default do double else enum extern float for
    goto if inline int long register restrict return short signed sizeof static struct
    switch typedef union unsigned void volatile while _Alignas _Alignof _Atomic _Bool
    _Complex _Generic _Imaginary _Noreturn _Static_assert _Thread_local alignas alignof
    bool constexpr false nullptr static_assert thread_local true typeof typeof_unqual
    """.split()  # noqa: SIM905 (a word list reads better than a list literal)
)
# Not C keywords, but keeping the headers usable from C++ costs nothing.
_CPP_KEYWORDS = frozenset(
    """
    and and_eq asm bitand bitor catch char8_t char16_t char32_t class co_await co_return
    co_yield compl concept const_cast consteval constinit decltype delete dynamic_cast
    explicit export friend mutable namespace new noexcept not not_eq operator or or_eq
    private protected public reinterpret_cast requires static_cast template this throw
    try typeid typename using virtual wchar_t xor xor_eq
    """.split()  # noqa: SIM905 (a word list reads better than a list literal)
)
# Macros and types from the freestanding headers the PDK includes.
_HEADER_NAMES = frozenset(
    """
    NULL offsetof va_list va_start va_end va_arg va_copy size_t ptrdiff_t wchar_t int8_t
    int16_t int32_t int64_t uint8_t uint16_t uint32_t uint64_t intptr_t uintptr_t
    intmax_t uintmax_t max_align_t __bool_true_false_are_defined
    """.split()  # noqa: SIM905 (a word list reads better than a list literal)
)
# What the runtime defines without its prefix: what clang expects from a C library.
_LIBC_NAMES = frozenset({"memcpy", "memmove", "memset", "memcmp", "strlen"})
RESERVED = _C_KEYWORDS | _CPP_KEYWORDS | _HEADER_NAMES | _LIBC_NAMES
# Every name of the runtime starts with hw_ / HW_ (private: hw__); no generated
# name takes one of them (the generator reads them from the runtime's sources).
_RUNTIME_NAME = re.compile(r"\b(?:hw|HW)_\w+")
RUNTIME_FILES = ("hw_runtime.h.j2", "hw_runtime.c.j2")
_STDINT_MACRO = re.compile(r"^U?INT(8|16|32|64|PTR|MAX)?_(MAX|MIN|C)$")


class _Reserved:
    """Names no generated identifier may be: keywords, the headers' names, stdint's macros."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in RESERVED or bool(_STDINT_MACRO.match(name)))


_RESERVED = _Reserved()

_READERS = {
    "string": "hw_read_str",
    "integer": "hw_read_int",
    "number": "hw_read_number",
    "boolean": "hw_read_bool",
    "any": "hw_read_json",
}
_WRITERS = {
    "string": "hw_write_str",
    "integer": "hw_write_int",
    "number": "hw_write_number",
    "boolean": "hw_write_bool",
    "any": "hw_write_json",
}
_ITEM_TYPES = {
    "string": "hw_str",
    "integer": "int64_t",
    "number": "double",
    "boolean": "bool",
    "any": "hw_json *",
}
_ARRAY_BASES = {
    "string": "hw_str",
    "integer": "hw_int",
    "number": "hw_number",
    "boolean": "hw_bool",
    "any": "hw_any",  # not hw_json: hw_json_array() is the runtime's
}
# (OpenAPI location, key of the host call's input), as in Contract 1.
_SECTIONS = tuple((location, key) for key, location in INPUT_SECTIONS.items())


# -- names --------------------------------------------------------------------


@functools.cache
def runtime_names() -> frozenset[str]:
    """Every hw_/HW_ name the runtime declares or defines, and the libc names it defines."""
    folder = templates_root() / "c"
    text = "\n".join((folder / name).read_text(encoding="utf-8") for name in RUNTIME_FILES)
    return frozenset(_RUNTIME_NAME.findall(text)) | _LIBC_NAMES


def c_ident(text: str) -> str:
    """A C identifier for ``text`` (a JSON name): safe as a member, parameter or suffix."""
    ident = re.sub(r"[^A-Za-z0-9_]", "_", text) or "_"
    if ident[0].isdigit():
        ident = "_" + ident
    if re.match(r"_[A-Z_]", ident) or ident.lower().startswith("hw_"):
        ident = "x" + ident  # reserved for the implementation, or the PDK's own prefix
    return naming.escape_reserved(ident, _RESERVED)


def upper_snake(text: str) -> str:
    """An enum constant's suffix: ``TurnOn`` → ``TURN_ON``, ``HTTPStatus`` → ``HTTPSTATUS``
    (acronyms stay whole), ``""`` → ``EMPTY``."""
    return naming.upper_snake(text, split_acronyms=False) or "EMPTY"


def c_string(text: str) -> str:
    """A C string literal holding ``text`` as UTF-8 (octal escapes outside ASCII)."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\?':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def c_comment(text: str) -> str:
    """One line of text that is safe inside a C comment."""
    # Neither "*/" (ends the comment) nor "/*" (-Wcomment) may appear inside one.
    return " ".join(text.split()).replace("*/", "* /").replace("/*", "/ *")


def _key(name: str) -> str:
    """The C literal of a JSON member name and its colon, e.g. "\\"id\\":"."""
    return c_string(json.dumps(name, ensure_ascii=False) + ":")


def _decl(ctype: str, name: str) -> str:
    return f"{ctype}{name}" if ctype.endswith("*") else f"{ctype} {name}"


def _pointer_to(ctype: str) -> str:
    return f"{ctype}*" if ctype.endswith("*") else f"{ctype} *"


def _namer(taken: Iterable[str] = ()) -> naming.Namer:
    """A scope of C identifiers: a taken or reserved name gets _2, _3, ..."""
    return naming.Namer(taken, reserved=_RESERVED, numbering=naming.underscore_number)


# -- types --------------------------------------------------------------------


class _Types:
    """Maps ``TypeRef``s to C types and to the code that reads and writes them."""

    def __init__(self, model: PdkModel, names: naming.Namer) -> None:
        self.kinds = {m.name: m.kind for m in model.models}
        # Model names are PascalCase (no "_"), so "<Model>_<suffix>" names never clash,
        # unless the model is named HW or Hw: its names would start like the runtime's.
        self.names = {
            m.name: names.claim(f"{m.name}Model" if m.name.lower() == "hw" else m.name)
            for m in model.models
        }
        self.arrays: dict[str, TypeRef] = {}  # C name → array type, filled as types are mapped
        self._array_names: dict[TypeRef, str] = {}
        self._global = names

    def is_object(self, t: TypeRef) -> bool:
        return t.kind == "model" and self.kinds[t.model] == "object"

    def pointer_like(self, t: TypeRef) -> bool:
        """Absent (or null) is NULL, with no has_ flag."""
        return self.is_object(t) or t.kind in ("string", "any")

    def array(self, t: TypeRef) -> str:
        """The C name of array type ``t``: ``Light_array``, ``hw_int_array_array``, ..."""
        if t not in self._array_names:
            items = t.items or ANY
            if items.kind == "array":
                base = self.array(items)
            elif items.kind == "model":
                base = self.names[items.model]
            else:
                base = _ARRAY_BASES[items.kind]
            name = self._global.claim(f"{base}_array")
            self._array_names[t] = name
            self.arrays[name] = t
        return self._array_names[t]

    def item(self, t: TypeRef) -> str:
        """The C type of a value held inline (array items, options, result bodies)."""
        if t.kind == "model":
            return self.names[t.model]
        if t.kind == "array":
            return self.array(t)
        return _ITEM_TYPES[t.kind]

    def field(self, t: TypeRef) -> str:
        """The C type of a struct member: objects by pointer, the rest inline."""
        return f"{self.item(t)} *" if self.is_object(t) else self.item(t)

    def reader(self, t: TypeRef) -> str:
        if t.kind in ("model", "array"):
            return f"{self.item(t)}_read"
        return _READERS[t.kind]

    def writer(self, t: TypeRef) -> str:
        if t.kind in ("model", "array"):
            return f"{self.item(t)}_write"
        return _WRITERS[t.kind]

    def read_into(self, t: TypeRef, src: str, ptr: str) -> str:
        """A C boolean expression: read JSON ``src`` into the item at pointer ``ptr``."""
        return f"{self.reader(t)}({src}, {ptr})"

    def read_field(self, t: TypeRef, src: str, dst: str) -> str:
        if self.is_object(t):
            return self.read_into(t, src, f"{dst} = hw_new({self.item(t)})")
        return self.read_into(t, src, f"&{dst}")

    def write_field(self, t: TypeRef, buf: str, value: str) -> str:
        if t.kind == "array":
            return f"{self.writer(t)}({buf}, &{value});"
        return f"{self.writer(t)}({buf}, {value});"

    def write_item(self, t: TypeRef, buf: str, value: str) -> str:
        if self.is_object(t) or t.kind == "array":
            return f"{self.writer(t)}({buf}, &{value});"
        return f"{self.writer(t)}({buf}, {value});"

    def write_pointed(self, t: TypeRef, buf: str, ptr: str) -> str:
        if self.is_object(t) or t.kind == "array":
            return f"{self.writer(t)}({buf}, {ptr});"
        return f"{self.writer(t)}({buf}, *{ptr});"

    def nonzero(self, t: TypeRef, value: str) -> str:
        """A C expression: a value-type member holds something other than its zero."""
        if t.kind == "boolean":
            return value
        if t.kind == "array":
            return f"{value}.count != 0"
        return f"{value} != 0"  # integers, numbers, enums (0 is "no value")

    def presence_note(self, t: TypeRef, has: str) -> str:
        """When a value-type member is sent, for its comment."""
        if t.kind == "boolean":
            return f"sent when true; set {has} to send false"
        if t.kind == "array":
            return f"sent when not empty; set {has} to send []"
        if t.kind == "model":
            return "sent when set"
        return f"sent when not 0; set {has} to send 0"

    def absent(self, t: TypeRef, value: str) -> str:
        return f"{value}.ptr == NULL" if t.kind == "string" else f"{value} == NULL"

    def present(self, t: TypeRef, value: str) -> str:
        return f"{value}.ptr != NULL" if t.kind == "string" else f"{value} != NULL"


# -- what the templates print -------------------------------------------------


@dataclass(frozen=True, slots=True)
class CConstant:
    const: str  # Color_RED
    text: str  # the value, as a C string literal
    comment: str  # the value, for a comment


@dataclass(frozen=True, slots=True)
class CEnum:
    name: str
    doc: str
    constants: list[CConstant]
    empty: str  # an enum without values: its one constant, <Name>__NONE
    expected: str  # the values, for messages, as a C string literal


@dataclass(frozen=True, slots=True)
class CField:
    json: str  # the JSON name, as a C string literal
    key: str  # the JSON name and its colon, as a C string literal
    member: str
    decl: str
    has: str  # an optional value-type member: its has_ flag
    null: str  # a nullable member (not free JSON): its _null flag
    required: bool
    accepts_null: bool  # free JSON: null is a value like any other
    read: str  # a C boolean expression: read JSON v into the member
    write: str  # a C statement: write the member to buf
    present: str  # an optional member: a C expression, whether it is sent
    is_null: str  # a nullable member: a C expression, whether it is sent as null
    doc: str


@dataclass(frozen=True, slots=True)
class CObject:
    name: str
    doc: str
    fields: list[CField]


@dataclass(frozen=True, slots=True)
class CArray:
    name: str  # Light_array, hw_int_array_array, ...
    items_decl: str
    item_type: str
    read: str  # a C boolean expression: read JSON item into out->items[i]
    write: str  # a C statement: write value->items[i] to buf


@dataclass(frozen=True, slots=True)
class CInput:
    """A parameter as the operation's function writes it into the host call's input."""

    key: str  # the name and its colon, as a C string literal
    write: str  # a C statement
    present: str  # an optional parameter: a C expression, whether it is sent


@dataclass(frozen=True, slots=True)
class CSection:
    """One object of the Contract 1 input: "path", "query" or "headers"."""

    key: str  # the section's name and its colon, as a C string literal
    params: list[CInput]


@dataclass(frozen=True, slots=True)
class COption:
    """A member of an operation's options struct: an optional parameter."""

    decl: str
    has: str  # a value type: its has_ flag
    doc: str


@dataclass(frozen=True, slots=True)
class CBody:
    write: str  # a C statement: write the body argument to the input


@dataclass(frozen=True, slots=True)
class CResult:
    """The typed 2xx body of an operation's response struct."""

    decl: str
    read: str  # a C boolean expression: read the answer's JSON into it
    reset: str  # a C statement: clear it again after a failed read
    type: str


@dataclass(frozen=True, slots=True)
class COperation:
    name: str  # the host function
    operation_id: str
    method: str
    path: str  # for comments
    summary: str
    function: str  # api_<name>
    response: str  # api_<name>_response
    options: str  # api_<name>_options, or "" without optional parameters
    option_fields: list[COption]
    import_symbol: str
    import_name: str  # the host function, as a C string literal
    signature: str
    docs: list[str]  # one comment line per argument
    sections: list[CSection]  # those with parameters, in path, query, headers order
    body: CBody | None
    result: CResult | None  # None: the operation declares no JSON 2xx body
    simple: bool  # no required parameters and no body: the example calls it

    @property
    def uses_first(self) -> bool:
        return bool(self.sections or self.body)

    @property
    def uses_inner(self) -> bool:
        return bool(self.sections)

    @property
    def example_args(self) -> str:
        return "NULL" if self.options else ""


@dataclass(frozen=True, slots=True)
class CHandler:
    """An event or HTTP hook: the HW_ON_<EXPORT>(handler) macro and what it defines."""

    kind: str  # event | hook
    export: str
    export_c: str  # the export, as a C string literal
    heading: str
    macro: str
    handler_type: str
    runner: str
    symbol: str
    payload_type: str
    payload_name: str  # for messages, as a C string literal
    describe: str  # a C expression: the payload as text, for logging
    payload_decl: str
    read: str  # a C boolean expression: read the input into the payload
    arg: str  # what the runner passes the handler
    params: str  # the handler's parameters
    result_type: str = ""  # "" when the answer is not used (after-events)
    result_decl: str = ""
    write: str = ""  # a C statement: write the result
    prefill: list[str] = field(default_factory=list)  # result fields copied from the payload
    lifecycle: bool = True  # a lifecycle event or a hook; False for any other webhook
    receives: str = ""  # for another webhook: what its handler gets, as a comment
    webhook: str = ""  # for another webhook: its name, as a comment


@dataclass(frozen=True, slots=True)
class CRespond:
    """hw_respond(output, status, headers, body): the pre-hook answers by itself."""

    function: str
    output: str
    response: str
    field: str
    flag: str
    flag_has: str
    status: str
    headers: str
    body: str


@dataclass(frozen=True, slots=True)
class CHookMessage:
    """hw_request_header / hw_request_body (or the response's): a hook's request or response."""

    type: str  # HttpRequest
    header: str  # its hw_..._header function
    body: str  # its hw_..._body function
    headers: str  # the headers member
    body_member: str  # the (base64) body member


def _receives(event: EventDef) -> str:
    """What the handler of a webhook that is not a lifecycle event gets."""
    if event.enveloped:
        return "the Standard Webhooks envelope (id, type, timestamp, data)"
    return "the payload as the app sends it, bare (no envelope)"


@dataclass(slots=True)
class _Parameters:
    """What an operation's parameters add to its function."""

    arguments: list[str] = field(default_factory=list)  # the required ones
    docs: list[str] = field(default_factory=list)
    options: list[COption] = field(default_factory=list)  # the optional ones
    sections: dict[str, list[CInput]] = field(default_factory=dict)  # by location


# -- the PDK ------------------------------------------------------------------


class _Pdk:
    """The templates' context for one PDK model."""

    def __init__(self, model: PdkModel) -> None:
        self.model = model
        self.names = _namer(runtime_names())
        self.types = _Types(model, self.names)
        self.members: dict[str, list[str]] = {}  # model → its fields' C names
        self.flags: dict[str, dict[str, str]] = {}  # model → JSON name → its has_ flag
        self.enums = [self._enum(m) for m in model.models if m.kind == "enum"]
        self.objects = [self._object(m) for m in model.models if m.kind == "object"]
        self.operations = [self._operation(op) for op in model.operations]
        self.events = [
            replace(
                self._handler(
                    e.export,
                    e.payload,
                    e.result,
                    kind="event",
                    title=e.type,
                    summary=e.summary,
                    names=("event", "result"),
                ),
                lifecycle=e.lifecycle,
                receives="" if e.lifecycle else c_comment(_receives(e)),
                webhook="" if e.lifecycle else c_comment(e.type),
            )
            for e in model.events
        ]
        self.hooks = [
            self._handler(
                h.export,
                h.input,
                h.output,
                kind="hook",
                title=h.export,
                summary="",
                names=("input", "output"),
            )
            for h in model.hooks
        ]
        # Last: every array type is known once everything above is mapped.
        self.arrays = [self._array(name, t) for name, t in sorted(self.types.arrays.items())]

    def context(self) -> dict[str, Any]:
        # The example plug-in (README, new projects): a before-event if there is
        # one, and an operation that takes no arguments.
        event = next((e for e in self.events if e.result_type), None)
        operation = next((op for op in self.operations if op.simple), None)
        return {
            "example_event": event or next(iter(self.events), None),
            "example_operation": operation,
            "enums": self.enums,
            "objects": self.objects,
            "arrays": self.arrays,
            "operations": self.operations,
            "events": self.events,
            "lifecycle_events": [e for e in self.events if e.lifecycle],
            "webhook_events": [e for e in self.events if not e.lifecycle],
            "hooks": self.hooks,
            "respond": self._respond(),
            "hook_messages": self._hook_messages(),
            "cached_powers": cached_powers(),
            "build_command": README_BUILD,
        }

    # models

    def _enum(self, m: Model) -> CEnum:
        name = self.types.names[m.name]
        constants = [
            CConstant(
                self.names.claim(f"{name}_{upper_snake(v)}"),
                c_string(v),
                c_comment(json.dumps(v, ensure_ascii=False)),
            )
            for v in m.values
        ]
        return CEnum(
            name,
            c_comment(m.description),
            constants,
            self.names.claim(f"{name}__NONE") if not constants else "",
            c_string(", ".join(m.values) or "(no values)"),
        )

    def _object(self, m: Model) -> CObject:
        members = _namer()
        idents = [members.claim(c_ident(f.name)) for f in m.fields]
        self.members[m.name] = idents
        fields = [
            self._field(m, f, member, members) for f, member in zip(m.fields, idents, strict=True)
        ]
        name = self.types.names[m.name]
        for suffix in ("read", "write", "parse", "to_json"):
            self.names.claim(f"{name}_{suffix}")
        return CObject(name, c_comment(m.description), fields)

    def _field(self, m: Model, f: Field, member: str, members: naming.Namer) -> CField:
        t = self.types
        pointer = t.pointer_like(f.type)
        has = members.claim(f"has_{member}") if not f.required and not pointer else ""
        self.flags.setdefault(m.name, {})[f.name] = has
        null = members.claim(f"{member}_null") if f.nullable and f.type.kind != "any" else ""
        value = f"value->{member}"
        present = []
        if has:
            # A value other than 0 / false / empty is there by itself: has_ is
            # only needed to send 0, false or []. (A forgotten has_ flag
            # dropped a hook's has_response = true: the request went on.)
            present += [f"value->{has}", t.nonzero(f.type, value)]
        elif not f.required:
            present.append(t.present(f.type, value))
        if null and not f.required:
            present.append(f"value->{null}")
        is_null = [f"value->{null}"] if null else []
        if null and pointer:
            is_null.append(t.absent(f.type, value))
        return CField(
            json=c_string(f.name),
            key=_key(f.name),
            member=member,
            decl=_decl(t.field(f.type), member),
            has=has,
            null=null,
            required=f.required,
            accepts_null=f.type.kind == "any",
            read=t.read_field(f.type, "v", f"out->{member}"),
            write=t.write_field(f.type, "buf", value),
            present=" || ".join(present),
            is_null=" || ".join(is_null),
            doc=self._field_doc(f, has, null),
        )

    def _field_doc(self, f: Field, has: str, null: str) -> str:
        notes = []
        if not f.required:
            notes.append(
                f"optional: {self.types.presence_note(f.type, has)}"
                if has
                else "optional: NULL when absent"
            )
        if null:
            notes.append(f"null: {null}")
        doc = c_comment(f.description)
        return c_comment(f"{doc} ({'; '.join(notes)})" if notes else doc)

    def _array(self, name: str, t: TypeRef) -> CArray:
        items = t.items or ANY
        item = self.types.item(items)
        for suffix in ("read", "write"):
            self.names.claim(f"{name}_{suffix}")
        return CArray(
            name,
            _decl(_pointer_to(item), "items"),
            item,
            self.types.read_into(items, "item", "&out->items[i]"),
            self.types.write_item(items, "buf", "value->items[i]"),
        )

    # operations

    def _operation(self, op: OperationDef) -> COperation:
        ident = c_ident(op.name)
        function = self.names.claim(f"api_{ident}")
        response = self.names.claim(f"{function}_response")
        optional = any(not p.required for p in op.params)
        options = self.names.claim(f"{function}_options") if optional else ""
        params = self._parameters(op.params)
        arguments, docs = params.arguments, params.docs
        if options:
            arguments.append(f"const {options} *options")
            docs.append("options: the optional parameters, or NULL.")
        body = None
        if op.body is not None:
            argument, doc, body = self._body(op.body, op.body_required)
            arguments.append(argument)
            docs.append(doc)
        result = self._result(op.response) if op.response is not None else None
        return COperation(
            name=op.name,
            operation_id=op.operation_id,
            method=op.method,
            path=c_comment(op.path),
            summary=c_comment(op.summary),
            function=function,
            response=response,
            options=options,
            option_fields=params.options,
            import_symbol=self.names.claim(f"hw__import_{ident}"),
            import_name=c_string(op.name),
            signature=f"{response} {function}({', '.join(arguments) or 'void'})",
            docs=[c_comment(d) for d in docs],
            sections=[
                CSection(_key(key), params.sections[location])
                for location, key in _SECTIONS
                if location in params.sections
            ],
            body=body,
            result=result,
            simple=not any(p.required for p in op.params) and op.body is None,
        )

    def _parameters(self, params: Iterable[Param]) -> _Parameters:
        """Required parameters are arguments, optional ones members of the options
        struct; each is written into its section of the input."""
        found = _Parameters()
        args, members = _namer({"options", "body"}), _namer()
        for p in params:
            if p.required:
                name = args.claim(c_ident(p.name))
                found.arguments.append(_decl(self.types.field(p.type), name))
                found.docs.append(f"{name}: {p.location} parameter {p.name}. {p.description}")
                written = self._input(p, name, "")
            else:
                option, written = self._option(p, members)
                found.options.append(option)
            found.sections.setdefault(p.location, []).append(written)
        return found

    def _option(self, p: Param, members: naming.Namer) -> tuple[COption, CInput]:
        t = self.types
        member = members.claim(c_ident(p.name))
        has = "" if t.pointer_like(p.type) else members.claim(f"has_{member}")
        value = f"options->{member}"
        flag = (
            f"(options->{has} || {t.nonzero(p.type, value)})" if has else t.present(p.type, value)
        )
        written = self._input(p, value, f"options != NULL && {flag}")
        note = t.presence_note(p.type, has) if has else "omitted when NULL"
        doc = c_comment(f"{p.location} parameter {p.name} ({note}). {p.description}")
        return COption(_decl(t.field(p.type), member), has, doc), written

    def _input(self, p: Param, value: str, present: str) -> CInput:
        return CInput(_key(p.name), self.types.write_field(p.type, "&hw_b", value), present)

    def _body(self, body: TypeRef, required: bool) -> tuple[str, str, CBody]:
        """The body argument, its doc and how it is written: always a pointer
        (NULL: no body); a JSON value is one already."""
        t = self.types
        if body.kind == "any":
            argument, write = "const hw_json *body", "hw_write_json(&hw_b, body);"
        else:
            argument = f"const {_pointer_to(t.item(body))}body"
            write = t.write_pointed(body, "&hw_b", "body")
        needed = "required" if required else "optional"
        doc = f"body: the request body ({t.item(body)}, {needed}; NULL: none)."
        return argument, doc, CBody(write)

    def _result(self, r: TypeRef) -> CResult:
        t = self.types
        return CResult(
            decl=_decl(t.field(r), "body"),
            read=t.read_field(r, "hw_base.json", "hw_r.body"),
            reset="hw_r.body = NULL;"
            if t.is_object(r)
            else "memset(&hw_r.body, 0, sizeof hw_r.body);",
            type=t.item(r),
        )

    # events and hooks

    def _handler(
        self,
        export: str,
        payload: TypeRef,
        result: TypeRef | None,
        *,
        kind: str,
        title: str,
        summary: str,
        names: tuple[str, str],
    ) -> CHandler:
        t = self.types
        ident = c_ident(export)
        item = t.item(payload)
        if payload.kind == "any":
            param, arg = f"const hw_json *{names[0]}", "*hw_payload"
        else:
            param, arg = f"const {_pointer_to(item)}{names[0]}", "hw_payload"
        handler = CHandler(
            kind=kind,
            export=export,
            export_c=c_string(export),
            heading=c_comment(f"{title}: {summary}" if summary else title),
            macro=self.names.claim(f"HW_ON_{ident.upper()}"),
            handler_type=self.names.claim(f"hw_{ident}_handler"),
            runner=self.names.claim(f"hw__run_{ident}"),
            symbol=self.names.claim(f"hw__export_{ident}"),
            payload_type=item,
            payload_name=c_string(item.rstrip(" *")),
            # The payload as text, for logging: typed when it is an object.
            describe=f"{item}_to_json({names[0]})" if t.is_object(payload) else "hw_input()",
            payload_decl=_decl(_pointer_to(item), "hw_payload"),
            read=t.read_into(payload, "hw_in", "hw_payload"),
            arg=arg,
            params=param,
        )
        if result is None:
            return handler
        out = t.item(result)
        return replace(
            handler,
            params=f"{param}, {_pointer_to(out)}{names[1]}",
            result_type=out,
            result_decl=_decl(_pointer_to(out), "hw_result"),
            write=t.write_pointed(result, "&hw_out", "hw_result"),
            prefill=self._prefill(payload, result),
        )

    def _respond(self) -> CRespond | None:
        """hw_respond(output, status, headers, body) for the pre-hook (hooks.yaml's shapes)."""
        hook = next((h for h in self.model.hooks if h.export == "http_pre_hook"), None)
        if hook is None or not self.types.is_object(hook.output):
            return None
        models = {m.name: m for m in self.model.models}

        def member(model: str, json_name: str) -> str:
            fields = [f.name for f in models[model].fields]
            return self.members[model][fields.index(json_name)]

        output = models[hook.output.model]
        response = next(f for f in output.fields if f.name == "response").type
        return CRespond(
            function=self.names.claim("hw_respond"),
            output=self.types.names[output.name],
            response=self.types.names[response.model],
            field=member(output.name, "response"),
            flag=member(output.name, "has_response"),
            flag_has=self.flags[output.name]["has_response"],
            status=member(response.model, "status_code"),
            headers=member(response.model, "headers"),
            body=member(response.model, "body"),
        )

    def _hook_messages(self) -> list[CHookMessage]:
        """Header lookup and body decoding for the hooks' request and response (hooks.yaml)."""
        models = {m.name: m for m in self.model.models}
        found: dict[str, CHookMessage] = {}
        for hook in self.model.hooks:
            if not self.types.is_object(hook.input):
                continue
            for f in models[hook.input.model].fields:
                if f.name not in ("request", "response") or f.name in found:
                    continue
                if not self.types.is_object(f.type):
                    continue
                fields = [g.name for g in models[f.type.model].fields]
                if "headers" not in fields or "body" not in fields:
                    continue
                members = self.members[f.type.model]
                found[f.name] = CHookMessage(
                    type=self.types.names[f.type.model],
                    header=self.names.claim(f"hw_{f.name}_header"),
                    body=self.names.claim(f"hw_{f.name}_body"),
                    headers=members[fields.index("headers")],
                    body_member=members[fields.index("body")],
                )
        return [found[k] for k in ("request", "response") if k in found]

    def _prefill(self, payload: TypeRef, result: TypeRef) -> list[str]:
        """Required result fields the payload has too start as the payload's (hooks' context)."""
        if not (self.types.is_object(payload) and self.types.is_object(result)):
            return []
        models = {m.name: m for m in self.model.models}
        source, target = models[payload.model], models[result.model]
        given = {
            f.name: (f.type, member)
            for f, member in zip(source.fields, self.members[source.name], strict=True)
            if f.required and not f.nullable
        }
        return [
            f"hw_result->{member} = hw_payload->{given[f.name][1]};"
            for f, member in zip(target.fields, self.members[target.name], strict=True)
            if f.required and f.name in given and given[f.name][0] == f.type
        ]


@functools.cache
def cached_powers() -> tuple[tuple[str, str], ...]:
    """10^k for k = -348, -340, ..., 340 as normalized 64-bit significands and
    binary exponents, rounded to nearest: Grisu's table, computed exactly."""
    rows = []
    for index in range(87):
        value = Fraction(10) ** (-348 + 8 * index)
        exponent = value.numerator.bit_length() - value.denominator.bit_length() - 64
        while value / Fraction(2) ** exponent >= 2**64:
            exponent += 1
        while value / Fraction(2) ** exponent < 2**63:
            exponent -= 1
        significand = round(value / Fraction(2) ** exponent)
        if significand == 2**64:
            significand //= 2
            exponent += 1
        rows.append((f"0x{significand:016x}ULL", str(exponent)))
    return tuple(rows)


# -- the Language protocol ------------------------------------------------------


_FILES = (
    ("hostwire.h.j2", "hostwire.h"),
    ("hw_runtime.h.j2", "hw_runtime.h"),
    ("hw_runtime.c.j2", "hw_runtime.c"),
    ("hw_models.h.j2", "hw_models.h"),
    ("hw_models.c.j2", "hw_models.c"),
    ("hw_api.h.j2", "hw_api.h"),
    ("hw_api.c.j2", "hw_api.c"),
    ("hw_exports.h.j2", "hw_exports.h"),
    ("hw_exports.c.j2", "hw_exports.c"),
    ("README.md.j2", "README.md"),
)


def jobs(model: PdkModel, spec: OpenAPIDocument) -> list[RenderJob]:
    context = _Pdk(model).context()
    return [RenderJob(template, path, context) for template, path in _FILES]


def scaffold_jobs(model: PdkModel, spec: OpenAPIDocument, name: str) -> list[RenderJob]:
    context = {
        **_Pdk(model).context(),
        "name": name,
        "build": BUILD,
        "python": shlex.quote(sys.executable),
        "cc_flags": CC_FLAGS,
        # The commands in README.md and main.c run from the project folder.
        "spec_path": shlex.quote(spec.source),
    }
    return [
        RenderJob("scaffold/Makefile.j2", "Makefile", context),
        RenderJob("scaffold/main.c.j2", "main.c", context),
        RenderJob("scaffold/project_readme.md.j2", "README.md", context),
    ]
