"""Reading WebAssembly modules: WAT to binary, imports and exports.

A file that is not a module at all (a native build, an archive, an error page
saved by a download) is named for what it looks like (``sniff``), so its error
says what to do rather than where a parser stopped.
"""

from __future__ import annotations

import re
import struct
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


# Whitespace and comments (";; line" and "(; block ;)") before WAT's first "(".
_WAT_START = re.compile(rb"\A(?:\s+|;;[^\n]*(?:\n|\Z)|\(;.*?;\))*\((?!;)", re.DOTALL)
_MAGIC = b"\0asm"
_CORE_VERSION = b"\x01\0\0\0"
_BUILD_FOR_WASM = "build for wasm32 (--target wasm32-unknown-unknown or wasm32-wasip1)"


class NotWebAssembly(ValueError):
    """The bytes are not a WebAssembly module; the message says what they look like."""


def looks_like_wat(data: bytes, name: str = "") -> bool:
    """True if ``data`` is WebAssembly text rather than a binary module."""
    if name.endswith(".wat"):
        return True
    return not data.startswith(_MAGIC) and _WAT_START.match(data[:65536]) is not None


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
    """Parse a binary module (or WAT). Raises ``ValueError`` if it is not valid wasm,
    ``NotWebAssembly`` (a ``ValueError``) if it is not WebAssembly at all."""
    if not looks_like_wat(wasm):
        looks = sniff(wasm)
        if looks is not None:
            raise NotWebAssembly(looks)
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


# -- what a file that is not a module looks like --------------------------------

