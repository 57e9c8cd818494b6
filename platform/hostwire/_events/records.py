"""Rows of tracked SQLAlchemy models as JSON records, and back.

A record holds every mapped column attribute of the class, by attribute
name, as JSON: a datetime becomes an RFC 3339 string (a naive one is taken
as UTC, the way SQLAlchemy's ``DateTime`` keeps it on SQLite), a date or a
time ISO 8601 text, a ``Decimal`` its exact decimal text, a UUID its text,
an enum member the text its column stores, bytes base64, an ``Interval`` its
seconds. A record a plug-in hands back becomes Python values again by the
column's type. ``RecordShape.schema`` derives a JSON schema from the columns
(types, nullability, lengths, enums) for models without a schema of their own.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapper

DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"


class RecordShape:
    """How the rows of one mapped class become JSON records and back."""

    def __init__(self, mapper: Mapper[Any], model: str) -> None:
        self.mapper = mapper
        self.model = model
        self.columns: dict[str, sa.Column[Any]] = {}
        for prop in mapper.column_attrs:
            column = prop.columns[0]
            if isinstance(column, sa.Column) and column.table is not None:
                self.columns[prop.key] = column
        by_column: dict[Any, str] = {column: key for key, column in self.columns.items()}
        self.primary = tuple(by_column[column] for column in mapper.primary_key)
        self.generated = frozenset(
            key for key, column in self.columns.items() if _database_fills(column)
        )

    def record(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON record of ``values`` (attribute name → Python value)."""
        return {key: self.to_json(key, values.get(key)) for key in self.columns}

    def to_json(self, key: str, value: Any) -> Any:
        return _to_json(value, self.columns[key].type, f'{self.model} field "{key}"')

    def from_json(self, key: str, value: Any) -> Any:
        """The Python value for column ``key`` of JSON ``value``; ValueError if it cannot be."""
        return _from_json(value, self.columns[key].type)

    def schema(self, *, v30: bool = False) -> dict[str, Any]:
        """A JSON schema of the record, derived from the mapped columns."""
        properties = {}
        for key, column in self.columns.items():
            prop = _column_schema(column.type, v30=v30)
            if column.nullable:
                prop = nullable(prop, v30=v30)
            text = column.comment or column.doc
            if text:
                prop = {**prop, "description": text}
            properties[key] = prop
        return {
            "type": "object",
            "description": f"A {self.model} record: the columns of {self.mapper.class_.__name__}.",
            "required": list(self.columns),
            "additionalProperties": False,
            "properties": properties,
        }


def _database_fills(column: sa.Column[Any]) -> bool:
    """Whether the database or the flush, not the object, may make the value of a new
    row's column: a server default, a sequence, an autoincrement id, or a foreign
    key that a relationship fills in once the related row has its id."""
    if column.server_default is not None or column.foreign_keys:
        return True
    default = column.default
    if default is not None:
        return bool(default.is_sequence or default.is_clause_element)
    return column.table.autoincrement_column is column


def nullable(schema: dict[str, Any], *, v30: bool = False) -> dict[str, Any]:
    """``schema`` that also admits null."""
    if v30:
        if "type" in schema or "enum" in schema:
            out = {**schema, "nullable": True}
        else:
            out = {"allOf": [schema], "nullable": True}
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    kind = schema.get("type")
    if isinstance(kind, str):
        out = {**schema, "type": [kind, "null"]}
    elif isinstance(kind, list):
        out = {**schema, "type": kind if "null" in kind else [*kind, "null"]}
    elif not schema:
        return schema  # anything, null included
    else:
        return {"anyOf": [schema, {"type": "null"}]}
    if "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    return out


