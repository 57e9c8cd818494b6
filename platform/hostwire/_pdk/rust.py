"""The Rust PDK: names, types and files for ``pdk_templates/rust/``.

Everything a template prints is worked out here: identifiers (snake_case
fields and functions, PascalCase types and variants, Rust keywords get a
trailing ``_``, clashes get ``_2``, a model named like a runtime or prelude
type gets ``Model`` appended), types (``Option<T>`` for optional or
nullable, ``Option<Option<T>>`` for both, ``Box`` where a model contains itself,
``serde_json::Value`` for free JSON), serde attributes and doc comments.

The crate declares the Extism kernel imports itself (no ``extism-pdk`` crate
here) and builds with Debian's Rust for ``wasm32-unknown-unknown``.
"""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from hostwire._contract import INPUT_SECTIONS
from hostwire._errors import ConfigError
from hostwire._hostapi import OpenAPIDocument
from hostwire._pdk.generate import RenderJob
from hostwire._pdk.model import EventDef, Field, Model, OperationDef, Param, PdkModel, TypeRef
from hostwire._pdk.naming import Namer, escape_reserved, snake_case, type_name

# What hostwire.toml's build runs. `hostwire plugin build` picks the toolchain: the
# cargo on PATH when it has the wasm32 target (rustup's), else Debian's with its
# crates, offline (a CARGO_HOME of its own: no .cargo/config.toml in the project).
BUILD = "cargo build --release --target wasm32-unknown-unknown"
CRATE = "hostwire_pdk"
PACKAGE = "hostwire-pdk"  # the PDK's package name (Cargo.toml.j2)
# Names `hostwire plugin new --lang rust` refuses: cargo cannot build a package
# with the same name as its dependency, the PDK.
RESERVED_NAMES = frozenset({PACKAGE})
TARGET = "wasm32-unknown-unknown"
DOC_WIDTH = 88  # doc comments wrap here (generated code stays near 100 columns)
SIGNATURE_WIDTH = 96  # longer function signatures get one argument a line

KEYWORDS = frozenset(
    re.findall(
        r"\w+",
        """
        abstract as async await become box break const continue crate do dyn else enum extern
        false final fn for if impl in let loop macro match mod move mut override priv pub ref
        return self Self static struct super trait true try type typeof union unsafe unsized use
        virtual where while yield
        """,
    )
)
# Type names a model must not take: the crate root's own (lib.rs re-exports them
# next to `models::*`, and its own win there) and the standard prelude's (a
# plug-in's `use hostwire_pdk::*;` would otherwise shadow them). Such a model
# gets "Model" appended: `Error` → `ErrorModel`.
RUNTIME_TYPES = frozenset(
    re.findall(
        r"\w+",
        """
        ApiError Error Response Value Call
        AsMut AsRef Box Clone Copy Default DoubleEndedIterator Drop Eq Err Extend
        ExactSizeIterator Fn FnMut FnOnce From FromIterator Into IntoIterator Iterator
        None Ok Option Ord PartialEq PartialOrd Result Send Sized Some String Sync
        ToOwned ToString TryFrom TryInto Unpin Vec
        """,
    )
)
# Macro names an event's macro must not take: the crate's own macros and the
# standard library's (a plug-in's `use hostwire_pdk::*;` would shadow them).
# Such a macro gets "_" appended (`vec` → `vec_!`) and defines its export with
# #[export_name], as a keyword's does (`match` → `match_!`).
RESERVED_MACROS = KEYWORDS | frozenset(
    re.findall(
        r"\w+",
        """
        export json
        assert assert_eq assert_ne cfg column compile_error concat dbg debug_assert
        debug_assert_eq debug_assert_ne env eprint eprintln file format format_args include
        include_bytes include_str line matches module_path option_env panic print println
        stringify thread_local todo try unimplemented unreachable vec write writeln
        """,
    )
)
# Prelude names a model may shadow; generated code then spells them out.
_PRELUDE = {
    "Box": "::std::boxed::Box",
    "Option": "::std::option::Option",
    "String": "::std::string::String",
    "Vec": "::std::vec::Vec",
}
# The key of the host call's input (Contract 1) for each OpenAPI location.
_KEYS = {location: key for key, location in INPUT_SECTIONS.items()}
_PRIMITIVES = {"string": "String", "integer": "i64", "number": "f64", "boolean": "bool"}
_VALUE = "serde_json::Value"


