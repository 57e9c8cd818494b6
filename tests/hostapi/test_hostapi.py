"""Host functions generated from OpenAPI documents (Contract 1), in process and over HTTP."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import wat
from conftest import compile_wat
from hostwire import (
    AsgiTarget,
    Caller,
    ConfigError,
    HostApi,
    HttpCall,
    HttpTarget,
    Limits,
    Plugin,
    PluginLoadError,
    SpecError,
    calling_plugin,
    load_openapi,
    run_app,
    snake_case,
)
from petstore.app import SPEC, create_app

ALL_PETSTORE = [
    "listPets",
    "createPet",
    "showPetById",
    "delete_pets_pet_id",
    "adoptPet",
    "slowOperation",
]
PETSTORE_FUNCTIONS = sorted(
    [
        "list_pets",
        "create_pet",
        "show_pet_by_id",
        "delete_pets_pet_id",
        "adopt_pet",
        "slow_operation",
    ]
)


def call(plugin: Plugin, function: str, value: Any = None) -> dict[str, Any]:
    data = b"" if value is None else json.dumps(value).encode()
    result: dict[str, Any] = json.loads(plugin.call(f"call_{function}", data))
    return result


def caller_plugin(
    api: HostApi,
    grants: list[str],
    *,
    name: str = "tester",
    token: str | None = None,
    functions: list[str] | None = None,
) -> Plugin:
    names = functions or sorted(api.operations)
    return Plugin(
        name,
        compile_wat(wat.caller(*names)),
        host_functions=api.host_functions(name, grants, token=token),
        limits=Limits(timeout_ms=20_000),
    )


# -- the document --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("getStates", "get_states", id="camel"),
        pytest.param("setLightColor", "set_light_color", id="camel-3"),
        pytest.param("HTTPStatusCheck", "http_status_check", id="acronym"),
        pytest.param("post_/light_control", "post_light_control", id="method-path"),
        pytest.param("get_/pets/{petId}", "get_pets_pet_id", id="path-param"),
        pytest.param("list-pets.v2", "list_pets_v2", id="punctuation"),
        pytest.param("2fa", "op_2fa", id="leading-digit"),
    ],
)
def test_snake_case_names(text: str, expected: str) -> None:
    assert snake_case(text) == expected


def test_every_operation_becomes_a_function_named_by_contract_1() -> None:
    spec = load_openapi(SPEC)
    assert sorted(spec.operations) == PETSTORE_FUNCTIONS
    delete = spec.operations["delete_pets_pet_id"]
    assert (delete.method, delete.path, delete.operation_id) == ("delete", "/pets/{petId}", None)
    # Parameters declared on the path item and through $ref are resolved.
    assert [p.name for p in spec.operations["show_pet_by_id"].parameters] == ["petId", "X-Trace"]
    assert [p.name for p in spec.operations["list_pets"].parameters] == ["limit", "tag"]
    lights = load_openapi("openapi/light.yaml")
    assert sorted(lights.operations) == [
        "control_light",
        "create_light",
        "delete_light",
        "get_light",
        "get_states",
        "list_event_deliveries",
        "list_lights",
        "replay_event",
        "set_light_color",
        "stream_light_events",
        "update_light",
    ]


def test_two_operations_with_one_name_is_a_load_error(tmp_path: Path) -> None:
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/a": {"get": {"operationId": "getThing", "responses": {"200": {"description": "ok"}}}},
            "/b": {
                "get": {"operationId": "get_thing", "responses": {"200": {"description": "ok"}}}
            },
        },
    }
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SpecError, match=r'GET /a and GET /b both map to host function "get_thing"'):
        load_openapi(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(None, "no such OpenAPI document", id="missing"),
        pytest.param("openapi: [3.1", "invalid YAML or JSON at line 1", id="malformed"),
        pytest.param("title: not an api\n", "not an OpenAPI document", id="not-openapi"),
        pytest.param(
            "openapi: 3.1.0\ninfo: {title: t}\npaths: {}\n",
            "invalid OpenAPI document at info",
            id="invalid",
        ),
        pytest.param(
            "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n"
            "      requestBody: {$ref: 'other.yaml#/Body'}\n"
            "      responses: {'200': {description: ok}}\n",
            "cannot resolve $ref 'other.yaml#/Body'",
            id="dangling-ref",
        ),
    ],
)
def test_bad_documents_fail_with_one_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "api.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SpecError) as caught:
        load_openapi(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_refs_to_other_local_files_resolve(tmp_path: Path) -> None:
    (tmp_path / "schemas.yaml").write_text(
        "Body:\n  required: true\n  content:\n    application/json:\n"
        "      schema: {type: object, required: [n], properties: {n: {type: integer}}}\n"
    )
    (tmp_path / "api.yaml").write_text(
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    post:\n"
        "      operationId: postA\n      requestBody: {$ref: 'schemas.yaml#/Body'}\n"
        "      responses: {'200': {description: ok}}\n"
    )
    app = Starlette()
    with run_app(app) as target:
        api = HostApi(tmp_path / "api.yaml", target)
        with caller_plugin(api, ["postA"]) as plugin:
            reply = call(plugin, "post_a", {"body": {"n": "x"}})
    assert reply["status"] == 400
    assert reply["body"]["error"]["details"] == [
        {"in": "body", "field": "/n", "message": "'x' is not of type 'integer'"}
    ]


# -- the petstore, in process and over HTTP --------------------------------------


@pytest.fixture
def petstore() -> Starlette:
    return create_app()


@pytest.fixture
def in_process(petstore: Starlette) -> Iterator[HostApi]:
    with run_app(petstore, path_prefix="/api", timeout_s=2.0) as target:
        yield HostApi(SPEC, target)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def served_petstore(petstore: Starlette) -> Iterator[str]:
    """The pet store under a real uvicorn on 127.0.0.1, in a thread of this process."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(petstore, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    with httpx.Client() as client:
        for _ in range(500):
            if server.started:
                break
            try:
                client.get(f"http://127.0.0.1:{port}/api/pets", timeout=0.1)
            except httpx.HTTPError:
                continue
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    server.force_exit = True  # do not wait for deliberately slow requests
    thread.join(timeout=10)


