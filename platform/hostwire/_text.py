"""Turning multi-line runtime messages into one readable line."""

from __future__ import annotations

import re

_NUMBERED = re.compile(r"^\d+:\s*")
_FRAME = re.compile(r"^\d+:\s+(0x[0-9a-f]+ - |<unknown>|\S+!)")
_EXCERPT = re.compile(r"^(\d+\s*)?\|")
_LOCATION = re.compile(r"^-->\s*\S*?:(\d+):(\d+)")


def one_line(text: str) -> str:
    """Condense an anyhow/wasmtime style report into one line.

    ``"failed\\n\\nCaused by:\\n    0: a\\n    1: b"`` becomes ``"failed: a: b"``;
    a ``--> <anon>:L:C`` marker becomes ``(line L, column C)``; wasm and Rust
    backtraces and source excerpts are dropped.
    """
    parts: list[str] = []
    for raw in text.strip().splitlines():
        line = raw.strip()
        if line.startswith("Stack backtrace:"):
            break
        if not line or line == "Caused by:" or _EXCERPT.match(line) or _FRAME.match(line):
            continue
        location = _LOCATION.match(line)
        if location:
            where = f"(line {location[1]}, column {location[2]})"
            parts[-1:] = [f"{parts[-1]} {where}" if parts else where]
            continue
        line = _NUMBERED.sub("", line).removesuffix("at wasm backtrace:").rstrip(" :")
        if line and line not in parts:
            parts.append(line)
    return ": ".join(parts) if parts else "unknown error"


def caused_by(text: str) -> str | None:
    """The 'Caused by:' part of a report as one line, or None if it has none."""
    _, marker, rest = text.partition("Caused by:")
    if not marker:
        return None
    return one_line(rest)


def yaml_problem(exc: Exception) -> str:
    """A YAML parse error as ``" at line L, column C: what"`` (the place when known)."""
    mark = getattr(exc, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{at}: {getattr(exc, 'problem', None) or exc}"