# -- names ----------------------------------------------------------------


def snake_ident(text: str, fallback: str = "value") -> str:
    """A snake_case Rust identifier: ``ownerName`` → ``owner_name``, ``type`` → ``type_``,
    ``9lives`` → ``n9lives``."""
    return escape_reserved(snake_case(text, digit_prefix="n") or fallback, KEYWORDS)


def type_ident(text: str, fallback: str = "Value") -> str:
    """A PascalCase Rust identifier: ``two words`` → ``TwoWords``, ``9lives`` → ``T9lives``."""
    return escape_reserved(type_name(text) or fallback, KEYWORDS)


def rust_numbering(name: str, number: int) -> str:
    """How a clash is numbered: ``Name2`` for PascalCase, else ``name_2``
    (``Self_`` → ``Self2``, ``type_`` → ``type_2``)."""
    if name[:1].isupper():
        return f"{name.rstrip('_')}{number}"
    return f"{name.removesuffix('_')}_{number}"


def namer(taken: Iterable[str] = ()) -> Namer:
    """A scope of Rust names, clashes numbered by ``rust_numbering``."""
    return Namer(taken, numbering=rust_numbering)


def rust_string(text: str) -> str:
    """A Rust string literal holding ``text``."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{{{ord(char):x}}}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def doc_lines(*paragraphs: str, width: int = DOC_WIDTH) -> list[str]:
    """Doc comment lines (without ``///``) for the non-empty paragraphs, a blank
    line apart, wrapped at ``width``; ``* `` list items keep their indent."""
    lines: list[str] = []
    for paragraph in paragraphs:
        text = paragraph.strip()
        if not text:
            continue
        if lines:
            lines.append("")
        for line in text.splitlines():
            indent = "  " if line.startswith("* ") else ""
            wrapped = textwrap.wrap(
                line,
                width,
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
            lines += wrapped or [""]
    return lines


# -- what the templates get -------------------------------------------------


@dataclass(frozen=True, slots=True)
class RustField:
    ident: str
    json_name: str  # as a Rust string literal
    type: str
    serde: tuple[str, ...]  # one #[serde(...)] line each, if any
    doc: tuple[str, ...]
    optional: bool  # None leaves it out of the JSON
    getter: str = "required"  # how json.rs's Fields reads it: required | optional | nullable


@dataclass(frozen=True, slots=True)
class RustVariant:
    ident: str
    value: str  # as a Rust string literal


@dataclass(slots=True)
class RustModel:
    name: str
    kind: str  # object | enum
    doc: tuple[str, ...]
    derives: tuple[str, ...]  # one #[derive(...)] line each
    fields: list[RustField] = field(default_factory=list)
    variants: list[RustVariant] = field(default_factory=list)
    feature: str = ""  # the Cargo feature that defines it; "" when always there


@dataclass(frozen=True, slots=True)
class RustArg:
    ident: str
    type: str
    section: str  # path | query | headers | body
    json_name: str  # as a Rust string literal
    doc: tuple[str, ...]
    optional: bool


@dataclass(frozen=True, slots=True)
class RustOperation:
    ident: str  # the Rust function
    import_name: str  # the host function, as a Rust string literal
    name: str  # the host function, plain
    operation_id: str
    method: str
    path: str
    doc: tuple[str, ...]
    args: tuple[RustArg, ...]
    response: str  # T of Response<T>
    example: str  # a call, for the README
    wrap: bool  # one argument a line
    feature: str = ""  # the Cargo feature that defines it


@dataclass(frozen=True, slots=True)
class RustExport:
    """An event or HTTP hook: an optional export and its handler's types."""

    export: str
    type: str  # light.before_save, invoice.created, or the export for hooks
    doc: tuple[str, ...]
    input: str  # the payload type as macros print it ($crate::models::LightEvent)
    output: str  # what the handler answers ($crate::models::BeforeEventResult, or ())
    shown_input: str  # the same for people (LightEvent)
    shown_output: str
    macro: str = ""  # the macro that defines it; the export unless that is reserved
    lifecycle: bool = True  # a lifecycle event or a hook; False for any other webhook
    receives: str = ""  # what the handler gets, for tables: "the envelope", "the payload"
    feature: str = ""  # the Cargo feature that defines it; "" for hooks (always there)

    @property
    def symbol(self) -> str:
        """The Rust function the macro defines: the export itself, or one named after
        the macro (#[export_name] gives it the export's name)."""
        return self.export if self.macro == self.export else f"hostwire_export_{self.macro}"


@dataclass(frozen=True, slots=True)
class BeforeHelpers:
    """Constructors for a before-event's answer: proceed(), reject(reason), replace(record)."""

    model: str
    empty: tuple[str, ...]  # every field, each set to None by proceed()
    reject_field: str
    reject_model: str
    reason: str
    reject_rest: tuple[str, ...]  # the reject model's other fields, all None
    record_field: str
    record_type: str
    feature: str = ""  # the Cargo feature of ``model``


class _Mapper:
    """Maps one PdkModel's names and types to Rust."""

    def __init__(self, pdk: PdkModel) -> None:
        self.pdk = pdk
        self.by_name = {m.name: m for m in pdk.models}
        types = namer(RUNTIME_TYPES)
        self.names = {m.name: types.claim(self._type_name(m.name)) for m in pdk.models}
        shadowed = set(self.names.values())
        self.prelude = {k: (v if k in shadowed else k) for k, v in _PRELUDE.items()}
        self.defaults = self._default_models()

    @staticmethod
    def _type_name(name: str) -> str:
        ident = type_ident(name)
        return f"{ident}Model" if ident in RUNTIME_TYPES else ident

    # types ----------------------------------------------------------------

    def owned(self, ref: TypeRef) -> str:
        """The owned Rust type of ``ref`` (a field, a response, an array item)."""
        if ref.kind in _PRIMITIVES:
            primitive = _PRIMITIVES[ref.kind]
            return self.prelude["String"] if primitive == "String" else primitive
        if ref.kind == "array" and ref.items is not None:
            return f"{self.prelude['Vec']}<{self.owned(ref.items)}>"
        if ref.kind == "model" and ref.model in self.names:
            return self.names[ref.model]
        return _VALUE

    def borrowed(self, ref: TypeRef) -> str:
        """How a function takes ``ref``: ``&str``, ``i64``, ``Kind``, ``&Light``, ``&[T]``."""
        if ref.kind == "string":
            return "&str"
        if ref.kind in _PRIMITIVES:
            return _PRIMITIVES[ref.kind]
        if ref.kind == "array" and ref.items is not None:
            return f"&[{self.owned(ref.items)}]"
        if ref.kind == "model" and ref.model in self.names:
            model = self.by_name[ref.model]
            return self.names[ref.model] if model.kind == "enum" else f"&{self.names[ref.model]}"
        return f"&{_VALUE}"

    def option(self, inner: str) -> str:
        return f"{self.prelude['Option']}<{inner}>"

    # models ---------------------------------------------------------------

    def _default_models(self) -> set[str]:
        """Object models whose every field has a Default (so they derive it)."""
        result = {m.name for m in self.pdk.models if m.kind == "object"}
        changed = True
        while changed:
            changed = False
            for name in sorted(result):
                if not all(
                    self._has_default(f.type, f.required, f.nullable, result)
                    for f in self.by_name[name].fields
                ):
                    result.discard(name)
                    changed = True
        return result

    def _has_default(self, ref: TypeRef, required: bool, nullable: bool, ok: set[str]) -> bool:
        if not required or nullable or ref.kind != "model":
            return True
        return ref.model in ok or ref.model not in self.by_name

    def _contains(self, start: str, target: str) -> bool:
        """Whether model ``start`` holds ``target`` directly (not through an array)."""
        seen, stack = set(), [start]
        while stack:
            name = stack.pop()
            if name == target:
                return True
            if name in seen or name not in self.by_name:
                continue
            seen.add(name)
            stack += [f.type.model for f in self.by_name[name].fields if f.type.kind == "model"]
        return False

    def model(self, model: Model) -> RustModel:
        name = self.names[model.name]
        doc = tuple(doc_lines(model.description or f"`{model.name}` from the OpenAPI document."))
        if model.kind == "enum":
            return self._enum(name, doc, model)
        return self._object(name, doc, model)

    @staticmethod
    def _enum(name: str, doc: tuple[str, ...], model: Model) -> RustModel:
        idents = namer()
        variants = [
            RustVariant(idents.claim(type_ident(value, "Empty")), rust_string(value))
            for value in model.values
        ]
        # serde by hand (json.rs): a derived Deserialize is most of a large crate's
        # compile time.
        derives = ("Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord",)
        return RustModel(name, "enum", doc, derives, variants=variants)

    def _object(self, name: str, doc: tuple[str, ...], model: Model) -> RustModel:
        basic = (
            "Debug, Clone, PartialEq, Default"
            if model.name in self.defaults
            else "Debug, Clone, PartialEq"
        )
        derives = (basic, "serde::Serialize")  # Deserialize: by hand (json.rs), cheaper
        idents = namer()
        fields = [self._field(model, f, idents.claim(snake_ident(f.name))) for f in model.fields]
        return RustModel(name, "object", doc, derives, fields=fields)

    def _field(self, model: Model, f: Field, ident: str) -> RustField:
        inner = self.owned(f.type)
        if f.type.kind == "model" and self._contains(f.type.model, model.name):
            inner = f"{self.prelude['Box']}<{inner}>"
        attrs = [] if ident == f.name else [f"rename = {rust_string(f.name)}"]
        is_none = f"{self.prelude['Option']}::is_none"
        if f.required and not f.nullable:
            rust_type, getter = inner, "required"
        elif f.required:  # nullable: always sent, None is null
            rust_type, getter = self.option(inner), "optional"
        elif not f.nullable:
            rust_type, getter = self.option(inner), "optional"
            attrs.append(f'skip_serializing_if = "{is_none}"')
        else:  # optional and nullable: None left out, Some(None) is null
            rust_type, getter = self.option(self.option(inner)), "nullable"
            attrs.append(f'skip_serializing_if = "{is_none}"')
        serde = [", ".join(attrs)] if attrs else []
        return RustField(
            ident,
            rust_string(f.name),
            rust_type,
            tuple(serde),
            tuple(doc_lines(f.description)),
            optional=not f.required,
            getter=getter,
        )

    # operations -----------------------------------------------------------

    def operation(self, op: OperationDef, ident: str) -> RustOperation:
        args = self._args(op)
        response = self.owned(op.response) if op.response is not None else _VALUE
        example = f"api::{ident}({', '.join(self._example(a) for a in args)})"
        arguments = ", ".join(f"{a.ident}: {a.type}" for a in args)
        signature = f"pub fn {ident}({arguments}) -> crate::Response<{response}> {{"
        return RustOperation(
            ident,
            rust_string(op.name),
            op.name,
            op.operation_id,
            op.method,
            op.path,
            tuple(self._operation_doc(op, args, response)),
            tuple(args),
            response,
            example,
            wrap=len(signature) > SIGNATURE_WIDTH,
        )

    def _args(self, op: OperationDef) -> list[RustArg]:
        """The path parameters, the body, then the query and header parameters."""
        idents = namer({"body", "call"} if op.body is not None else {"call"})
        path = [p for p in op.params if p.location == "path"]
        others = [p for p in op.params if p.location != "path"]
        args = [self._param(idents.claim(snake_ident(p.name)), p) for p in path]
        if op.body is not None:
            body = self.object_model(op.body)
            described = body.description if body is not None else ""
            args.append(
                self._arg(
                    "body",
                    op.body,
                    required=op.body_required,
                    section="body",
                    name="",
                    description=described or "The request body.",
                )
            )
        args += [self._param(idents.claim(snake_ident(p.name)), p) for p in others]
        return args

    @staticmethod
    def _operation_doc(op: OperationDef, args: list[RustArg], response: str) -> list[str]:
        where = (
            f"`{op.method} {op.path}`, host function `{op.name}` (operationId `{op.operation_id}`)."
        )
        params = "\n".join(f"* `{a.ident}`: {' '.join(a.doc) or 'no description.'}" for a in args)
        answers = (
            f"Answers `Response<{response}>`: `body` on a 2xx status, `error` otherwise."
            if op.response is not None
            else "Declares no JSON answer: `body` is the raw JSON (`null` when empty) on a 2xx."
        )
        return doc_lines(op.summary, where, params, answers)

    def _param(self, ident: str, param: Param) -> RustArg:
        section = _KEYS[param.location]
        return self._arg(
            ident,
            param.type,
            required=param.required,
            section=section,
            name=param.name,
            description=param.description,
        )

    def _arg(
        self,
        ident: str,
        ref: TypeRef,
        *,
        required: bool,
        section: str,
        name: str,
        description: str = "The body.",
    ) -> RustArg:
        rust_type = self.borrowed(ref)
        if not required:
            rust_type = self.option(rust_type)
        doc = tuple(doc_lines(description))
        return RustArg(ident, rust_type, section, rust_string(name), doc, optional=not required)

    @staticmethod
    def _example(arg: RustArg) -> str:
        if arg.optional:
            return "None"
        if arg.type == "&str":
            return f'"{arg.ident}"'
        if arg.type.startswith("&"):
            return f"&{arg.ident}"
        return arg.ident

    # events and hooks -----------------------------------------------------

    def path(self, ref: TypeRef | None) -> str:
        """A type as macros print it (``$crate::models::LightEvent``), ``()`` for none."""
        if ref is None:
            return "()"
        if ref.kind == "model" and ref.model in self.names:
            return f"$crate::models::{self.names[ref.model]}"
        if ref.kind == "array" and ref.items is not None:
            return f"::std::vec::Vec<{self.path(ref.items)}>"
        if ref.kind == "string":
            return "::std::string::String"
        return _PRIMITIVES.get(ref.kind, f"$crate::{_VALUE}")

    def before_helpers(self, event: EventDef) -> BeforeHelpers | None:
        """proceed/reject/replace for a before-event's answer, when it has that shape:
        optional ``record`` (a model) and ``reject`` (an object whose one required
        field is the string ``reason``), any other fields optional."""
        result = self.object_model(event.result)
        if result is None or any(f.required or f.nullable for f in result.fields):
            return None
        rust = {f.name: r for f, r in zip(result.fields, self.model(result).fields, strict=True)}
        defs = {f.name: f for f in result.fields}
        if "record" not in defs or "reject" not in defs or defs["record"].type.kind != "model":
            return None
        reject = self.object_model(defs["reject"].type)
        if reject is None:
            return None
        reject_rust = {
            f.name: r for f, r in zip(reject.fields, self.model(reject).fields, strict=True)
        }
        reason = next((f for f in reject.fields if f.name == "reason"), None)
        if reason is None or reason.type.kind != "string" or not reason.required or reason.nullable:
            return None
        if any(f.required for f in reject.fields if f is not reason):
            return None
        record_type = self.owned(defs["record"].type)
        if rust["record"].type != self.option(record_type):
            return None  # boxed
        return BeforeHelpers(
            model=self.names[result.name],
            empty=tuple(r.ident for r in rust.values()),
            reject_field=rust["reject"].ident,
            reject_model=self.names[reject.name],
            reason=reject_rust["reason"].ident,
            reject_rest=tuple(r.ident for n, r in reject_rust.items() if n != "reason"),
            record_field=rust["record"].ident,
            record_type=record_type,
        )

    def object_model(self, ref: TypeRef | None) -> Model | None:
        """The object model ``ref`` names, if it names one."""
        if ref is None or ref.kind != "model":
            return None
        model = self.by_name.get(ref.model)
        return model if model is not None and model.kind == "object" else None


def _exports(mapper: _Mapper, pdk: PdkModel) -> tuple[list[RustExport], list[RustExport]]:
    def shown(ref: TypeRef | None) -> str:
        return mapper.path(ref).replace("$crate::models::", "").replace("$crate::", "")

    # Lifecycle events come first in pdk.events: their macros keep their exports' names.
    macros = namer(h.export for h in pdk.hooks)
    events = []
    for event in pdk.events:
        payload = shown(event.payload)
        events.append(
            RustExport(
                event.export,
                event.type,
                tuple(_event_doc(event, payload, shown(event.result))),
                mapper.path(event.payload),
                mapper.path(event.result) if event.before else "()",
                payload,
                shown(event.result) if event.before else "()",
                macro=macros.claim(escape_reserved(event.export, RESERVED_MACROS)),
                lifecycle=event.lifecycle,
                receives="the envelope" if event.enveloped else "the payload, bare",
            )
        )
    hooks = []
    for hook in pdk.hooks:
        doc = doc_lines(
            f"Exports `{hook.export}`, an HTTP hook: the handler takes a `{shown(hook.input)}` "
            f"and answers `Result<{shown(hook.output)}, Error>`."
        )
        hooks.append(
            RustExport(
                hook.export,
                hook.export,
                tuple(doc),
                mapper.path(hook.input),
                mapper.path(hook.output),
                shown(hook.input),
                shown(hook.output),
                macro=hook.export,
            )
        )
    return events, hooks


def _event_doc(event: EventDef, payload: str, result: str) -> list[str]:
    if not event.lifecycle:
        receives = (
            f"The handler takes a `{payload}`: the Standard Webhooks envelope "
            "(`id`, `type`, `timestamp`, `data`)."
            if event.enveloped
            else f"The handler takes a `{payload}`: the payload as the app sends it, bare "
            "(no envelope; the event id stays with hostwire)."
        )
        return doc_lines(
            f"Exports `{event.export}`, the webhook `{event.type}`.",
            event.summary,
            f"{receives} It runs from hostwire's outbox, at least once, in order per subject. "
            "It answers `Result<(), Error>`; after an error hostwire delivers the event again.",
        )
    when = "before" if event.before else "after"
    answer = (
        f"It answers `Result<{result}, Error>`: go on, "
        "go on with another record, or refuse the change."
        if event.before
        else "It answers `Result<(), Error>`; after an error hostwire delivers the event again."
    )
    return doc_lines(
        f"Exports `{event.export}`, the {when}-event `{event.type}`.",
        event.summary,
        f"The handler takes a `{payload}`. {answer}",
    )


def _event_example(
    mapper: _Mapper, event: EventDef, macro: str, helpers: dict[str, BeforeHelpers]
) -> list[str]:
    """A handler for ``event`` (defined by ``macro!``), as lines of Rust (for docs
    and the scaffold)."""
    payload = mapper.object_model(event.payload)
    fields = (
        {
            f.name: r.ident
            for f, r in zip(payload.fields, mapper.model(payload).fields, strict=True)
            # what format!("{}") can print as it is
            if f.type.kind == "string" and f.required and not f.nullable
        }
        if payload is not None
        else {}
    )
    if "type" in fields and "id" in fields:
        log = f'log::info(format!("{{}} {{}}", event.{fields["type"]}, event.{fields["id"]}));'
        param = "event"
    else:
        log = f'log::info("{event.export}");'
        param = "_event"  # unused: no warning
    result = mapper.object_model(event.result) if event.before else None
    if not event.before:
        answer = "Ok(())"
    elif result is not None and mapper.names[result.name] in helpers:
        answer = f"Ok({mapper.names[result.name]}::proceed())"
    elif result is not None and result.name in mapper.defaults:
        answer = "Ok(Default::default())"
    else:
        return []  # no answer we could write for any document
    return [f"{macro}!(|{param}| {{", f"    {log}", f"    {answer}", "});"]


@dataclass(frozen=True, slots=True)
class CargoFeature:
    """One Cargo feature of the PDK crate: an operation, an event, or a model they use."""

    name: str
    needs: tuple[str, ...]  # the features it turns on
    comment: str  # what it defines, for Cargo.toml


def _refs(ref: TypeRef | None) -> set[str]:
    """The models ``ref`` names directly (itself, or its array's items)."""
    while ref is not None and ref.kind == "array":
        ref = ref.items
    return {ref.model} if ref is not None and ref.kind == "model" else set()


def _features(
    mapper: _Mapper, pdk: PdkModel, operations: list[RustOperation], events: list[RustExport]
) -> tuple[list[CargoFeature], dict[str, str], dict[str, str]]:
    """The crate's features, the feature of each model (by document name; models the
    hooks use have none: they are always there) and of each operation and event.

    An operation's feature is its function's name (``api::list_lights`` →
    ``list_lights``), an event's its export's; each turns on the features of the
    models it reads or writes, and a model's those of the models its fields hold, so
    a plug-in compiles only what it uses. ``all`` (the default) turns on everything.
    """
    known = set(mapper.by_name)

    def closure(start: set[str]) -> set[str]:
        seen: set[str] = set()
        stack = [name for name in start if name in known]
        while stack:
            name = stack.pop()
            if name not in seen:
                seen.add(name)
                stack += [m for f in mapper.by_name[name].fields for m in _refs(f.type) & known]
        return seen

    always = closure({m for h in pdk.hooks for m in _refs(h.input) | _refs(h.output)})
    names = namer(("default", "all"))
    by_ident = {o.ident: names.claim(o.ident) for o in operations}
    by_export = {e.export: names.claim(e.export) for e in events}
    by_model = {
        m.name: names.claim(f"model_{mapper.names[m.name]}")
        for m in pdk.models
        if m.name not in always
    }

    def needs(models: set[str]) -> tuple[str, ...]:
        return tuple(sorted(by_model[m] for m in models & known if m in by_model))

    features = []
    for op, rust_op in zip(pdk.operations, operations, strict=True):
        used = _refs(op.body) | _refs(op.response) | {m for p in op.params for m in _refs(p.type)}
        features.append(
            CargoFeature(
                by_ident[rust_op.ident],
                needs(used),
                f"api::{rust_op.ident}: {op.method} {op.path}",
            )
        )
    for event, export in zip(pdk.events, events, strict=True):
        kind = "event" if event.lifecycle else "webhook"
        features.append(
            CargoFeature(
                by_export[export.export],
                needs(_refs(event.payload) | _refs(event.result)),
                f"{export.macro}!: the {kind} {event.type}",
            )
        )
    for model in pdk.models:
        if model.name in by_model:
            held = {m for f in model.fields for m in _refs(f.type)} - {model.name}
            features.append(
                CargoFeature(
                    by_model[model.name], needs(held), f"models::{mapper.names[model.name]}"
                )
            )
    return features, by_model, {**by_ident, **by_export}


def _respond(mapper: _Mapper, pdk: PdkModel) -> dict[str, object] | None:
    """``HttpPreHookOutput::respond(context, status, headers, body)`` (hooks.yaml's shapes):
    the struct literal's field lines."""
    hook = next((h for h in pdk.hooks if h.export == "http_pre_hook"), None)
    output = mapper.object_model(hook.output if hook else None)
    if output is None:
        return None
    fields = {f.name: r for f, r in zip(output.fields, mapper.model(output).fields, strict=True)}
    response = mapper.object_model(next(f.type for f in output.fields if f.name == "response"))
    if response is None or not {"context", "has_response"} <= set(fields):
        return None
    made_fields = zip(response.fields, mapper.model(response).fields, strict=True)
    rust = {f.name: r.ident for f, r in made_fields}
    values = {"status_code": "status_code", "headers": "headers", "body": "crate::base64(body)"}
    made = ", ".join(f"{rust[name]}: {value}" for name, value in values.items())
    lines = []
    for name, field_ in fields.items():
        if name == "context":
            lines.append(f"{field_.ident}: context")
        elif name == "response":
            lines.append(
                f"{field_.ident}: Some(crate::models::{mapper.names[response.name]} {{ {made} }})"
            )
        elif name == "has_response":
            lines.append(f"{field_.ident}: Some(true)")
        else:
            lines.append(f"{field_.ident}: None")
    return {
        "output": mapper.names[output.name],
        "flag": fields["has_response"].ident,
        "fields": lines,
    }


def _message_models(mapper: _Mapper, pdk: PdkModel) -> list[dict[str, str]]:
    """The hooks' requests and responses (models with free-JSON ``headers`` and a
    string ``body``): they get ``header(name)`` and ``body_bytes()``."""
    found: list[dict[str, str]] = []
    hook_models = {m for h in pdk.hooks for m in _refs(h.input) | _refs(h.output)}
    for name in sorted(hook_models):
        for held in [name, *(m for f in mapper.by_name[name].fields for m in _refs(f.type))]:
            model = mapper.by_name.get(held)
            if model is None or any(held == m["model"] for m in found):
                continue
            fields = {f.name: f for f in model.fields}
            rust = {
                f.name: r for f, r in zip(model.fields, mapper.model(model).fields, strict=True)
            }
            headers, body = fields.get("headers"), fields.get("body")
            if (
                headers is not None
                and headers.type.kind == "any"
                and headers.required
                and body is not None
                and body.type.kind == "string"
                and body.required
                and not body.nullable
            ):
                found.append(
                    {
                        "model": held,
                        "name": mapper.names[held],
                        "headers": rust["headers"].ident,
                        "body": rust["body"].ident,
                    }
                )
    return sorted(found, key=lambda m: m["name"])


def _context(pdk: PdkModel) -> dict[str, object]:
    mapper = _Mapper(pdk)
    idents = namer()
    operations = [mapper.operation(op, idents.claim(snake_ident(op.name))) for op in pdk.operations]
    events, hooks = _exports(mapper, pdk)
    features, model_features, export_features = _features(mapper, pdk, operations, events)
    operations = [replace(o, feature=export_features[o.ident]) for o in operations]
    events = [replace(e, feature=export_features[e.export]) for e in events]
    models = []
    for m in pdk.models:
        rust_model = mapper.model(m)
        rust_model.feature = model_features.get(m.name, "")
        models.append(rust_model)
    helpers: dict[str, BeforeHelpers] = {}
    for event in pdk.events:
        found = mapper.before_helpers(event)
        if found is not None and event.result is not None:
            found = replace(found, feature=model_features.get(event.result.model, ""))
            helpers.setdefault(found.model, found)
    # the example handler: an after-event (the scaffold's), else the first event
    chosen = next((e for e in pdk.events if not e.before), pdk.events[0] if pdk.events else None)
    example_event = next((e for e in events if chosen and e.export == chosen.export), None)
    # the example call: an operation that needs no arguments
    call = next((o for o in operations if all(a.optional for a in o.args)), None)
    return {
        # one line each: they appear in // comments
        "title": " ".join(pdk.title.split()),
        "version": " ".join(pdk.version.split()),
        "source": " ".join(pdk.source.split()),
        "crate": CRATE,
        "pdk_package": PACKAGE,
        "prelude": mapper.prelude,  # Option, String...: spelled out where a model shadows them
        "target": TARGET,
        "build": BUILD,
        "description": json.dumps(
            f"hostwire plug-in development kit for {pdk.title} {pdk.version} ({pdk.source})",
            ensure_ascii=False,
        ),
        "models": models,
        "features": features,
        "operations": operations,
        "events": events,
        "hooks": hooks,
        "before_helpers": [helpers[k] for k in sorted(helpers)],
        "event_example": (
            _event_example(mapper, chosen, example_event.macro, helpers)
            if chosen and example_event
            else []
        ),
        "example_event": example_event,
        "lifecycle_events": [e for e in events if e.lifecycle],
        "webhook_events": [e for e in events if not e.lifecycle],
        "example_call": call,
        "respond": _respond(mapper, pdk),
        "message_models": _message_models(mapper, pdk),
    }


_PDK_FILES = (
    "Cargo.toml",
    "README.md",
    "src/api.rs",
    "src/client.rs",
    "src/events.rs",
    "src/hooks.rs",
    "src/json.rs",
    "src/kernel.rs",
    "src/lib.rs",
    "src/models.rs",
    "src/plugin.rs",
)
_SCAFFOLD_FILES = ("Cargo.toml", "README.md", "src/lib.rs")


def _jobs(folder: str, files: Iterable[str], context: dict[str, object]) -> list[RenderJob]:
    return [RenderJob(f"{folder}{path}.j2", path, context) for path in files]


def jobs(model: PdkModel, spec: OpenAPIDocument) -> list[RenderJob]:
    """The PDK crate: Cargo.toml, README.md and src/*.rs."""
    return _jobs("", _PDK_FILES, _context(model))


def scaffold_jobs(model: PdkModel, spec: OpenAPIDocument, name: str) -> list[RenderJob]:
    """A plug-in crate named ``name`` on the PDK in its ``pdk/`` folder."""
    if name in RESERVED_NAMES:
        raise ConfigError(
            f'A Rust plug-in cannot be named "{name}": its PDK crate in pdk/ has that name.'
        )
    context = _context(model)
    # The commands in README.md and src/lib.rs run from the project folder.
    context.update(name=name, package=json.dumps(name), spec_path=shlex.quote(spec.source))
    example_event, call = context["example_event"], context["example_call"]
    context["scaffold_features"] = [
        item.feature
        for item in (example_event, call)
        if isinstance(item, RustExport | RustOperation)
    ]
    return _jobs("scaffold/", _SCAFFOLD_FILES, context)