@pytest.fixture
def over_http(served_petstore: str) -> Iterator[HostApi]:
    api = HostApi(SPEC, HttpTarget(f"{served_petstore}/api", timeout_s=1.0))
    yield api
    api.close()


@pytest.fixture(params=["in_process", "over_http"])
def pet_api(request: pytest.FixtureRequest) -> HostApi:
    api: HostApi = request.getfixturevalue(request.param)
    return api


def test_a_plugin_uses_the_petstore(pet_api: HostApi, petstore: Starlette) -> None:
    with caller_plugin(pet_api, ALL_PETSTORE, token="plugin-token") as plugin:
        created = call(plugin, "create_pet", {"body": {"name": "Tom", "tag": "cat"}})
        assert created["status"] == 201
        pet_id = created["body"]["id"]
        assert call(plugin, "show_pet_by_id", {"path": {"petId": pet_id}})["body"]["name"] == "Tom"
        listed = call(plugin, "list_pets", {"query": {"tag": "cat", "limit": 5}})
        assert [p["name"] for p in listed["body"]] == ["Tom"]
        # Query values may come as strings, the way they travel over HTTP.
        assert call(plugin, "list_pets", {"query": {"limit": "1"}})["status"] == 200
        assert call(plugin, "delete_pets_pet_id", {"path": {"petId": pet_id}})["status"] == 204
        assert call(plugin, "show_pet_by_id", {"path": {"petId": pet_id}})["status"] == 404
    seen = petstore.state.seen
    assert [r["method"] for r in seen] == ["POST", "GET", "GET", "GET", "DELETE", "GET"]
    # The app knows which plug-in called, and with which credentials.
    assert {r["headers"]["x-hostwire-plugin"] for r in seen} == {"tester"}
    assert {r["headers"]["authorization"] for r in seen} == {"Bearer plugin-token"}


def test_in_process_calls_carry_an_unforgeable_plugin_identity(
    in_process: HostApi, petstore: Starlette
) -> None:
    with caller_plugin(in_process, ["listPets"]) as plugin:
        assert call(plugin, "list_pets")["status"] == 200
    assert petstore.state.seen[0]["in_process_plugin"] == "tester"


