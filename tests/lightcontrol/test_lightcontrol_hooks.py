"""lightcontrol with HTTP hook plug-ins: the api_guard and redactor samples."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from conftest import ROOT
from hostwire import load_config, parse_config
from lightcontrol import _spec
from lightcontrol.app import Settings, create_app

TOKEN = "hooks-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "X-API-Key": "key-1"}
GUARD = str(ROOT / "sample_plugins/api_guard/build/plugin.wasm")
REDACTOR = str(ROOT / "sample_plugins/redactor/build/plugin.wasm")


def lightcontrol(tmp_path: Path, plugins: list[dict[str, Any]]) -> TestClient:
    config = parse_config(
        {"openapi": str(ROOT / "openapi/light.yaml"), "plugins": plugins},
        path=tmp_path / "plugins.yaml",
    )
    settings = Settings(db_path=str(tmp_path / "lights.db"), token=TOKEN)
    return TestClient(create_app(settings, plugins=config))


GUARD_PLUGIN = {
    "name": "guard",
    "path": GUARD,
    "config": {"api_keys": "ops:key-1", "rate_limit": "3", "window_s": "3600"},
}
REDACTOR_PLUGIN = {
    "name": "redactor",
    "path": REDACTOR,
    "config": {"redact": "name", "paths": "/lights", "drop": "secret-lamp"},
}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with lightcontrol(tmp_path, [GUARD_PLUGIN, REDACTOR_PLUGIN]) as test_client:
        yield test_client


def test_the_guard_answers_before_the_app(client: TestClient) -> None:
    missing = client.get("/states", headers={"Authorization": f"Bearer {TOKEN}"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "ApiKey"
    assert missing.json()["error"]["code"] == "unauthorized"
    # The metadata routes stay public through the guard.
    assert client.get("/openapi.json").status_code == 200
    # A good key still needs the app's own bearer token.
    assert client.get("/states", headers={"X-API-Key": "key-1"}).status_code == 401


def test_rate_limit_short_circuits_with_429(client: TestClient) -> None:
    statuses = [client.get("/states", headers=AUTH).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_the_post_hook_adds_a_header_and_redacts(client: TestClient) -> None:
    response = client.get("/lights/default", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["x-served-by"] == "hostwire"
    light = response.json()
    assert light["name"] == "[redacted]"
    assert light["color"] == "white"
    assert int(response.headers["content-length"]) == len(response.content)


def test_the_stream_goes_through_the_chunk_hook(client: TestClient) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]
    lines: list[str] = []
    with client.stream("GET", "/events/stream", params={"limit": 3}, headers=AUTH) as response:
        stream = response.iter_lines()
        assert next(stream).startswith(": listening")

        def write() -> None:
            store.create({"id": "secret-lamp", "name": "Hidden"})  # its chunk is dropped
            store.create({"id": "desk", "name": "Desk"})
            store.update("desk", {"color": "blue"})

        writer = threading.Thread(target=write)
        writer.start()
        lines = [line for line in stream if line.startswith("data: ")]
        writer.join()
    # Three changes were sent; the chunk hook dropped the one about secret-lamp.
    assert len(lines) == 2
    assert "secret-lamp" not in "".join(lines)
    assert '"light.after_create"' in lines[0]
    assert '"light.after_update"' in lines[1]
    assert "x-served-by" not in response.headers  # no post-hook for streams


def test_a_broken_hook_fails_closed_naming_the_plugin(tmp_path: Path) -> None:
    broken = {**GUARD_PLUGIN, "config": {}}  # api_keys missing: the hook reports an error
    with lightcontrol(tmp_path, [broken]) as test_client:
        response = test_client.get("/states", headers=AUTH)
        assert response.status_code == 502
        error = response.json()["error"]
        assert (error["code"], error["plugin"]) == ("plugin_failed", "guard")
        assert "api_keys" in error["message"]


def test_plugins_without_hooks_are_not_called(tmp_path: Path) -> None:
    night_mode = {
        "name": "night-mode",
        "path": str(ROOT / "sample_plugins/night_mode/build/plugin.wasm"),
    }
    with lightcontrol(tmp_path, [night_mode]) as test_client:
        middleware = test_client.app.middleware_stack  # type: ignore[attr-defined]
        response = test_client.get("/states", headers=AUTH)
        assert response.status_code == 200
        hooks = _find(middleware, "HttpHooksMiddleware")
        assert hooks._hooked() == []


def _find(app: Any, name: str) -> Any:
    while type(app).__name__ != name:
        # Hostwire's hooks entry holds the middleware it runs (once the app started).
        app = getattr(app, "_hooks", None) or app.app
    return app


def test_plugins_calling_in_process_skip_the_hooks(tmp_path: Path) -> None:
    follow = {
        "name": "follow",
        "path": str(ROOT / "sample_plugins/follow/build/plugin.wasm"),
        "config": {"source": "default", "target": "lamp"},
        "grants": ["updateLight"],
    }
    guard = {**GUARD_PLUGIN, "config": {"api_keys": "ops:key-1"}}  # no rate limit here
    with lightcontrol(tmp_path, [guard, REDACTOR_PLUGIN, follow]) as test_client:
        assert (
            test_client.post(
                "/lights", json={"id": "lamp", "name": "Lamp"}, headers=AUTH
            ).status_code
            == 201
        )
        assert (
            test_client.post("/light_color", json={"action": "ToBlue"}, headers=AUTH).status_code
            == 200
        )
        deadline = time.monotonic() + 20
        while test_client.get("/lights/lamp", headers=AUTH).json()["color"] != "blue":
            assert time.monotonic() < deadline, "follow's in-process call did not get through"
            time.sleep(0.01)  # polling a condition, not timing anything


def test_the_demo_config_keeps_the_spec_and_the_response_schemas(tmp_path: Path) -> None:
    demo = load_config(ROOT / "plugins.yaml")
    settings = Settings(db_path=str(tmp_path / "demo.db"), token=TOKEN)
    plain = Settings(db_path=str(tmp_path / "plain.db"), token=TOKEN)
    keyed = {"Authorization": f"Bearer {TOKEN}", "X-API-Key": "demo-key"}
    with (
        TestClient(create_app(settings, plugins=demo)) as hooked,
        TestClient(create_app(plain)) as bare,
    ):
        for path in ("/openapi.json", "/.well-known/ai-plugin.json", "/openapi.yaml"):
            assert hooked.get(path).content == bare.get(path).content, path
        light = hooked.get("/lights/default", headers=keyed)
        assert light.headers["x-served-by"] == "hostwire"
        assert light.json()["name"] == "[redacted]"  # the demo's redacted field: a string
        assert _spec.problems("Light", light.json()) == []
        lights = hooked.get("/lights", headers=keyed).json()
        assert _spec.problems("LightList", lights) == []
        assert (
            hooked.get("/states", headers=keyed).json()
            == bare.get("/states", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        )


@pytest.mark.parametrize("field", ["brightness", "revision", "created_at"])
def test_a_redaction_that_breaks_the_light_schema_is_refused(tmp_path: Path, field: str) -> None:
    breaking = {**REDACTOR_PLUGIN, "config": {"redact": field}}
    with lightcontrol(tmp_path, [breaking]) as test_client:
        response = test_client.get("/lights/default", headers=AUTH)
        assert response.status_code == 502
        error = response.json()["error"]
        assert (error["code"], error["plugin"]) == ("plugin_failed", "redactor")
        assert (
            f"the body breaks the 200 schema of GET /lights/{{id}}: /{field}:" in error["message"]
        )
        # The spec is not an operation of itself: rewriting it is refused too.
        assert test_client.get("/openapi.json").status_code == 502
    fail_open = {**breaking, "on_error": "fail_open"}
    with lightcontrol(tmp_path, [fail_open]) as test_client:
        response = test_client.get("/lights/default", headers=AUTH)
        assert response.status_code == 200
        assert _spec.problems("Light", response.json()) == []  # the app's own answer
        assert test_client.get("/openapi.json").json() == _spec.spec()
