"""openapi/light.yaml: the one source of truth for the API, loaded once."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import yaml

from hostwire import OpenAPIDocument, compile_schema, load_openapi


def resource_dir() -> Path:
    """Where light.yaml, ai-plugin.json, logo.png and legal.txt live."""
    packaged = Path(__file__).resolve().parent / "_openapi"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "openapi"


@functools.cache
def spec_text() -> str:
    return (resource_dir() / "light.yaml").read_text(encoding="utf-8")


@functools.cache
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(spec_text())
    return loaded


@functools.cache
def document() -> OpenAPIDocument:
    """light.yaml, loaded and checked by hostwire."""
    return load_openapi(resource_dir() / "light.yaml")


@functools.cache
def _checker(schema_name: str) -> Any:
    spec_ = document()
    return compile_schema(spec_, spec_.component_schema(schema_name))


def problems(schema_name: str, value: object) -> list[dict[str, str]]:
    """Every way ``value`` breaks ``components/schemas/<schema_name>``: ``{field, message}``."""
    return [
        {"field": p["field"], "message": p["message"]}
        for p in _checker(schema_name).problems("body", "", value)
    ]


def query_problems(operation_id: str, query: dict[str, str]) -> list[dict[str, str]]:
    """Problems with the query parameters of ``operation_id`` (integers cast first)."""
    found = []
    for path, item in spec()["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or operation.get("operationId") != operation_id:
                continue
            for index, param in enumerate(operation.get("parameters", [])):
                if param.get("in") != "query" or param["name"] not in query:
                    continue
                value: object = query[param["name"]]
                if param.get("schema", {}).get("type") == "integer":
                    with contextlib.suppress(ValueError):
                        value = int(str(value))
                node = document().at("paths", path, method, "parameters", index, "schema")
                found += [
                    {"field": param["name"], "message": p["message"]}
                    for p in compile_schema(document(), node).problems("query", "", value)
                ]
    return found