@pytest.mark.parametrize(
    ("function", "value", "where", "field"),
    [
        pytest.param("create_pet", {"body": {"tag": "cat"}}, "body", "/name", id="missing-field"),
        pytest.param("create_pet", {"body": {"name": ""}}, "body", "/name", id="too-short"),
        pytest.param(
            "create_pet", {"body": {"name": "x", "age": 3}}, "body", "/", id="extra-field"
        ),
        pytest.param(
            "create_pet", {"body": {"name": "x", "owner": {}}}, "body", "/owner/email", id="nested"
        ),
        pytest.param("create_pet", {}, "body", "/", id="no-body"),
        pytest.param("list_pets", {"query": {"limit": 0}}, "query", "limit", id="below-minimum"),
        pytest.param("list_pets", {"query": {"limit": "ten"}}, "query", "limit", id="not-integer"),
        pytest.param("list_pets", {"query": {"colour": "x"}}, "query", "colour", id="undeclared"),
        pytest.param("list_pets", {"body": {"x": 1}}, "body", "/", id="unexpected-body"),
        pytest.param("show_pet_by_id", {}, "path", "petId", id="missing-path-param"),
        pytest.param("show_pet_by_id", {"path": {"petId": ""}}, "path", "petId", id="empty-path"),
        pytest.param("list_pets", {"params": {}}, "input", "params", id="unknown-key"),
        pytest.param("list_pets", [1, 2], "input", "/", id="not-an-object"),
    ],
)
def test_invalid_calls_get_400_and_never_reach_the_app(
    in_process: HostApi, petstore: Starlette, function: str, value: Any, where: str, field: str
) -> None:
    with caller_plugin(in_process, ALL_PETSTORE) as plugin:
        reply = call(plugin, function, value)
    assert reply["status"] == 400
    error = reply["body"]["error"]
    assert error["code"] == "invalid_request"
    assert {"in": where, "field": field} == {k: error["details"][0][k] for k in ("in", "field")}
    assert petstore.state.seen == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"{not json", "The input is not JSON", id="garbage"),
        # json.loads(bytes) would guess UTF-16 here and blame a 'utf-16-le' codec.
        pytest.param(b'{\x00"query": "\xff"}', "The input is not UTF-8 (byte 0xff", id="utf8"),
        pytest.param(b"[" * 100_000, "The input is JSON nested too deeply", id="deep"),
    ],
)
def test_input_that_is_not_json_gets_400(in_process: HostApi, data: bytes, message: str) -> None:
    with caller_plugin(in_process, ALL_PETSTORE) as plugin:
        reply = json.loads(plugin.call("call_list_pets", data))
    assert reply["status"] == 400
    assert reply["body"]["error"]["message"].startswith(message)


def test_calls_outside_the_grants_get_403_and_reach_nothing(
    pet_api: HostApi, petstore: Starlette
) -> None:
    with caller_plugin(pet_api, ["listPets"]) as plugin:
        assert call(plugin, "list_pets")["status"] == 200
        reply = call(plugin, "create_pet", {"body": {"name": "Sneaky"}})
    assert reply["status"] == 403
    assert reply["body"]["error"]["code"] == "not_granted"
    assert 'not granted operation "createPet"' in reply["body"]["error"]["message"]
    assert [r["method"] for r in petstore.state.seen] == ["GET"]
    assert "Sneaky" not in json.dumps(petstore.state.pets)


def test_grants_must_name_real_operations(in_process: HostApi) -> None:
    with pytest.raises(
        ConfigError, match=r'Plug-in "p" grants "adoptCat", which is not an operation'
    ):
        in_process.host_functions("p", ["adoptCat"])


def test_importing_an_operation_that_does_not_exist_fails_to_load(in_process: HostApi) -> None:
    with pytest.raises(PluginLoadError) as caught:
        Plugin(
            "p", compile_wat(wat.caller("feed_pet")), host_functions=in_process.host_functions("p")
        )
    message = str(caught.value)
    assert 'imports host function "feed_pet"' in message
    assert ", ".join(PETSTORE_FUNCTIONS) in message


# -- nothing escapes the base URL --------------------------------------------------


@pytest.mark.parametrize(
    "pet_id",
    [
        pytest.param("../admin", id="dot-dot-slash"),
        pytest.param("..", id="dot-dot"),
        pytest.param(".", id="dot"),
        pytest.param("//evil.example", id="authority"),
        pytest.param("http://x", id="absolute-url"),
        pytest.param("%2e%2e/admin", id="pre-encoded"),
        pytest.param("a b?c=d#e", id="reserved-characters"),
        pytest.param("../../admin/secret", id="deep"),
    ],
)
def test_path_parameters_cannot_leave_the_base_url(
    over_http: HostApi, petstore: Starlette, pet_id: str
) -> None:
    with caller_plugin(over_http, ALL_PETSTORE) as plugin:
        reply = call(plugin, "show_pet_by_id", {"path": {"petId": pet_id}})
    # No pet has that id, or no route matches an id holding "/": 404 either way.
    assert reply["status"] == 404
    for seen in petstore.state.seen:
        assert seen["raw_path"].startswith("/api/pets/")
        assert "/" not in seen["raw_path"].removeprefix("/api/pets/")
        assert seen["headers"]["host"] == over_http.target.base.netloc.decode()  # type: ignore[attr-defined]
    assert not any(r["path"].startswith("/admin") for r in petstore.state.seen)


