"""JSON that a plug-in wrote, decoded strictly: UTF-8 only, no NaN, bounded nesting.

``json.loads`` on bytes guesses UTF-16 or UTF-32 from the first bytes, so bad
UTF-8 was reported as a ``'utf-16-le' codec`` error; it accepts ``NaN``, which
cannot be written back as JSON; and deep nesting raises ``RecursionError``.
Here each is a ``ValueError`` with one clear sentence.
"""

from __future__ import annotations

import json
from typing import Any


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json(data: bytes, what: str) -> Any:
    """``data`` as JSON; ``what`` names it in the error (e.g. "its answer")."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{what} is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(f"{what} is JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN, or an integer past the digit limit
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