def _column_schema(kind: Any, *, v30: bool) -> dict[str, Any]:
    # Subclasses first: Enum is a String, Float a Numeric, Interval a TypeDecorator.
    if isinstance(kind, sa.Enum):
        return {"type": "string", "enum": list(kind.enums)}
    if isinstance(kind, sa.Interval):
        return {"type": "number", "description": "A duration in seconds."}
    if isinstance(kind, sa.TypeDecorator):
        return {}
    if isinstance(kind, sa.Boolean):
        return {"type": "boolean"}
    if isinstance(kind, sa.Integer):
        return {"type": "integer"}
    if isinstance(kind, sa.Float) or (isinstance(kind, sa.Numeric) and not kind.asdecimal):
        return {"type": "number"}
    if isinstance(kind, sa.Numeric):
        return {"type": "string", "pattern": DECIMAL_PATTERN, "description": "An exact decimal."}
    if isinstance(kind, sa.DateTime):
        return {"type": "string", "format": "date-time"}
    if isinstance(kind, sa.Date):
        return {"type": "string", "format": "date"}
    if isinstance(kind, sa.Time):
        return {"type": "string", "description": "A time of day, ISO 8601 (HH:MM:SS)."}
    if isinstance(kind, sa.Uuid):
        return {"type": "string", "format": "uuid"}
    if isinstance(kind, sa.LargeBinary):
        return {"type": "string", "contentEncoding": "base64"} if not v30 else {"type": "string"}
    if isinstance(kind, sa.ARRAY):
        return {"type": "array", "items": _column_schema(kind.item_type, v30=v30)}
    if isinstance(kind, sa.String):
        return {"type": "string", "maxLength": kind.length} if kind.length else {"type": "string"}
    return {}  # JSON and types hostwire does not know: any value


def _enum_text(kind: Any, member: enum.Enum) -> Any:
    if isinstance(kind, sa.Enum) and kind.enum_class is not None:
        stored = dict(zip(kind.enum_class, kind.enums, strict=False))
        if member in stored:
            return stored[member]
    return member.value if isinstance(member.value, str | int | float) else member.name


def _to_json(value: Any, kind: Any, where: str) -> Any:
    if isinstance(value, enum.Enum):  # first: an IntEnum or StrEnum member is an int or str too
        return _enum_text(kind, value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}, which JSON cannot hold.")
        return value
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{where} is {value}, which JSON cannot hold.")
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): _to_json(v, None, where) for k, v in value.items()}
    if isinstance(value, list | tuple):
        item = kind.item_type if isinstance(kind, sa.ARRAY) else None
        return [_to_json(v, item, where) for v in value]
    raise ValueError(
        f"{where} holds a {type(value).__name__}, which hostwire cannot turn into JSON."
    )


def rfc3339(value: dt.datetime) -> str:
    """RFC 3339 text of ``value``; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _from_json(value: Any, kind: Any) -> Any:
    if value is None:
        return None
    try:
        if isinstance(kind, sa.Enum) and kind.enum_class is not None:
            by_text = dict(zip(kind.enums, kind.enum_class, strict=False))
            if value not in by_text:
                raise ValueError(f"{value!r} is not one of {kind.enums}")
            return by_text[value]
        if isinstance(kind, sa.Interval):
            return dt.timedelta(seconds=float(value))
        if isinstance(kind, sa.TypeDecorator):
            return value
        if isinstance(kind, sa.DateTime) and isinstance(value, str):
            moment = dt.datetime.fromisoformat(value)
            if kind.timezone and moment.tzinfo is None:
                return moment.replace(tzinfo=dt.UTC)
            if not kind.timezone and moment.tzinfo is not None:
                return moment.astimezone(dt.UTC).replace(tzinfo=None)
            return moment
        if isinstance(kind, sa.Date) and isinstance(value, str):
            return dt.date.fromisoformat(value)
        if isinstance(kind, sa.Time) and isinstance(value, str):
            return dt.time.fromisoformat(value)
        if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float) and kind.asdecimal:
            return Decimal(str(value))
        if isinstance(kind, sa.Uuid) and kind.as_uuid and isinstance(value, str):
            return uuid.UUID(value)
        if isinstance(kind, sa.LargeBinary) and isinstance(value, str):
            return base64.b64decode(value, validate=True)
    except (ValueError, TypeError, InvalidOperation, binascii.Error) as exc:
        raise ValueError(f"cannot be read as {kind}: {exc}") from exc
    return value
