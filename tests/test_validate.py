"""hostwire's compiled validation agrees with openapi-core's request validator."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.validation.request.validators import (
    V30RequestBodyValidator,
    V30RequestParametersValidator,
    V31RequestBodyValidator,
    V31RequestParametersValidator,
)

from hostwire import compile_schema, load_openapi
from hostwire._validate import InvalidCall, OperationValidator
from petstore.app import SPEC as PETSTORE_PATH

LIGHTS = "openapi/light.yaml"
PETSTORE = str(PETSTORE_PATH)


@dataclass
class _Request:
    """openapi-core's Request protocol, for a path template and its values."""

    method: str
    path: str
    path_pattern: str
    body: bytes | None
    parameters: RequestParameters
    content_type: str = "application/json"
    host_url: str = "http://hostwire.invalid"


@functools.cache
def _validators(document: str) -> tuple[Any, Any]:
    api = OpenAPI.from_file_path(document)
    if load_openapi(document).is_v30:
        return V30RequestParametersValidator(api.spec), V30RequestBodyValidator(api.spec)
    return V31RequestParametersValidator(api.spec), V31RequestBodyValidator(api.spec)


def _openapi_core_accepts(document: str, function: str, call: dict[str, Any]) -> bool:
    spec = load_openapi(document)
    op = spec.operations[function]
    params, body = _validators(document)
    # What the plug-in asked for, as it would arrive over HTTP.
    prepared = OperationValidator(spec, op)._build(
        {"path": call.get("path", {}), "query": call.get("query", {}), "header": {}},
        call.get("body"),
    )
    prefix = (spec.document.get("servers") or [{}])[0].get("url", "/").rstrip("/")
    request = _Request(
        op.method,
        prefix + prepared.path,
        prefix + op.path,
        prepared.body,
        RequestParameters(
            path=call.get("path", {}),
            query=dict(parse_qsl("&".join(f"{k}={v}" for k, v in prepared.query))),
            header={},
            cookie={},
        ),
    )
    errors = [*params.iter_errors(request), *body.iter_errors(request)]
    return not errors


CASES: list[tuple[str, str, dict[str, Any]]] = [
    (LIGHTS, "set_light_color", {"body": {"action": "ToBlue"}}),
    (LIGHTS, "set_light_color", {"body": {"action": "ToPurple"}}),
    (LIGHTS, "set_light_color", {"body": {}}),
    (LIGHTS, "set_light_color", {}),
    (LIGHTS, "control_light", {"body": {"action": "TurnOn"}}),
    (LIGHTS, "control_light", {"body": {"action": "TurnOn", "extra": 1}}),
    (LIGHTS, "update_light", {"path": {"id": "default"}, "body": {"brightness": 40}}),
    (LIGHTS, "update_light", {"path": {"id": "default"}, "body": {"brightness": 400}}),
    (LIGHTS, "update_light", {"path": {"id": "default"}, "body": {"color": 5}}),
    (LIGHTS, "create_light", {"body": {"name": "Desk"}}),
    (LIGHTS, "create_light", {"body": {"status": "on"}}),
    (LIGHTS, "get_states", {}),
    (PETSTORE, "create_pet", {"body": {"name": "Tom", "tag": None}}),
    (PETSTORE, "create_pet", {"body": {"name": "Tom", "owner": {"email": "a@b"}}}),
    (PETSTORE, "create_pet", {"body": {"name": "Tom", "owner": {}}}),
    (PETSTORE, "create_pet", {"body": {"name": ""}}),
    (PETSTORE, "list_pets", {"query": {"limit": 5}}),
    (PETSTORE, "list_pets", {"query": {"limit": 500}}),
    (PETSTORE, "show_pet_by_id", {"path": {"petId": "7"}}),
]


@pytest.mark.parametrize(("document", "function", "call"), CASES)
def test_hostwire_and_openapi_core_agree(
    document: str, function: str, call: dict[str, Any]
) -> None:
    spec = load_openapi(document)
    validator = OperationValidator(spec, spec.operations[function])
    try:
        validator.prepare(call)
        hostwire_accepts = True
    except InvalidCall:
        hostwire_accepts = False
    assert hostwire_accepts == _openapi_core_accepts(document, function, call)


def test_the_cases_cover_both_answers() -> None:
    answers = {_openapi_core_accepts(d, f, c) for d, f, c in CASES}
    assert answers == {True, False}


def test_portable_schemas_take_the_fast_path_and_agree() -> None:
    lights = load_openapi(LIGHTS)
    event = compile_schema(lights, lights.webhook_body("light.after_update"))  # type: ignore[arg-type]
    assert event._fast is not None
    pets = load_openapi(PETSTORE)
    new_pet = compile_schema(pets, pets.component_schema("NewPet"))
    assert new_pet._fast is None  # OpenAPI 3.0's nullable means nothing to draft 7
    assert new_pet.problems("body", "", {"name": "Tom", "tag": None}) == []
    light = compile_schema(lights, lights.component_schema("Light"))
    record = {
        "id": "default", "name": "Lamp", "status": "on", "color": "red", "brightness": 5,
        "created_at": "2026-11-21T20:00:00.000Z", "updated_at": "2026-11-21T20:00:00Z",
        "revision": 1,
    }  # fmt: skip
    variants = [
        record,
        {**record, "color": "purple"},
        {**record, "brightness": 101},
        {**record, "created_at": "2026-13-45T99:00:00Z"},  # a date-time only by regex
        {**record, "extra": 1},
        {k: v for k, v in record.items() if k != "name"},
    ]
    slow = compile_schema(lights, lights.component_schema("Light"))
    slow._fast = None
    for value in variants:
        assert light.problems("body", "", value) == slow.problems("body", "", value)
    assert [bool(light.problems("body", "", v)) for v in variants] == [False] + [True] * 5
