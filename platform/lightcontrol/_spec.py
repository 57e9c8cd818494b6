"""openapi/light.yaml: the one source of truth for the API, loaded once."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_SPEC_URI = "urn:lightcontrol:openapi"


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
def _registry() -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(spec(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(_SPEC_URI, resource)
    return registry


@functools.cache
def validator(schema_name: str) -> Draft202012Validator:
    """A JSON Schema validator for ``components/schemas/<schema_name>``."""
    if schema_name not in spec()["components"]["schemas"]:
        raise KeyError(f"light.yaml has no schema {schema_name!r}")
    return Draft202012Validator(
        {"$ref": f"{_SPEC_URI}#/components/schemas/{schema_name}"}, registry=_registry()
    )


def problems(schema_name: str, value: object) -> list[dict[str, str]]:
    """Every way ``value`` breaks the schema, as ``{"field", "message"}`` items."""
    found = []
    for error in sorted(validator(schema_name).iter_errors(value), key=lambda e: list(e.path)):
        path = [str(part) for part in error.path]
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [k for k in error.validator_value if k not in error.instance]
            path += missing[:1]
        pointer = "/" + "/".join(path)
        found.append({"field": pointer, "message": error.message})
    return found


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
                pointer = f"/paths/{path.replace('/', '~1')}/{method}/parameters/{index}/schema"
                checker = Draft202012Validator(
                    {"$ref": f"{_SPEC_URI}#{pointer}"}, registry=_registry()
                )
                found += [
                    {"field": param["name"], "message": error.message}
                    for error in checker.iter_errors(value)
                ]
    return found
