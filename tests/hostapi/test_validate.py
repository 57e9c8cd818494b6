"""hostwire's compiled validation agrees with openapi-core's request validator."""

from __future__ import annotations

import functools
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
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

from hostwire import Schema, compile_schema, load_openapi
from hostwire._contract import error_reply
from hostwire._errors import InvalidCall
from hostwire._hostapi.validate import MAX_DETAILS, OperationValidator
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
    slow = Schema(lights, lights.component_schema("Light"), fast=False)
    for value in variants:
        assert light.problems("body", "", value) == slow.problems("body", "", value)
    assert [bool(light.problems("body", "", v)) for v in variants] == [False] + [True] * 5


# -- compiled schemas are shared by threads -------------------------------------------

ARRAYS = """\
openapi: 3.1.0
info: {title: arrays, version: "1"}
paths:
  /items:
    get:
      operationId: listItems
      parameters:
        - {name: ids, in: query, schema: {type: array, items: {type: integer}}}
        - {name: flags, in: query, schema: {type: array, items: {type: boolean}}}
        - {name: ratios, in: query, schema: {type: array, items: {type: number}}}
        - {name: names, in: query, schema: {type: array, items: {type: string}}}
      responses: {"200": {description: ok}}
"""


def test_eight_threads_cast_array_parameters_of_every_type_right(tmp_path: Path) -> None:
    (tmp_path / "arrays.yaml").write_text(ARRAYS)
    spec = load_openapi(tmp_path / "arrays.yaml")
    validator = OperationValidator(spec, spec.operations["list_items"])
    given = {"ids": ["1", "22"], "flags": ["true", "false"], "ratios": ["0.5", "2"],
             "names": ["7", "true"]}  # fmt: skip
    sent = {"ids": ["1", "22"], "flags": ["true", "false"], "ratios": ["0.5", "2.0"],
            "names": ["7", "true"]}  # fmt: skip
    # Every call casts long arrays of every type: the threads meet in each schema often.
    query = {name: values * 10 for name, values in given.items()}
    expected = [(name, text) for name, values in sent.items() for text in values * 10]
    wrong: list[str] = []

    def hammer() -> None:
        for _ in range(300):
            try:
                got = validator.prepare({"query": query}).query
            except InvalidCall as exc:
                wrong.append(str(exc))
                continue
            if got != expected:
                wrong.append(f"the query became {got}")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show at once
    try:
        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []


def test_a_schema_shared_by_eight_threads_casts_items_and_wholes_right(tmp_path: Path) -> None:
    (tmp_path / "arrays.yaml").write_text(ARRAYS)
    spec = load_openapi(tmp_path / "arrays.yaml")
    (ids,) = [p for p in spec.operations["list_items"].parameters if p.name == "ids"]
    assert ids.schema is not None
    schema = compile_schema(spec, ids.schema)
    wrong: list[str] = []

    def hammer() -> None:
        for _ in range(20_000):
            item, whole = schema.cast_item("5"), schema.cast("5")
            if (item, whole) != (5, "5"):  # an item is an integer; the parameter an array
                wrong.append(f"{item!r}, {whole!r}")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []
    assert (schema.cast_item("5"), schema.cast("5")) == (5, "5")


def test_a_compiled_schema_cannot_be_changed() -> None:
    lights = load_openapi(LIGHTS)
    schema = compile_schema(lights, lights.component_schema("Light"))
    with pytest.raises(AttributeError, match="immutable"):
        schema.kind = "integer"
    with pytest.raises(AttributeError, match="immutable"):
        del schema.item_kind
    assert isinstance(schema, Schema)
    assert (schema.kind, schema.item_kind) == ("object", None)


# -- an HTTP request's query, checked as a host call's is ------------------------------


def test_query_problems_check_a_requests_query_as_host_calls_do() -> None:
    lights = load_openapi(LIGHTS)
    assert lights.query_problems("listEventDeliveries", {"limit": "10", "state": "dead"}) == []
    # Names the operation does not declare are the client's business.
    assert lights.query_problems("list_event_deliveries", {"cache": "no"}) == []
    found = lights.query_problems("listEventDeliveries", {"state": "lost", "limit": "0"})
    assert [(p["in"], p["field"]) for p in found] == [("query", "state"), ("query", "limit")]
    assert found[1]["message"] == "0 is less than the minimum of 1"
    # One implementation: a plug-in's call with the same query gets the same details.
    validator = OperationValidator(lights, lights.operations["list_event_deliveries"])
    with pytest.raises(InvalidCall) as refused:
        validator.prepare({"query": {"state": "lost", "limit": "0"}})
    assert refused.value.details == found
    with pytest.raises(KeyError, match="no operation 'nope'"):
        lights.query_problems("nope", {})


def test_query_problems_report_a_missing_required_parameter(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text(
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /find:\n    get:\n"
        "      operationId: find\n      parameters:\n"
        "        - {name: q, in: query, required: true, schema: {type: string}}\n"
        "      responses: {'200': {description: ok}}\n"
    )
    spec = load_openapi(tmp_path / "api.yaml")
    assert spec.query_problems("find", {"q": "lamp"}) == []
    assert spec.query_problems("find", {}) == [
        {"in": "query", "field": "q", "message": "is required"}
    ]


# -- error replies quote bad values short ----------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param({"body": {"name": "Tom", "owner": "x" * 50_000_000}}, id="50-mb-string"),
        pytest.param({"body": {"name": "Tom", "tag": 7, "x" * 1_000_000: 1}}, id="long-key"),
        pytest.param({"body": ["é" * 10_000_000]}, id="long-value-of-wrong-type"),
        pytest.param({"body": {"name": ["x" * 1000] * 100_000}}, id="long-array"),
    ],
)
def test_an_invalid_huge_value_gets_a_short_error_reply(call: dict[str, Any]) -> None:
    pets = load_openapi(PETSTORE)
    validator = OperationValidator(pets, pets.operations["create_pet"])
    with pytest.raises(InvalidCall) as failure:
        validator.prepare(call)
    reply = error_reply(400, "invalid_request", str(failure.value), failure.value.details)
    assert len(reply) < 8_000
    assert "bytes)" in reply.decode() or len(failure.value.details) <= MAX_DETAILS + 1
    assert str(failure.value).startswith("create_pet: body ")
    assert len(failure.value.details) <= MAX_DETAILS + 1


def test_a_long_bad_value_is_quoted_by_a_prefix_and_its_size() -> None:
    pets = load_openapi(PETSTORE)
    validator = OperationValidator(pets, pets.operations["list_pets"])
    with pytest.raises(InvalidCall) as failure:
        validator.prepare({"query": {"limit": "9" * 1000 + "x"}})
    (problem,) = failure.value.details
    assert problem["message"] == f"'{'9' * 79}…(1001 bytes) is not of type 'integer'"
