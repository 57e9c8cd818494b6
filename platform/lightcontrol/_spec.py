"""openapi/light.yaml: the one source of truth for the API, loaded once."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hostwire import OpenAPIDocument, Schema, compile_schema, load_openapi


def resource_dir() -> Path:
    """Where light.yaml, ai-plugin.json, logo.png and legal.txt live."""
    packaged = Path(__file__).resolve().parent / "_openapi"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "openapi"


@functools.cache
def spec_text() -> str:
    return (resource_dir() / "light.yaml").read_text(encoding="utf-8")


def spec() -> dict[str, Any]:
    """light.yaml as data (parsed once, by ``document()``)."""
    loaded: dict[str, Any] = document().document
    return loaded


@functools.cache
def document() -> OpenAPIDocument:
    """light.yaml, loaded and checked by hostwire."""
    return load_openapi(resource_dir() / "light.yaml")


@functools.cache
def _checker(schema_name: str) -> Schema:
    spec_ = document()
    return compile_schema(spec_, spec_.component_schema(schema_name))


def problems(schema_name: str, value: object) -> list[dict[str, str]]:
    """Every way ``value`` breaks ``components/schemas/<schema_name>``: ``{field, message}``."""
    return [
        {"field": p["field"], "message": p["message"]}
        for p in _checker(schema_name).problems("body", "", value)
    ]


def query_problems(operation_id: str, query: Mapping[str, str]) -> list[dict[str, str]]:
    """Problems with the query parameters of ``operation_id`` (numbers cast first)."""
    return [
        {"field": p["field"], "message": p["message"]}
        for p in document().query_problems(operation_id, query)
    ]
