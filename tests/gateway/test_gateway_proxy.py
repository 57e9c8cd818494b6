"""``proxy: true``: the app's API behind the gateway, the plug-ins' HTTP hooks in front."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gateway.kit import FakeApp, answering_wat, write_plugin
from hostwire._gateway import Gateway, load_gateway_config
from hostwire._hostapi import OpenAPIDocument
from live_server import free_port

pytestmark = pytest.mark.usefixtures("environ")
GUARD = {"context": {}, "request": {"headers": {"x-guard": "checked"}}}


def proxied(url: str, gateway_file: Callable[..., Path], tmp_path: Path) -> Path:
    write_plugin(tmp_path, "guard", answering_wat("http_pre_hook"))
    path = gateway_file(url, proxy=True)
    config = load_gateway_config(path).model_dump(exclude_none=True)
    config["plugins"].append(
        {"name": "guard", "path": "guard.wasm", "config": {"http_pre_hook": json.dumps(GUARD)}}
    )
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.fixture
def client(
    fake_app: FakeApp, gateway_file: Callable[..., Path], lago: OpenAPIDocument, tmp_path: Path
) -> Iterator[TestClient]:
    path = proxied(fake_app.url, gateway_file, tmp_path)
    with Gateway(path, document=lago) as gw, TestClient(gw.app) as client:
        yield client


def test_the_api_is_forwarded_with_the_hooks_in_front_and_without_the_gateways_credentials(
    client: TestClient, fake_app: FakeApp
) -> None:
    response = client.get("/api/customers/cus_9")

    assert response.status_code == 200
    assert response.json() == {"customer": {"external_id": "cus_9"}}
    [headers] = fake_app.seen("/api/v1/customers/cus_9")
    assert headers["x-guard"] == "checked"  # the pre-hook's rewrite reached the app
    assert "authorization" not in headers  # the app's key is for plug-ins' calls only


def test_bodies_stream_both_ways_and_redirects_are_not_followed(client: TestClient) -> None:
    echoed = client.post("/api/echo", content=b"hello")
    moved = client.get("/api/moved", follow_redirects=False)

    assert (echoed.status_code, echoed.text) == (200, "echo:hello")
    assert moved.status_code == 302
    assert moved.headers["location"] == "http://example.invalid/"


def test_a_path_that_would_leave_the_base_url_is_refused(client: TestClient) -> None:
    response = client.get("/api/%2e%2e/admin")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_path"


def test_an_app_that_cannot_be_reached_is_a_one_line_502(
    gateway_file: Callable[..., Path], lago: OpenAPIDocument, tmp_path: Path
) -> None:
    path = proxied(f"http://127.0.0.1:{free_port()}", gateway_file, tmp_path)
    with Gateway(path, document=lago) as gw, TestClient(gw.app) as client:
        response = client.get("/api/customers/cus_9")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "bad_gateway"
    assert "\n" not in error["message"]
