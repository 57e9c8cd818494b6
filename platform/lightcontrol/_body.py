"""Request bodies as JSON, within limits, so that odd input is a 400 and never a 500.

Python's ``json`` module takes things JSON does not allow or that break later:
``NaN`` and ``Infinity``, numbers too long for ``int()`` (over 4300 digits) or
beyond a float's range, nesting deep enough to exhaust the stack, and
``"\\ud800"``, a lone UTF-16 surrogate that no UTF-8 encoder (SQLite's
included) accepts. Each is refused here with one sentence naming the problem.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 64  # arrays and objects inside each other
MAX_NUMBER_CHARS = 100  # the text of one number
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class BadJson(ValueError):
    """The body is not JSON the API takes; the message says why, in one sentence."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    @property
    def details(self) -> list[dict[str, str]]:
        return [{"field": self.field, "message": str(self)}] if self.field is not None else []


def _number(text: str, kind: type[int] | type[float]) -> int | float:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadJson(
            f"The body has a number of {len(text)} characters; "
            f"at most {MAX_NUMBER_CHARS} are taken."
        )
    value = kind(text)
    if not math.isfinite(value):
        raise BadJson(f"The body has the number {text}, which is out of range.")
    return value


def _constant(name: str) -> Any:
    raise BadJson(f"The body is not valid JSON: {name} is not a JSON value.")


def _pointer(parts: list[str]) -> str:
    escaped = (p.replace("~", "~0").replace("/", "~1") for p in parts)
    text = "/" + "/".join(escaped) if parts else "/"
    # Quote a short prefix only, with any lone surrogate made printable.
    return text[:100].encode("utf-8", "backslashreplace").decode("utf-8")


def _check(value: Any) -> None:
    """Refuse nesting over MAX_DEPTH and strings (keys too) with a lone surrogate."""
    stack: list[tuple[Any, list[str]]] = [(value, [])]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                field = _pointer(where)
                raise BadJson(
                    f"The body holds a lone UTF-16 surrogate at {field}, "
                    "which is not Unicode text.",
                    field,
                ) from None
        elif isinstance(item, dict | list) and len(where) >= MAX_DEPTH:
            raise BadJson(f"The body is nested more than {MAX_DEPTH} levels deep.")
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, where))
                stack.append((child, [*where, key]))
        elif isinstance(item, list):
            stack.extend((child, [*where, str(index)]) for index, child in enumerate(item))


def parse_json(raw: bytes) -> Any:
    """``raw`` (UTF-8 JSON) as Python data, or ``BadJson`` saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadJson(
            f"The body is not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}."
        ) from None
    try:
        value = json.loads(
            text,
            parse_int=lambda s: _number(s, int),
            parse_float=lambda s: _number(s, float),
            parse_constant=_constant,
        )
    except RecursionError:
        raise BadJson(f"The body is nested more than {MAX_DEPTH} levels deep.") from None
    except json.JSONDecodeError as exc:
        raise BadJson(f"The body is not valid JSON: {exc}.") from None
    # Both checks walk the value: only when the raw text says they might find something.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH or _SURROGATE_ESCAPE.search(raw):
        _check(value)
    return value
