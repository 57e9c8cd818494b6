"""Reading a configuration document with its size, nesting and alias expansion bounded.

YAML aliases share one object, so a "billion laughs" file parses into a small
graph that only explodes when something serializes it (Extism config is
JSON). The loader counts what every value would expand to while it composes
the document, so a bomb is refused before anything is expanded, and the
checks below measure plug-in config values the same way: each shared value is
measured once.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_FILE_BYTES = 4 * 1024 * 1024
"""A configuration file larger than this is refused before it is parsed."""
MAX_DEPTH = 64
"""Lists and mappings nested deeper than this are refused."""
MAX_VALUES = 500_000
"""Values a YAML document may hold once its aliases are expanded (each use counts)."""


class DocumentError(ValueError):
    """A document is too large, too deep or refers to itself; ``loc`` says where."""

    def __init__(self, reason: str, loc: tuple[int | str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.loc = loc


def read_text(path: Path) -> str:
    """The file's text, refused when it is larger than ``MAX_FILE_BYTES``."""
    with path.open("rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise DocumentError(
            f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB "
            f"({MAX_FILE_BYTES} bytes); a configuration this large is refused"
        )
    return data.decode("utf-8")


def parse_json(text: str) -> Any:
    """``json.loads`` that refuses nesting deeper than ``MAX_DEPTH``."""
    try:
        value = json.loads(text)
    except RecursionError:  # far deeper than MAX_DEPTH: the parser gave up
        raise DocumentError(f"values are nested more than {MAX_DEPTH} levels deep") from None
    try:
        json_size(value, len(text) * 2 + 2)  # JSON has no aliases: only the depth can fail
    except DocumentError as exc:
        raise DocumentError(f"{dotted(exc.loc) or 'the document'} {exc.reason}") from None
    return value


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses deep nesting, recursive aliases and alias bombs.

    Refusals are ``DocumentError`` naming the line and column.
    """
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        # id(node) -> how many values the node stands for with its aliases expanded.
        self._values: dict[int, int] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor)
            # A collection is open (no end mark yet) while its children are composed.
            if target is not None and target.end_mark is None:
                raise _refused(
                    f"alias *{event.anchor} refers to a value that contains it (a recursive alias)",
                    event.start_mark,
                )
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise _refused(f"values are nested more than {MAX_DEPTH} levels deep", event.start_mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            self._count(node)
        return node

    def _count(self, node: Node) -> None:
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = node.value
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        values = 1 + sum(self._values[id(child)] for child in children)
        if values > MAX_VALUES:
            raise _refused(
                f"this value expands to more than {MAX_VALUES} values once its aliases "
                "are expanded (each use of an alias counts)",
                node.start_mark,
            )
        self._values[id(node)] = values


def _refused(reason: str, mark: Any) -> DocumentError:
    if mark is None:
        return DocumentError(reason)
    return DocumentError(f"at line {mark.line + 1}, column {mark.column + 1}: {reason}")


def json_size(value: Any, limit: int) -> int:
    """About how many bytes ``value`` takes as JSON, refusing it past ``limit``.

    Shared values (YAML aliases) are measured once and counted at every use, so
    the cost is that of the distinct values, not of the expansion. Raises
    ``DocumentError`` naming the place (``loc``) for a value over the limit,
    one that contains itself, one nested deeper than ``MAX_DEPTH``, or one
    JSON cannot carry (a YAML date, set or binary).
    """
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def measure(item: Any, loc: tuple[int | str, ...]) -> int:
        if isinstance(item, str):
            return len(item.encode("utf-8", "surrogatepass")) + 2
        if item is None or isinstance(item, bool):
            return 5
        if isinstance(item, int):
            return item.bit_length() // 3 + 2
        if isinstance(item, float):
            return 24
        if not isinstance(item, list | tuple | dict):
            raise DocumentError(
                f"is a {type(item).__name__} value, which JSON cannot carry; quote it", loc
            )
        key = id(item)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise DocumentError("contains itself (a recursive alias)", loc)
        if len(loc) >= MAX_DEPTH:
            raise DocumentError(f"is nested more than {MAX_DEPTH} levels deep", loc)
        open_.add(key)
        entries: list[tuple[Hashable, Any]] = (
            list(item.items()) if isinstance(item, dict) else list(enumerate(item))
        )
        total = 2
        for name, child in entries:
            total += measure(child, (*loc, _part(name))) + 1
            if isinstance(item, dict):
                total += len(str(name).encode("utf-8", "surrogatepass")) + 3
            if total > limit:
                raise DocumentError(
                    f"expands to more than {_size(limit)} as JSON "
                    "(each use of a YAML alias counts)",
                    loc,
                )
        open_.discard(key)
        sizes[key] = total
        return total

    return measure(value, ())


def dotted(loc: tuple[int | str, ...]) -> str:
    """``("config", "a", 0)`` as ``config.a[0]``; a long path ends in ``...``."""
    text = ""
    for part in loc[:8]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text + ("..." if len(loc) > 8 else "")


def _part(name: Hashable) -> int | str:
    return name if isinstance(name, int | str) else str(name)


def _size(limit: int) -> str:
    mib = limit / (1024 * 1024)
    return f"{mib:g} MiB ({limit} bytes)" if mib >= 1 else f"{limit} bytes"
