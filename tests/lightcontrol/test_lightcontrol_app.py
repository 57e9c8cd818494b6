"""lightcontrol over HTTP, in process; every response is checked against the spec."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from openapi_spec_validator import validate
from starlette.testclient import TestClient

from lightcontrol._middleware import ConcurrencyLimitMiddleware
from lightcontrol._spec import resource_dir, spec
from lightcontrol.app import Settings, create_app
from openapi_check import SpecChecker

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def checker() -> SpecChecker:
    return SpecChecker()


@pytest.fixture
def client(tmp_path: Path, checker: SpecChecker) -> Iterator[TestClient]:
    settings = Settings(
        db_path=str(tmp_path / "lights.db"),
        token=TOKEN,
        cors_origins=["https://chat.example"],
        public_url=None,
    )
    with TestClient(create_app(settings)) as test_client:
        test_client.event_hooks = {"request": [], "response": [checker]}
        yield test_client


def test_spec_is_valid_and_complete() -> None:
    document = yaml.safe_load((resource_dir() / "light.yaml").read_text())
    validate(document)
    operations = {
        op["operationId"]: op
        for item in document["paths"].values()
        for method, op in item.items()
        if method in {"get", "post", "patch", "delete"}
    }
    assert set(operations) == {
        "getStates", "controlLight", "setLightColor", "listLights",
        "createLight", "getLight", "updateLight", "deleteLight",
        "listEventDeliveries", "replayEvent", "streamLightEvents",
    }  # fmt: skip
    assert all(op.get("summary") for op in operations.values())

    def walk(schema: object, where: str) -> None:
        if isinstance(schema, dict):
            for name, prop in schema.get("properties", {}).items():
                assert "description" in prop or "$ref" in prop, f"{where}.{name}"
            for value in schema.values():
                walk(value, where)
        elif isinstance(schema, list):
            for item in schema:
                walk(item, where)

    walk(document["components"]["schemas"], "schemas")

    # A comma inside an unquoted flow-mapping value splits it into a stray key:
    # every key of a schema must be a keyword.
    keywords = {
        "type", "enum", "properties", "required", "additionalProperties", "items", "minimum",
        "maximum", "minLength", "maxLength", "pattern", "format", "oneOf", "description",
        "default", "$ref", "minProperties", "maxProperties",
    }  # fmt: skip

    def stray(schema: object, where: str) -> None:
        if isinstance(schema, dict):
            assert set(schema) <= keywords, f"{where}: {set(schema) - keywords}"
            for name, sub in schema.get("properties", {}).items():
                stray(sub, f"{where}.{name}")
            for key in ("items", "additionalProperties"):
                stray(schema.get(key), f"{where}.{key}")
            for index, sub in enumerate(schema.get("oneOf", [])):
                stray(sub, f"{where}.oneOf[{index}]")

    for name, schema in document["components"]["schemas"].items():
        stray(schema, name)
    for item in document["paths"].values():
        for parameter in item.get("parameters", []):
            assert parameter.get("description"), parameter["name"]
        for op in operations.values():
            for parameter in op.get("parameters", []):
                assert parameter.get("description"), parameter["name"]
    # Every lifecycle event is declared as a webhook with the envelope schema.
    steps = ["validation", "create", "save", "update", "destroy"]
    expected = {f"light.{when}_{step}" for when in ("before", "after") for step in steps}
    assert set(document["webhooks"]) == expected
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_openapi_is_served_from_the_one_file(client: TestClient) -> None:
    assert client.get("/openapi.json").json() == spec()
    yaml_text = client.get("/openapi.yaml")
    assert yaml_text.text == (resource_dir() / "light.yaml").read_text()


def test_the_original_three_routes(client: TestClient, checker: SpecChecker) -> None:
    assert client.get("/states", headers=AUTH).json() == {"status": "off", "color": "white"}
    on = client.post("/light_control", headers=AUTH, json={"action": "TurnOn"})
    assert on.json() == {"status": "on", "color": "white"}
    red = client.post("/light_color", headers=AUTH, json={"action": "ToRed"})
    assert red.json() == {"status": "on", "color": "red"}
    reset = client.post("/light_color", headers=AUTH, json={"action": "Reset"})
    assert reset.json()["color"] == "white"
    assert client.get("/states", headers=AUTH).json() == {"status": "on", "color": "white"}
    assert checker.checked == 5


def test_lights_collection(client: TestClient) -> None:
    created = client.post(
        "/lights", headers=AUTH, json={"name": "Kitchen", "color": "blue", "brightness": 40}
    )
    assert created.status_code == 201
    light = created.json()
    assert light["status"] == "off"
    assert light["revision"] == 1
    assert light["created_at"] == light["updated_at"]
    url = f"/lights/{light['id']}"
    assert client.get(url, headers=AUTH).json() == light
    names = [entry["name"] for entry in client.get("/lights", headers=AUTH).json()["lights"]]
    assert names == ["Default light", "Kitchen"]
    changed = client.patch(url, headers=AUTH, json={"status": "on", "brightness": 80}).json()
    assert (changed["status"], changed["brightness"], changed["revision"]) == ("on", 80, 2)
    assert changed["updated_at"] >= light["updated_at"]
    assert client.delete(url, headers=AUTH).status_code == 204
    gone = client.get(url, headers=AUTH)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"
    assert client.delete(url, headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "field"),
    [
        pytest.param("POST", "/light_control", b"{nope", 400, "invalid_json", None, id="bad-json"),
        pytest.param(
            "POST",
            "/light_control",
            b'{"action": "Dim"}',
            422,
            "invalid_request",
            "/action",
            id="wrong-enum",
        ),
        pytest.param(
            "POST", "/light_color", b"{}", 422, "invalid_request", "/action", id="missing"
        ),
        pytest.param(
            "POST",
            "/lights",
            b'{"name": "x", "brightness": 101}',
            422,
            "invalid_request",
            "/brightness",
            id="out-of-range",
        ),
        pytest.param(
            "POST",
            "/lights",
            b'{"name": "x", "watts": 9}',
            422,
            "invalid_request",
            "/",
            id="unknown-field",
        ),
        pytest.param("PATCH", "/lights/default", b"{}", 422, "invalid_request", "/", id="empty"),
        pytest.param("POST", "/lights", b"[1]", 422, "invalid_request", "/", id="not-object"),
    ],
)
def test_errors_say_which_field_and_why(
    client: TestClient,
    method: str,
    path: str,
    body: bytes,
    status: int,
    code: str,
    field: str | None,
) -> None:
    response = client.request(
        method, path, headers={**AUTH, "content-type": "application/json"}, content=body
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["details"][0]["field"] == field
        assert error["message"].startswith(field)


def test_auth_is_required_on_the_api(client: TestClient) -> None:
    for method, path in [("GET", "/states"), ("GET", "/lights"), ("DELETE", "/lights/default")]:
        response = client.request(method, path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "unauthorized"
    wrong = client.get("/states", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "wrong" in wrong.json()["error"]["message"]
    assert client.get("/lights/default", headers=AUTH).status_code == 200


def test_metadata_routes_are_public(client: TestClient) -> None:
    manifest = client.get("/.well-known/ai-plugin.json").json()
    assert manifest["api"]["url"] == "http://testserver/openapi.json"
    assert manifest["logo_url"] == "http://testserver/logo.png"
    assert manifest["auth"]["authorization_type"] == "bearer"
    logo = client.get("/logo.png")
    assert logo.headers["content-type"] == "image/png"
    assert logo.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert "terms" in client.get("/legal").text


def test_ai_plugin_uses_the_configured_public_url(tmp_path: Path) -> None:
    settings = Settings(
        db_path=str(tmp_path / "l.db"), token=TOKEN, public_url="https://lights.example/"
    )
    with TestClient(create_app(settings)) as test_client:
        manifest = test_client.get("/.well-known/ai-plugin.json").json()
    assert manifest["api"]["url"] == "https://lights.example/openapi.json"
    assert manifest["legal_info_url"] == "https://lights.example/legal"


def test_body_over_one_mib_gets_413(client: TestClient) -> None:
    response = client.post(
        "/lights",
        headers={**AUTH, "content-type": "application/json"},
        content=b" " * (1 << 20 + 1),
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_streamed_body_over_the_limit_gets_413_without_reading_it_whole(
    client: TestClient,
) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(64):
            sent += 64 * 1024
            yield b" " * (64 * 1024)

    response = client.post(
        "/lights", headers={**AUTH, "content-type": "application/json"}, content=chunks()
    )
    assert response.status_code == 413


def test_cors_preflight(client: TestClient) -> None:
    response = client.options(
        "/states",
        headers={
            "Origin": "https://chat.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://chat.example"
    denied = client.options(
        "/states",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert denied.status_code == 400


def test_request_id_on_every_response(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="lightcontrol.access"):
        given = client.get("/states", headers={**AUTH, "X-Request-ID": "abc-123"})
        fresh = client.get("/nowhere", headers=AUTH)
    assert given.headers["x-request-id"] == "abc-123"
    assert len(fresh.headers["x-request-id"]) == 32
    assert "request_id=abc-123" in caplog.text
    assert '"GET /states" 200' in caplog.text


def test_unknown_route_and_method_use_the_error_shape(client: TestClient) -> None:
    assert client.get("/nowhere", headers=AUTH).json()["error"]["code"] == "not_found"
    assert client.put("/states", headers=AUTH).json()["error"]["code"] == "method_not_allowed"


def test_concurrency_limit_answers_503() -> None:
    async def scenario() -> list[int]:
        release = anyio.Event()
        entered = anyio.Event()

        async def slow_app(scope: object, receive: object, send: object) -> None:
            entered.set()
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
            await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

        limited = ConcurrencyLimitMiddleware(slow_app, max_concurrent=1)
        statuses: list[int] = []

        async def request() -> None:
            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b""}

            async def send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(int(message["status"]))

            await limited({"type": "http", "path": "/", "headers": []}, receive, send)

        async with anyio.create_task_group() as group:
            group.start_soon(request)
            await entered.wait()
            await request()  # the second one, while the first is in flight
            release.set()
        await request()  # after the first finished: allowed again
        return statuses

    assert anyio.run(scenario) == [503, 200, 200]


def test_create_with_a_chosen_id(client: TestClient) -> None:
    created = client.post("/lights", json={"id": "kitchen", "name": "Kitchen"}, headers=AUTH)
    assert created.status_code == 201
    assert created.json()["id"] == "kitchen"
    again = client.post("/lights", json={"id": "kitchen", "name": "Another"}, headers=AUTH)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    bad = client.post("/lights", json={"id": "../x", "name": "Bad"}, headers=AUTH)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "/id"


def test_event_stream_rejects_a_bad_limit(client: TestClient) -> None:
    response = client.get("/events/stream", params={"limit": 0}, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "limit"


def test_open_streams_have_their_own_limit(tmp_path: Path) -> None:
    settings = Settings(
        db_path=str(tmp_path / "l.db"), token=TOKEN, max_concurrent=1, max_streams=1
    )
    with (
        TestClient(create_app(settings)) as test_client,
        test_client.stream("GET", "/events/stream", headers=AUTH) as first,
    ):
        assert next(first.iter_lines()).startswith(": listening")
        # The open stream holds no ordinary slot (max_concurrent is 1)...
        assert test_client.get("/states", headers=AUTH).status_code == 200
        # ...but a second stream is over the stream limit.
        second = test_client.get("/events/stream", headers=AUTH)
        assert second.status_code == 503
        assert second.headers["retry-after"] == "5"
