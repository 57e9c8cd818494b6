"""Names for generated code, shared by the model and every PDK language.

Text from an OpenAPI document (operationIds, schema, member, parameter and
enum names) is split into words, put in a case and made unique in a scope.
Each language module adds its own rules on top: reserved words, what a name
that starts with a digit gets in front, which numbers a clash gets.

``hostwire.snake_case`` (Contract 1's host function names, in ``_hostapi``)
splits words by the same rule; ``_hostapi`` may not import ``_pdk``, so it has
its own copy, and ``tests/pdk/test_naming.py`` checks that the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterable

_SEPARATOR = r"[^A-Za-z0-9]+"  # anything but ASCII letters and digits: "_", "-", " ", "é"
_CASE_CHANGE = r"(?<=[a-z0-9])(?=[A-Z])"  # lightId → light|Id, x2Y → x2|Y
_ACRONYM_END = r"(?<=[A-Z])(?=[A-Z][a-z])"  # HTTPStatus → HTTP|Status
_WORDS = re.compile(f"{_SEPARATOR}|{_CASE_CHANGE}|{_ACRONYM_END}")
_WORDS_KEEPING_ACRONYMS = re.compile(f"{_SEPARATOR}|{_CASE_CHANGE}")

# How a clash is numbered: (wanted name, 2 or more) → a candidate.
Numbering = Callable[[str, int], str]


def words(text: str, *, split_acronyms: bool = True) -> list[str]:
    """The words of ``text``, their case kept: ``getHTTPResponse`` → get, HTTP, Response.

    Words are runs of ASCII letters and digits, split where a lower-case letter
    or a digit meets an upper-case one (``light_id``, ``lightId`` → light, Id)
    and, unless ``split_acronyms`` is false, before the last capital of an
    acronym that a word follows (``HTTPStatus`` → HTTP, Status; kept whole:
    HTTPStatus).
    """
    pattern = _WORDS if split_acronyms else _WORDS_KEEPING_ACRONYMS
    return [word for word in pattern.split(text) if word]


def snake_case(text: str, *, digit_prefix: str = "") -> str:
    """``getHTTPResponse`` → ``get_http_response``; ``""`` when ``text`` has no words.

    A name that would start with a digit gets ``digit_prefix`` in front.
    """
    return _lead("_".join(words(text)).lower(), digit_prefix)


def upper_snake(text: str, *, split_acronyms: bool = True, digit_prefix: str = "") -> str:
    """``X-Request-Id`` → ``X_REQUEST_ID``; ``""`` when ``text`` has no words.

    ``split_acronyms`` as for ``words``; a name that would start with a digit
    gets ``digit_prefix`` in front.
    """
    joined = "_".join(words(text, split_acronyms=split_acronyms)).upper()
    return _lead(joined, digit_prefix)


def camel_case(text: str, *, digit_prefix: str = "") -> str:
    """``light_id`` → ``lightId``, ``HTTPStatus`` → ``httpStatus``; ``""`` when
    ``text`` has no words.

    The first word is lower-cased whole if it is all capitals, else only its
    first letter (``getHTTPResponse`` stays); the others get a capital first
    letter. A name that would start with a digit gets ``digit_prefix`` in front.
    """
    parts = words(text)
    if not parts:
        return ""
    first = parts[0]
    first = first.lower() if first.isupper() else first[:1].lower() + first[1:]
    return _lead(first + "".join(_capitalized(w) for w in parts[1:]), digit_prefix)


def pascal_case(text: str, *, digit_prefix: str = "") -> str:
    """``light_id`` → ``LightId``, ``getHTTPResponse`` → ``GetHTTPResponse``; ``""``
    when ``text`` has no words.

    Each word gets a capital first letter, the rest of it kept. A name that
    would start with a digit gets ``digit_prefix`` in front.
    """
    return _lead("".join(_capitalized(w) for w in words(text)), digit_prefix)


def type_name(text: str) -> str:
    """The PascalCase name the model and the PDKs give types and their kin: a
    name that would start with a digit gets a ``T`` (``2fa`` → ``T2fa``)."""
    return pascal_case(text, digit_prefix="T")


def escape_reserved(name: str, reserved: Container[str]) -> str:
    """``name`` with ``_`` appended if it is reserved: ``class`` → ``class_``."""
    return f"{name}_" if name in reserved else name


def append_number(name: str, number: int) -> str:
    """The default numbering of a clash: ``Light`` → ``Light2``."""
    return f"{name}{number}"


def underscore_number(name: str, number: int) -> str:
    """The numbering of a clash in snake_case: ``light_id`` → ``light_id_2``."""
    return f"{name}_{number}"


class Namer:
    """Hands out names unique in one scope.

    A wanted name that is taken (handed out, or given as taken) or reserved
    gets numbered from 2 (``append_number`` unless told otherwise) until it is
    neither. Reserved names are never handed out, but are not taken either:
    ``reserved`` may be any container, e.g. one that matches a pattern.
    """

    def __init__(
        self,
        taken: Iterable[str] = (),
        *,
        reserved: Container[str] = frozenset(),
        numbering: Numbering = append_number,
    ) -> None:
        self._taken = set(taken)
        self._reserved = reserved
        self._numbering = numbering

    def claim(self, wanted: str) -> str:
        """``wanted``, or the first numbered name that is free; it is taken from now on."""
        name, number = wanted, 2
        while name in self._taken or name in self._reserved:
            name = self._numbering(wanted, number)
            number += 1
        self._taken.add(name)
        return name

    def take(self, names: Iterable[str]) -> None:
        """Mark ``names`` as taken without handing them out."""
        self._taken.update(names)

    @property
    def taken(self) -> frozenset[str]:
        """Every name taken so far."""
        return frozenset(self._taken)

    def __contains__(self, name: object) -> bool:
        return name in self._taken


def _capitalized(word: str) -> str:
    return word[:1].upper() + word[1:]


def _lead(name: str, digit_prefix: str) -> str:
    return f"{digit_prefix}{name}" if name[:1].isdigit() else name
