"""Reading WebAssembly modules: WAT to binary, imports and exports."""

from __future__ import annotations

from dataclasses import dataclass

import wasmtime

from hostwire._text import one_line

WASI_MODULES = frozenset({"wasi_snapshot_preview1", "wasi_unstable"})
KERNEL_MODULE = "extism:host/env"
USER_MODULE = "extism:host/user"

_ENGINE = wasmtime.Engine()


@dataclass(frozen=True, slots=True)
class Import:
    """One import of a module, with a printable signature for functions."""

    module: str
    name: str
    kind: str
    signature: str


@dataclass(frozen=True, slots=True)
class Export:
    """One export of a module."""

    name: str
    kind: str
    signature: str


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """What a compiled module imports and exports."""

    imports: tuple[Import, ...]
    exports: tuple[Export, ...]

    @property
    def function_exports(self) -> frozenset[str]:
        return frozenset(e.name for e in self.exports if e.kind == "func")

    @property
    def uses_wasi(self) -> bool:
        return any(i.module in WASI_MODULES for i in self.imports)

    def imports_from(self, module: str) -> tuple[Import, ...]:
        return tuple(i for i in self.imports if i.module == module)


def looks_like_wat(data: bytes, name: str = "") -> bool:
    """True if ``data`` is WebAssembly text rather than a binary module."""
    if name.endswith(".wat"):
        return True
    return not data.startswith(b"\0asm") and data.lstrip()[:1] == b"("


def to_binary(data: bytes, name: str = "") -> bytes:
    """Return the binary module for ``data``, converting WAT if needed.

    Raises ``ValueError`` with wasmtime's reason if the text does not parse.
    """
    if not looks_like_wat(data, name):
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the WebAssembly text is not UTF-8 ({exc.reason})") from exc
    try:
        return bytes(wasmtime.wat2wasm(text))
    except wasmtime.WasmtimeError as exc:
        raise ValueError(one_line(str(exc))) from exc


def _signature(ty: object) -> tuple[str, str]:
    if isinstance(ty, wasmtime.FuncType):
        params = ", ".join(str(p) for p in ty.params)
        results = ", ".join(str(r) for r in ty.results)
        return "func", f"({params}) -> ({results})"
    if isinstance(ty, wasmtime.MemoryType):
        return "memory", ""
    if isinstance(ty, wasmtime.GlobalType):
        return "global", str(ty.content)
    if isinstance(ty, wasmtime.TableType):
        return "table", ""
    return type(ty).__name__.lower(), ""


def inspect_module(wasm: bytes) -> ModuleInfo:
    """Parse a binary module. Raises ``ValueError`` if it is not valid wasm."""
    try:
        module = wasmtime.Module(_ENGINE, wasm)
    except wasmtime.WasmtimeError as exc:
        raise ValueError(one_line(str(exc))) from exc
    imports = []
    for imp in module.imports:
        kind, sig = _signature(imp.type)
        imports.append(Import(imp.module, imp.name or "", kind, sig))
    exports = []
    for exp in module.exports:
        kind, sig = _signature(exp.type)
        exports.append(Export(exp.name, kind, sig))
    return ModuleInfo(tuple(imports), tuple(exports))