@pytest.mark.parametrize(
    "header",
    ["Host", "Authorization", "authorization", "X-Hostwire-Plugin", "Cookie", "Content-Length"],
)
def test_plugins_cannot_set_host_or_credential_headers(
    pet_api: HostApi, petstore: Starlette, header: str
) -> None:
    with caller_plugin(pet_api, ALL_PETSTORE) as plugin:
        reply = call(
            plugin, "show_pet_by_id", {"path": {"petId": "1"}, "headers": {header: "evil"}}
        )
        assert reply["status"] == 400
        assert "set by the host" in reply["body"]["error"]["message"]
        ok = call(plugin, "show_pet_by_id", {"path": {"petId": "1"}, "headers": {"X-Trace": "t1"}})
    assert ok["status"] == 200
    assert [r["headers"].get("x-trace") for r in petstore.state.seen] == ["t1"]


# -- platform failures -----------------------------------------------------------


def test_a_slow_app_gives_504_over_http(served_petstore: str) -> None:
    api = HostApi(SPEC, HttpTarget(f"{served_petstore}/api", timeout_s=0.2))
    with caller_plugin(api, ["slowOperation"]) as plugin:
        reply = call(plugin, "slow_operation", {"query": {"seconds": 5}})
    assert reply["status"] == 504
    assert reply["body"]["error"]["code"] == "upstream_timeout"


def test_a_slow_app_gives_504_in_process(petstore: Starlette) -> None:
    with run_app(petstore, path_prefix="/api", timeout_s=0.2) as target:
        api = HostApi(SPEC, target)
        with caller_plugin(api, ["slowOperation"]) as plugin:
            reply = call(plugin, "slow_operation", {"query": {"seconds": 5}})
            assert call(plugin, "slow_operation", {"query": {"seconds": 0}})["status"] == 200
    assert (reply["status"], reply["body"]["error"]["code"]) == (504, "upstream_timeout")


def test_an_unreachable_app_gives_502() -> None:
    api = HostApi(SPEC, HttpTarget(f"http://127.0.0.1:{_free_port()}/api", timeout_s=1.0))
    with caller_plugin(api, ["listPets"]) as plugin:
        reply = call(plugin, "list_pets")
    assert (reply["status"], reply["body"]["error"]["code"]) == (502, "upstream_unreachable")


def test_an_app_that_is_not_running_gives_502(petstore: Starlette) -> None:
    api = HostApi(SPEC, AsgiTarget(petstore, path_prefix="/api"))
    with caller_plugin(api, ["listPets"]) as plugin:
        reply = call(plugin, "list_pets")  # called from a plain thread, no event loop bound
    assert (reply["status"], reply["body"]["error"]["code"]) == (502, "app_not_running")


# -- re-entrant calls ----------------------------------------------------------------


def _adopter(api: HostApi, export_function: str) -> Plugin:
    return Plugin(
        "adopter",
        compile_wat(wat.caller(export_function)),
        host_functions=api.host_functions("adopter", ["showPetById", "adoptPet"]),
        limits=Limits(timeout_ms=20_000, max_instances=128),
    )


def test_reentrant_calls_do_not_deadlock_or_exhaust_the_pool(petstore: Starlette) -> None:
    """Requests → plug-in (worker thread) → the same app → a worker thread again.

    60 requests at once hold more threads than anyio's default pool of 40
    while their plug-ins call back in; with one shared pool this deadlocks.
    """
    api = HostApi(SPEC, AsgiTarget(petstore, path_prefix="/api"))
    petstore.state.adopter = _adopter(api, "show_pet_by_id")
    petstore.state.adopter_export = "call_show_pet_by_id"
    results: list[httpx.Response] = []

    async def main() -> None:
        transport = httpx.ASGITransport(app=petstore)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def adopt() -> None:
                results.append(await client.post("/api/pets/1/adopt"))

            with anyio.fail_after(60):
                async with anyio.create_task_group() as group:
                    for _ in range(60):
                        group.start_soon(adopt)

    try:
        anyio.run(main)
    finally:
        petstore.state.adopter.close()
    assert len(results) == 60
    bodies = [r.json() for r in results]
    assert all(b["status"] == 200 and b["body"]["name"] == "Rex" for b in bodies)
    nested = [r for r in petstore.state.seen if r["method"] == "GET"]
    assert len(nested) == 60
    assert {r["in_process_plugin"] for r in nested} == {"adopter"}


