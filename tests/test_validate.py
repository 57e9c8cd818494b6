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

from hostwire import load_openapi
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


CASES = [
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
