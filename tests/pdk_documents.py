"""OpenAPI documents made to trip the PDK generators up, built from a runtime's names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conftest import ROOT
from hostwire import snake_case
from hostwire._pdk.generate import templates_root

FASTAPI = ROOT / "tests" / "pdk" / "fastapi.json"
_RUST_PUB = re.compile(
    r"\bpub\s+(?:unsafe\s+)?(?:extern\s+\"C\"\s+)?(?:fn|struct|enum|mod|type|trait|const|static)"
    r"\s+(\w+)"
)
_RUST_USE = re.compile(r"\bpub\s+use\s+[\w:]+::\{([^}]*)\}", re.S)
_RUST_MACRO = re.compile(r"macro_rules!\s+(\w+)")
RUST_RUNTIME = ("client.rs.j2", "json.rs.j2", "kernel.rs.j2", "lib.rs.j2", "plugin.rs.j2")


def rust_runtime_names() -> set[str]:
    """The items the Rust PDK's own (not generated) modules declare and re-export."""
    names: set[str] = set()
    for file in RUST_RUNTIME:
        text = (templates_root() / "rust" / "src" / file).read_text(encoding="utf-8")
        names |= set(_RUST_PUB.findall(text)) | set(_RUST_MACRO.findall(text))
        for group in _RUST_USE.findall(text):
            names |= {part.strip() for part in group.split(",") if part.strip() != "self"}
    # What a model might shadow in code that glob-imports the models.
    return names | {"Box", "Option", "Result", "String", "Vec", "Default", "Some", "None", "Ok"}


def clash_document(runtime: Iterable[str]) -> dict[str, Any]:
    """A document with a schema, an operation, parameters and an event named after
    every runtime name, enum values that spell them, and arrays of every kind."""
    names = sorted({n for n in runtime if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)})
    schemas: dict[str, Any] = {}
    for name in names:
        schemas[name] = {
            "type": "object",
            "required": [name],
            "properties": {
                name: {"type": "string"},
                "values": {"type": "array", "items": {}},
                "flag": {"type": "boolean"},
                "kind": {"type": "string", "enum": [name, name.upper()]},
            },
        }
    words = sorted({n.split("_", 1)[1] for n in names if "_" in n and n.split("_", 1)[1]})
    schemas["HW"] = {"type": "string", "enum": words}
    schemas["Hw"] = {"type": "object", "properties": {"json": {"type": "string"}}}
    schemas["Lists"] = {
        "type": "object",
        "properties": {
            "any": {"type": "array", "items": {}},
            "any_matrix": {"type": "array", "items": {"type": "array", "items": {}}},
            "strings": {"type": "array", "items": {"type": "string"}},
            "ints": {"type": "array", "items": {"type": "integer"}},
            "numbers": {"type": "array", "items": {"type": "number"}},
            "bools": {"type": "array", "items": {"type": "boolean"}},
            "mixed": {
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
        },
    }
    lists = {"type": "array", "items": {"$ref": "#/components/schemas/Lists"}}
    paths: dict[str, Any] = {}
    seen: set[str] = set()
    for name in names:
        if snake_case(name) in seen:
            continue
        seen.add(snake_case(name))
        paths[f"/{name}/{{{name}}}"] = {
            "post": {
                "operationId": name,
                "parameters": [
                    {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}},
                    {"name": f"{name}_q", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "memset", "in": "query", "required": True,
                     "schema": {"type": "string"}},
                ],
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                    }
                },
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {
                            "application/json": {"schema": lists}
                        },
                    }
                },
            }
        }  # fmt: skip
    webhooks: dict[str, Any] = {}
    for name in names:
        model = snake_case(name)
        if not re.fullmatch(r"[a-z][a-z0-9_]*", model) or f"{model}.before_save" in webhooks:
            continue
        body = {
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
        }
        webhooks[f"{model}.before_save"] = {
            "post": {"requestBody": body, "responses": {"200": {"description": "ok"}}}
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "every runtime name", "version": "1"},
        "paths": paths,
        "webhooks": webhooks,
        "components": {"schemas": schemas},
    }


def write_clash_document(folder: Path, runtime: Iterable[str]) -> Path:
    path = folder / "clash.json"
    path.write_text(json.dumps(clash_document(runtime), indent=1), encoding="utf-8")
    return path


def document(name: str, folder: Path, runtime: Iterable[str]) -> Path:
    """``fastapi`` (tests/pdk/fastapi.json), or ``every-runtime-name`` written to folder."""
    return FASTAPI if name == "fastapi" else write_clash_document(folder, runtime)