def test_a_depth_limit_stops_loops_and_names_the_chain(petstore: Starlette) -> None:
    """adoptPet runs a plug-in that calls adoptPet again, forever."""
    api = HostApi(SPEC, AsgiTarget(petstore, path_prefix="/api"), max_depth=3)
    petstore.state.adopter = _adopter(api, "adopt_pet")
    petstore.state.adopter_export = "call_adopt_pet"
    try:
        with run_app(petstore, path_prefix="/api") as target:
            api.target = target
            with caller_plugin(api, ["adoptPet"], name="starter", functions=["adopt_pet"]) as p:
                reply = call(p, "adopt_pet", {"path": {"petId": "1"}})
    finally:
        petstore.state.adopter.close()
    innermost = reply
    depth = 0
    while isinstance(innermost.get("body"), dict) and "status" in innermost["body"]:
        innermost = innermost["body"]
        depth += 1
    assert innermost["status"] == 508
    error = innermost["body"]["error"]
    assert error["code"] == "depth_exceeded"
    assert error["message"] == (
        "Nested plug-in calls went deeper than 3: starter.call_adopt_pet → adopt_pet → "
        "adopter.call_adopt_pet → adopt_pet → adopter.call_adopt_pet → adopt_pet → "
        "adopter.call_adopt_pet → adopt_pet."
    )
    assert depth == 3  # three calls got through before the fourth was refused


# -- hostile input from the plug-in ----------------------------------------------------

SURROGATE = '"\\ud800"'  # a lone surrogate: valid JSON, not encodable text


@pytest.mark.parametrize(
    ("function", "raw"),
    [
        pytest.param(
            "show_pet_by_id", '{"path": {"petId": ' + SURROGATE + "}}", id="surrogate-path"
        ),
        pytest.param("list_pets", '{"query": {"tag": ' + SURROGATE + "}}", id="surrogate-query"),
        pytest.param("create_pet", '{"body": {"name": ' + SURROGATE + "}}", id="surrogate-body"),
        pytest.param(
            "show_pet_by_id",
            '{"path": {"petId": "1"}, "headers": {"X-Trace": "\\u20ac"}}',
            id="header-not-latin-1",
        ),
        pytest.param(
            "show_pet_by_id",
            '{"path": {"petId": "1"}, "headers": {"X-Trace": "a\\r\\nX-Evil: 1"}}',
            id="header-crlf",
        ),
        pytest.param("slow_operation", '{"query": {"seconds": NaN}}', id="nan-literal"),
        pytest.param("slow_operation", '{"query": {"seconds": "nan"}}', id="nan-string"),
        pytest.param("slow_operation", '{"query": {"seconds": "inf"}}', id="inf-string"),
        pytest.param("list_pets", '{"query": {"limit": ' + "9" * 5000 + "}}", id="huge-integer"),
        pytest.param("list_pets", "[" * 100_000 + "]" * 100_000, id="deep-nesting"),
        pytest.param("show_pet_by_id", '{"path": {"petId": []}}', id="empty-array-path"),
        pytest.param("list_pets", '{"query": {"tag": {"a": 1}}}', id="object-in-query"),
    ],
)
def test_hostile_input_gets_400_and_never_reaches_the_app(
    pet_api: HostApi, petstore: Starlette, function: str, raw: str
) -> None:
    with caller_plugin(pet_api, ALL_PETSTORE) as plugin:
        reply = json.loads(plugin.call(f"call_{function}", raw.encode()))
        assert call(plugin, "list_pets")["status"] == 200  # and the plug-in works on
    assert reply["status"] == 400
    assert reply["body"]["error"]["code"] == "invalid_request"
    assert [r["method"] for r in petstore.state.seen] == ["GET"]


