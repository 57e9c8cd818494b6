"""The operators' routes on the gateway, as on an in-process app: /metrics, the
plug-in API with hot reload, the console; behind an admin token of their own."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from conftest import compile_wat
from gateway.kit import API_KEY, SECRET, FakeApp, answering_wat, write_plugin
from hostwire import ConfigError
from hostwire._gateway import Gateway
from hostwire._hostapi import OpenAPIDocument

pytestmark = pytest.mark.usefixtures("environ")
TOKEN = "gateway-admin-token-for-tests"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
GUARD = {"context": {}, "request": {"headers": {"x-guard": "checked"}}}
# The guard's next build: a pre-hook that leaves the request as it is.
PASSING = """(module (memory (export "memory") 1)
  (func (export "http_pre_hook") (result i32) (i32.const 0)))"""


def with_guard(url: str, gateway_file: Callable[..., Path], tmp_path: Path) -> Path:
    """The fake app behind the gateway (proxy: true), a guard's pre-hook in front."""
    write_plugin(tmp_path, "guard", answering_wat("http_pre_hook"))
    path = gateway_file(url, proxy=True)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["plugins"].append(
        {"name": "guard", "path": "guard.wasm", "config": {"http_pre_hook": json.dumps(GUARD)}}
    )
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def config(fake_app: FakeApp, gateway_file: Callable[..., Path], tmp_path: Path) -> Path:
    return with_guard(fake_app.url, gateway_file, tmp_path)


@pytest.fixture
def client(
    config: Path, lago: OpenAPIDocument, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("HOSTWIRE_ADMIN_TOKEN", TOKEN)
    with Gateway(config, document=lago) as gw, TestClient(gw.app) as client:
        yield client


def guard_header(client: TestClient, fake_app: FakeApp) -> str | None:
    """Send a request through the gateway; the x-guard header the app got."""
    assert client.get("/api/customers/cus_1").status_code == 200
    return fake_app.seen("/api/v1/customers/cus_1")[-1].get("x-guard")


def guard(client: TestClient) -> dict[str, Any]:
    found: dict[str, Any]
    (found,) = [
        p
        for p in client.get("/hostwire/plugins", headers=ADMIN).json()["plugins"]
        if p["name"] == "guard"
    ]
    return found


def test_off_without_an_admin_token(
    config: Path, lago: OpenAPIDocument, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOSTWIRE_ADMIN_TOKEN", raising=False)
    with Gateway(config, document=lago) as gw, TestClient(gw.app) as client:
        answer = client.get("/metrics", headers=ADMIN)
        assert answer.status_code == 404
        assert answer.json()["error"]["message"] == "The gateway serves nothing at /metrics."


def test_metrics_count_the_gateways_plugins_behind_the_admin_token(
    client: TestClient, fake_app: FakeApp
) -> None:
    assert guard_header(client, fake_app) == "checked"
    assert client.get("/metrics").status_code == 401
    api_key = {"Authorization": f"Bearer {API_KEY}"}  # the app's own credential opens nothing
    assert client.get("/metrics", headers=api_key).status_code == 401
    scrape = client.get("/metrics", headers=ADMIN)
    assert scrape.status_code == 200
    lines = scrape.text.splitlines()
    assert 'hostwire_plugin_calls_total{export="http_pre_hook",plugin="guard"} 1.0' in lines
    assert 'hostwire_hook_decisions_total{decision="rewrite",plugin="guard"} 1.0' in lines
    assert 'hostwire_outbox_pending_deliveries{plugin="on-invoice"} 0.0' in lines
    console = client.get("/hostwire/", headers={**ADMIN, "Accept": "text/html"})
    assert console.status_code == 200
    assert "guard" in console.text
    assert "on-invoice" in console.text


def test_a_plugin_is_replaced_without_a_restart_and_a_bad_module_is_refused(
    client: TestClient, fake_app: FakeApp
) -> None:
    module = compile_wat(PASSING)
    wrong = client.put(
        "/hostwire/plugins/guard",
        content=module,
        headers={**ADMIN, "Content-Type": "application/wasm", "X-Hostwire-Sha256": "0" * 64},
    )
    assert wrong.status_code == 422
    assert "it was refused and the serving version is unchanged" in wrong.json()["error"]["message"]
    assert guard(client)["version"] == 1
    assert guard_header(client, fake_app) == "checked"
    digest = hashlib.sha256(module).hexdigest()
    done = client.put(
        "/hostwire/plugins/guard",
        content=module,
        headers={**ADMIN, "Content-Type": "application/wasm", "X-Hostwire-Sha256": digest},
    )
    assert done.status_code == 200
    assert (done.json()["version"], done.json()["sha256"]) == (2, digest)
    assert guard_header(client, fake_app) is None  # the new version passes the request on
    # The counters carry on across versions.
    assert guard(client)["stats"]["exports"]["http_pre_hook"]["calls"] == 2


def test_the_file_is_read_again_and_disabling_takes_the_hook_out(
    client: TestClient, fake_app: FakeApp, config: Path
) -> None:
    assert guard_header(client, fake_app) == "checked"
    assert client.post("/hostwire/plugins/guard/disable", headers=ADMIN).status_code == 200
    assert guard_header(client, fake_app) is None
    assert client.post("/hostwire/plugins/guard/enable", headers=ADMIN).status_code == 200
    assert guard_header(client, fake_app) == "checked"
    edited = yaml.safe_load(config.read_text(encoding="utf-8"))
    edited["plugins"][-1]["enabled"] = False
    config.write_text(yaml.safe_dump(edited), encoding="utf-8")
    reloaded = client.post("/hostwire/reload", headers=ADMIN)
    assert reloaded.status_code == 200
    assert guard(client)["state"] == "disabled"
    assert guard_header(client, fake_app) is None


@pytest.mark.parametrize(
    ("token", "message"),
    [
        pytest.param(API_KEY, "also one of the app's API tokens", id="the-apps-api-key"),
        pytest.param(SECRET, "also one of the app's API tokens", id="the-webhook-secret"),
        pytest.param("short", "is 5 characters", id="too-short"),
    ],
)
def test_a_refused_admin_token_stops_the_gateway_and_its_check(
    config: Path,
    lago: OpenAPIDocument,
    monkeypatch: pytest.MonkeyPatch,
    token: str,
    message: str,
) -> None:
    monkeypatch.setenv("HOSTWIRE_ADMIN_TOKEN", token)
    with pytest.raises(ConfigError, match=message):
        Gateway(config, document=lago)
    with pytest.raises(ConfigError, match=message):
        Gateway.check(config)
    assert not (config.parent / "gateway.db").exists()


def test_a_watched_plugins_new_build_is_served_when_its_file_changes(
    config: Path, lago: OpenAPIDocument, fake_app: FakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSTWIRE_ADMIN_TOKEN", TOKEN)
    edited = yaml.safe_load(config.read_text(encoding="utf-8"))
    edited["plugins"][-1]["watch"] = True
    config.write_text(yaml.safe_dump(edited), encoding="utf-8")
    with Gateway(config, document=lago) as gw, TestClient(gw.app) as client:
        assert guard_header(client, fake_app) == "checked"
        (config.parent / "guard.wasm").write_bytes(compile_wat(PASSING))  # a rebuild
        deadline = time.monotonic() + 20
        while guard(client)["version"] != 2:
            assert time.monotonic() < deadline, "the new build was not loaded"
            time.sleep(0.05)  # polling a condition, not timing anything
        assert guard_header(client, fake_app) is None