_ELF_TYPES = {1: "an ELF object file (.o)", 2: "an ELF executable", 3: "an ELF shared library"}
_ELF_MACHINES = {
    3: "x86",
    8: "MIPS",
    20: "PowerPC",
    21: "PowerPC 64",
    40: "ARM",
    62: "x86-64",
    183: "AArch64",
    243: "RISC-V",
}
_PE_MACHINES = {0x14C: "x86", 0x8664: "x86-64", 0x1C0: "ARM", 0xAA64: "ARM64"}
_MACHO = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")
_ARCHIVES = (
    (b"PK\x03\x04", "a zip archive (.zip, .jar, .whl); unpack the .wasm from it"),
    (b"PK\x05\x06", "an empty zip archive; unpack the .wasm from a complete one"),
    (b"\x1f\x8b", "gzip-compressed data (.gz, .tar.gz); unpack the .wasm from it"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data (.zst); unpack the .wasm from it"),
    (b"\xfd7zXZ\x00", "xz-compressed data (.xz); unpack the .wasm from it"),
    (b"BZh", "bzip2-compressed data (.bz2); unpack the .wasm from it"),
)
_DOWNLOAD = "did a download get an error page instead of the module?"
_DT_FLAGS_1, _DF_1_PIE, _PT_DYNAMIC = 0x6FFFFFFB, 0x08000000, 2


def sniff(data: bytes) -> str | None:
    """What ``data`` looks like when it is surely not a WebAssembly module, with what to
    do (``"this looks like an ELF shared library for x86-64; build for wasm32 ..."``);
    None when it starts like a core module, so the parser's own reason is better."""
    if not data:
        return "the file is empty (0 bytes); was the build interrupted?"
    if data.startswith(_MAGIC):
        if data[4:8] == _CORE_VERSION or len(data) < 8:
            return None
        if data[6:8] == b"\x01\0":  # layer 1: the component model
            return (
                "this is a WebAssembly component (wasm32-wasip2, the component model), not a "
                "core module; build for wasm32-wasip1 or wasm32-unknown-unknown"
            )
        return None
    looks = _binary_kind(data)
    if looks is not None:
        return looks
    text = _text_kind(data)
    if text is not None:
        return text
    return (
        f"it does not start with the \\0asm of a module (it starts {data[:8].hex(' ')}); "
        "a plug-in is a .wasm module or WebAssembly text (.wat)"
    )


def _binary_kind(data: bytes) -> str | None:
    if data.startswith(b"\x7fELF"):
        return f"this looks like {_elf_kind(data)}; {_BUILD_FOR_WASM}"
    if data[:4] in _MACHO or (data.startswith(b"\xca\xfe\xba\xbe") and _fat_macho(data)):
        return f"this looks like a Mach-O binary (a macOS build); {_BUILD_FOR_WASM}"
    if data.startswith(b"\xca\xfe\xba\xbe"):
        return "this looks like a Java class file; a plug-in is a WebAssembly module"
    if data.startswith(b"MZ"):
        return f"this looks like {_pe_kind(data)}; {_BUILD_FOR_WASM}"
    for magic, kind in _ARCHIVES:
        if data.startswith(magic):
            return f"this looks like {kind}"
    if data[257:262] == b"ustar":
        return "this looks like a tar archive; unpack the .wasm from it"
    return None


def _elf_kind(data: bytes) -> str:
    wide, order = data[4:5] == b"\x02", "<" if data[5:6] != b"\x02" else ">"
    try:
        kind, machine = struct.unpack_from(f"{order}HH", data, 16)
        if kind == 3 and _elf_pie(data, order, wide=wide):
            kind = 2  # a position-independent executable is ET_DYN too
    except struct.error:
        return "an ELF file (cut short)"
    what = _ELF_TYPES.get(kind, "an ELF file")
    arch = _ELF_MACHINES.get(machine)
    return f"{what} for {arch}" if arch else what


def _elf_pie(data: bytes, order: str, *, wide: bool) -> bool:
    """True when the dynamic section has DF_1_PIE: an executable, not a library."""
    # (e_phoff, e_phentsize/e_phnum), a program header's (p_offset, p_filesz), a dynamic entry.
    if wide:
        (phoff,) = struct.unpack_from(f"{order}Q", data, 32)
        size, count = struct.unpack_from(f"{order}HH", data, 54)
        segment, entry = f"{order}4xQ16xQ", f"{order}qQ"
    else:
        (phoff,) = struct.unpack_from(f"{order}I", data, 28)
        size, count = struct.unpack_from(f"{order}HH", data, 42)
        segment, entry = f"{order}I8xI", f"{order}iI"
    step = struct.calcsize(entry)
    for at in range(phoff, phoff + min(count, 256) * size, size):
        if struct.unpack_from(f"{order}I", data, at)[0] != _PT_DYNAMIC:
            continue
        offset, length = struct.unpack_from(segment, data, at + 4)
        for place in range(offset, min(offset + length, len(data)) - step + 1, step):
            tag, value = struct.unpack_from(entry, data, place)
            if tag == 0:
                break
            if tag == _DT_FLAGS_1:
                return bool(value & _DF_1_PIE)
    return False


def _fat_macho(data: bytes) -> bool:
    # Java class files share the magic; there the next word is a version (45 and up).
    return len(data) >= 8 and struct.unpack_from(">I", data, 4)[0] < 45


def _pe_kind(data: bytes) -> str:
    try:
        (offset,) = struct.unpack_from("<I", data, 0x3C)
        if data[offset : offset + 4] != b"PE\0\0":
            return "a DOS executable (MZ)"
        machine, flags = struct.unpack_from("<H16xH", data, offset + 4)
    except struct.error:
        return "a DOS or Windows executable (MZ)"
    what = "a Windows DLL (PE)" if flags & 0x2000 else "a Windows executable (PE)"
    arch = _PE_MACHINES.get(machine)
    return f"{what} for {arch}" if arch else what


def _text_kind(data: bytes) -> str | None:
    head = data[:4096]
    if b"\0" in head:
        return None
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    if not text.replace("\n", "").replace("\r", "").replace("\t", "").isprintable():
        return None  # control characters: binary data of a kind not named here
    lower = text[:1024].lower()
    if "<html" in lower or lower.startswith("<!doctype html"):
        return f"this looks like an HTML page; {_DOWNLOAD}"
    if lower.startswith("<"):
        return f"this looks like an XML document; {_DOWNLOAD}"
    if lower.startswith(("{", "[")):
        return f"this looks like JSON text; {_DOWNLOAD}"
    if lower.startswith("version https://git-lfs"):
        return "this is a Git LFS pointer, not the file it points to; run `git lfs pull`"
    first = text.splitlines()[0][:40] if text.strip() else ""
    return (
        f"this looks like a text file (it starts {first!r}); "
        "a plug-in is a .wasm module or WebAssembly text (.wat)"
    )


# -- rewriting a module's imports ---------------------------------------------------

_IMPORT_SECTION = 2


def _uleb(data: bytes, at: int) -> tuple[int, int]:
    """The unsigned LEB128 number at ``at`` and the offset after it."""
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("a LEB128 number runs past the end of its section")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _leb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _name(data: bytes, at: int) -> tuple[str, int]:
    length, at = _uleb(data, at)
    return data[at : at + length].decode("utf-8"), at + length


def _limits_end(data: bytes, at: int) -> int:
    flags = data[at]
    _, at = _uleb(data, at + 1)
    if flags & 1:
        _, at = _uleb(data, at)
    return at


def _import_end(data: bytes, at: int) -> int:
    """The offset after an import's descriptor (the kind byte is at ``at``)."""
    kind = data[at]
    at += 1
    if kind == 0:  # function: a type index
        return _uleb(data, at)[1]
    if kind == 1:  # table: a reference type, then limits
        return _limits_end(data, at + 1)
    if kind == 2:  # memory: limits
        return _limits_end(data, at)
    if kind == 3:  # global: a value type and mutability
        return at + 2
    if kind == 4:  # tag: an attribute and a type index
        return _uleb(data, at + 1)[1]
    raise ValueError(f"an import of unknown kind 0x{kind:02x}")


def rename_imports(wasm: bytes, moves: dict[tuple[str, str], str]) -> bytes:
    """``wasm`` with each function import ``(module, name)`` in ``moves`` imported from
    the module named by its value instead; everything else is unchanged, byte for byte.

    The module must be valid (``inspect_module`` has read it).
    """
    if not wasm.startswith(_MAGIC):
        raise ValueError("not a binary WebAssembly module")
    at = 8
    while at < len(wasm):
        section = wasm[at]
        size, body = _uleb(wasm, at + 1)
        end = body + size
        if section != _IMPORT_SECTION:
            at = end
            continue
        count, place = _uleb(wasm, body)
        parts = [_leb(count)]
        changed = False
        for _ in range(count):
            module, after_module = _name(wasm, place)
            name, after_name = _name(wasm, after_module)
            descriptor_end = _import_end(wasm, after_name)
            target = moves.get((module, name)) if wasm[after_name] == 0 else None
            if target is None:
                parts.append(wasm[place:descriptor_end])
            else:
                encoded = target.encode("utf-8")
                parts += [_leb(len(encoded)), encoded, wasm[after_module:descriptor_end]]
                changed = True
            place = descriptor_end
        if not changed:
            return wasm
        payload = b"".join(parts)
        return wasm[:at] + bytes([section]) + _leb(len(payload)) + payload + wasm[end:]
    return wasm
