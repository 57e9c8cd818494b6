"""Strict JSON from bytes a plug-in wrote: UTF-8 only, no NaN, bounded nesting.

``json.loads(bytes)`` guesses the encoding (UTF-16 and UTF-32 too, so invalid
UTF-8 is reported as a ``'utf-16-le' codec`` error), accepts ``NaN`` and
``Infinity`` (which cannot be written back as JSON) and raises
``RecursionError`` on deep nesting. Every place that decodes what a plug-in
wrote uses ``plugin_json``, ``parse_json`` or ``loads_strict`` instead.

orjson does the work where it gives the same answer (it is strict about UTF-8
and NaN too, and several times faster); the stdlib parses what orjson would
answer differently (integers past 64 bits, which orjson turns into floats)
and what it refuses, so the answers and the reasons stay the stdlib's.
``dumps`` is compact JSON in UTF-8, by orjson where it can.
"""

from __future__ import annotations

import json
import re
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover (a dependency; the stdlib still answers alike)
    orjson = None  # type: ignore[assignment]

from hostwire._errors import PluginOutputError

# As serde_json's default: deeper JSON is refused before any code walks it.
MAX_DEPTH = 128


class JsonProblem(ValueError):
    """Bytes that are not strict JSON; the message is one line saying why.

    ``detail`` is the reason without a subject ("is not UTF-8 (...)"), so that
    callers can name what was parsed ("its answer is not UTF-8 (...)").
    """

    def __init__(self, detail: str) -> None:
        super().__init__(f"it {detail}")
        self.detail = detail


class _Constant(ValueError):
    pass


def _no_constants(name: str) -> Any:
    raise _Constant(f"{name} is not a JSON number")


def _too_deep(value: Any, max_depth: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


# An integer this long may not fit 64 bits (a digit run in a string matches too:
# then the stdlib parses, which costs time, not correctness).
_LONG_DIGITS = re.compile(rb"\d{20}")


def dumps(value: Any) -> bytes:
    """Compact JSON in UTF-8 (non-ASCII characters as they are)."""
    if orjson is not None:
        try:
            return orjson.dumps(value)
        except TypeError:
            pass  # integers past 64 bits, keys that are not strings: the stdlib's way
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def loads_strict(data: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data`` as JSON in UTF-8, at most ``max_depth`` arrays/objects deep.

    Raises ``JsonProblem`` saying what is wrong: not UTF-8, not JSON, nested too deeply.
    """
    if orjson is not None and not _LONG_DIGITS.search(data):
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the stdlib's parse below says why, in its words
        else:
            return _depth_checked(data, value, max_depth)
    return _depth_checked(data, _loads_stdlib(data, max_depth), max_depth)


def _depth_checked(data: bytes, value: Any, max_depth: int) -> Any:
    # Only a document with more brackets than the limit can be too deep.
    if (
        isinstance(value, (dict, list))
        and data.count(b"[") + data.count(b"{") > max_depth
        and _too_deep(value, max_depth)
    ):
        raise JsonProblem(f"is JSON nested too deeply (over {max_depth} levels)")
    return value


def _loads_stdlib(data: bytes, max_depth: int) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonProblem(
            f"is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from exc
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError as exc:
        raise JsonProblem(f"is JSON nested too deeply (over {max_depth} levels)") from exc
    except (_Constant, json.JSONDecodeError) as exc:
        raise JsonProblem(f"is not JSON: {exc}") from exc
    except ValueError as exc:  # an integer past Python's digit limit
        raise JsonProblem(f"is not JSON: {exc}") from exc
    return value


def parse_json(data: bytes, what: str) -> Any:
    """``loads_strict`` whose ``ValueError`` names ``what`` (e.g. "its answer")."""
    try:
        return loads_strict(data)
    except JsonProblem as exc:
        raise ValueError(f"{what} {exc.detail}") from None


def plugin_json(output: bytes, *, plugin: str, export: str | None) -> Any:
    """A plug-in's output parsed by ``loads_strict``; a problem is a ``PluginOutputError``."""
    try:
        return loads_strict(output)
    except JsonProblem as exc:
        where = f'Plug-in "{plugin}" export "{export}"' if export else f'Plug-in "{plugin}"'
        raise PluginOutputError(
            f"{where} returned invalid JSON: {exc}.", plugin=plugin, export=export
        ) from exc