def test_host_calls_get_only_the_time_the_plugin_has_left(petstore: Starlette) -> None:
    with run_app(petstore, path_prefix="/api", timeout_s=60) as target:
        api = HostApi(SPEC, target)
        with Plugin(
            "hasty",
            compile_wat(wat.caller("slow_operation")),
            host_functions=api.host_functions("hasty", ["slowOperation"]),
            limits=Limits(timeout_ms=300),
        ) as plugin:
            reply = call(plugin, "slow_operation", {"query": {"seconds": 20}})
    assert (reply["status"], reply["body"]["error"]["code"]) == (504, "upstream_timeout")


def test_array_query_parameters_are_cast_and_styled(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text(
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n"
        "      operationId: getA\n      parameters:\n"
        "        - {name: ids, in: query, schema: {type: array, items: {type: integer}}}\n"
        "        - {name: tags, in: query, explode: false,\n"
        "           schema: {type: array, items: {type: string}}}\n"
        "      responses: {'200': {description: ok}}\n"
    )
    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["query_string"])
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    with run_app(app) as target:
        api = HostApi(tmp_path / "api.yaml", target)
        with caller_plugin(api, ["getA"]) as plugin:
            assert (
                call(plugin, "get_a", {"query": {"ids": ["1", 2], "tags": ["x", "y"]}})["status"]
                == 204
            )
            assert call(plugin, "get_a", {"query": {"ids": ["one"]}})["status"] == 400
    assert seen == [b"ids=1&ids=2&tags=x%2Cy"]


# -- running apps in process ------------------------------------------------------------


def test_run_app_copes_with_apps_that_ignore_lifespan() -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"hi"})

    with run_app(bare) as target:
        assert target.send(HttpCall("GET", "/"), Caller("p")).body == b"hi"


def test_calling_plugin_names_the_plugin_of_in_process_calls_only() -> None:
    async def who(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(calling_plugin(request.scope)))

    app = Starlette(routes=[Route("/", who)])
    with run_app(app) as target:
        assert target.send(HttpCall("GET", "/"), Caller("night-mode")).body == b"night-mode"
    # A client over the network cannot claim to be a plug-in, not even by a header.
    transport = httpx.ASGITransport(app=app)

    async def over_the_network() -> bytes:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            headers = {"x-hostwire-plugin": "night-mode"}
            return (await client.get("/", headers=headers)).content

    assert anyio.run(over_the_network) == b"None"
    assert calling_plugin({"type": "http", "extensions": None}) is None


def test_lifespan_state_reaches_in_process_requests(tmp_path: Path) -> None:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield {"greeting": "hello from the lifespan"}

    async def greet(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.state.greeting)

    app = Starlette(routes=[Route("/", greet)], lifespan=lifespan)
    with run_app(app) as target:
        assert target.send(HttpCall("GET", "/"), Caller("p")).body == b"hello from the lifespan"


def test_ref_cycles_and_odd_paths_in_documents(tmp_path: Path) -> None:
    cyclic = tmp_path / "cycle.yaml"
    cyclic.write_text(
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n"
        "      requestBody: {$ref: '#/components/requestBodies/A'}\n"
        "      responses: {'200': {description: ok}}\n"
        "components:\n  requestBodies:\n    A: {$ref: '#/components/requestBodies/B'}\n"
        "    B: {$ref: '#/components/requestBodies/A'}\n"
    )
    with pytest.raises(SpecError):
        load_openapi(cyclic)
    odd = tmp_path / "a folder with spaces"
    odd.mkdir()
    test_refs_to_other_local_files_resolve(odd)


def test_every_answer_a_plugin_gets_is_counted_by_operation_and_status(
    pet_api: HostApi,
) -> None:
    plugin = Plugin(
        "counted",
        compile_wat(wat.caller(*sorted(pet_api.operations))),
        host_functions=pet_api.host_functions("counted", ["listPets", "createPet"]),
        limits=Limits(timeout_ms=20_000, max_host_input_bytes=4096),
    )
    with plugin:
        assert call(plugin, "list_pets")["status"] == 200
        assert call(plugin, "list_pets")["status"] == 200
        assert call(plugin, "create_pet", {"body": {"wrong": 1}})["status"] == 400
        assert call(plugin, "delete_pets_pet_id", {"petId": 1})["status"] == 403
        assert call(plugin, "create_pet", {"body": {"name": "x" * 5000}})["status"] == 413
        assert plugin.stats.host_calls == {
            ("listPets", 200): 2,
            ("createPet", 400): 1,
            ("createPet", 413): 1,
            ("delete_pets_pet_id", 403): 1,  # no operationId: its function name
        }
