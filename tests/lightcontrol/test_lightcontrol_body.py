"""Hostile request bodies and clients that leave: a clear 4xx or a quiet log line, never a 500."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.testclient import TestClient

from lightcontrol._body import MAX_DEPTH, MAX_NUMBER_CHARS, BadJson, parse_json
from lightcontrol.app import Settings, create_app
from live_server import serving
from openapi_check import SpecChecker

TOKEN = "body-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
BODY_ROUTES = [
    pytest.param("POST", "/lights", id="createLight"),
    pytest.param("PATCH", "/lights/default", id="updateLight"),
    pytest.param("POST", "/light_control", id="controlLight"),
    pytest.param("POST", "/light_color", id="setLightColor"),
]
HOSTILE = [
    pytest.param(
        b'{"name": "x", "brightness": ' + b"7" * 5000 + b"}", "5000 characters", id="5000-digits"
    ),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested more than", id="deep-arrays"),
    pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested more than", id="deep-objects"),
    pytest.param(
        b'{"name": "lamp \\ud800"}', "lone UTF-16 surrogate at /name", id="lone-surrogate"
    ),
    pytest.param(b'{"\\udfff": "x"}', "lone UTF-16 surrogate at /", id="surrogate-key"),
    pytest.param(b'{"a": [{"b": "\\udbff"}]}', "surrogate at /a/0/b", id="surrogate-deep"),
    pytest.param(b'{"name": "x", "brightness": NaN}', "NaN is not a JSON value", id="nan"),
    pytest.param(b'{"brightness": -Infinity}', "-Infinity is not a JSON value", id="infinity"),
    pytest.param(b'{"brightness": 1e400}', "1e400, which is out of range", id="huge-float"),
    pytest.param(b'{"name": "\xff"}', "not UTF-8: byte 0xff at offset 10", id="not-utf8"),
    pytest.param(b"\xff\xfe{\x00}\x00", "not UTF-8", id="utf16"),
]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(db_path=str(tmp_path / "lights.db"), token=TOKEN)
    with TestClient(create_app(settings)) as test_client:
        test_client.event_hooks = {"request": [], "response": [SpecChecker()]}
        yield test_client


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize(("body", "says"), HOSTILE)
def test_hostile_json_is_a_400_and_changes_nothing(
    client: TestClient, method: str, path: str, body: bytes, says: str
) -> None:
    before = client.get("/lights", headers=AUTH).json()
    response = client.request(method, path, headers=AUTH, content=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json"
    assert says in error["message"]
    assert error["message"].endswith(".")
    assert len(error["message"]) < 200  # the bad value itself is not echoed
    assert client.get("/lights", headers=AUTH).json() == before


def test_nesting_up_to_the_limit_is_json_and_goes_on_to_the_schema(client: TestClient) -> None:
    deepest = b'{"name": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    taken = client.post("/lights", headers=AUTH, content=deepest)
    assert taken.status_code == 422  # JSON, but name must be a string
    assert taken.json()["error"]["details"][0]["field"] == "/name"
    deeper = b'{"name": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    assert client.post("/lights", headers=AUTH, content=deeper).status_code == 400


def test_numbers_up_to_the_limit_are_json_and_go_on_to_the_schema(client: TestClient) -> None:
    longest = b'{"name": "x", "brightness": ' + b"1" * MAX_NUMBER_CHARS + b"}"
    taken = client.post("/lights", headers=AUTH, content=longest)
    assert taken.status_code == 422  # JSON, but over the maximum of 100
    assert taken.json()["error"]["details"][0]["field"] == "/brightness"
    longer = b'{"name": "x", "brightness": ' + b"1" * (MAX_NUMBER_CHARS + 1) + b"}"
    assert client.post("/lights", headers=AUTH, content=longer).status_code == 400


def test_surrogate_pairs_and_brackets_in_strings_are_fine(client: TestClient) -> None:
    # A pair is one character; "\\ud800" is an escaped backslash, then "ud800".
    name = '"lamp ' + "[{" * (MAX_DEPTH // 2 + 1) + ' \\ud83d\\udca1 \\\\ud800"'
    created = client.post("/lights", headers=AUTH, content=f'{{"name": {name}}}'.encode())
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "lamp " + "[{" * (MAX_DEPTH // 2 + 1) + " \U0001f4a1 \\ud800"


@pytest.mark.parametrize("path", ["/events/deliveries", "/events/stream"])
def test_a_5000_digit_query_number_is_a_422(client: TestClient, path: str) -> None:
    response = client.get(path, headers=AUTH, params={"limit": "9" * 5000})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "limit"


def test_parse_json_names_the_field_with_a_lone_surrogate_safely() -> None:
    with pytest.raises(BadJson) as caught:
        parse_json(b'{"a/b": {"\\ud800~": "\\udc00"}}')
    # RFC 6901 escapes (~1 for /, ~0 for ~), and the surrogate itself made printable.
    assert caught.value.field == "/a~1b/\\ud800~0"
    assert caught.value.details == [{"field": "/a~1b/\\ud800~0", "message": str(caught.value)}]


# -- a client that leaves in the middle of its body ------------------------------------


def access_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lightcontrol.access"]


def test_a_client_leaving_mid_body_is_logged_as_499_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(db_path=str(tmp_path / "lights.db"), token=TOKEN)
    caplog.set_level(logging.INFO)
    with serving(create_app(settings)) as url:
        port = urlsplit(url).port
        assert port is not None
        partial = b'{"action": "TurnOn"'  # 19 of the 100 bytes it announces
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /light_control HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Authorization: Bearer {TOKEN}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 100\r\n"
                + b"X-Request-ID: left-early\r\n\r\n"
                + partial
            )
        deadline = time.monotonic() + 30
        while not any("request_id=left-early" in message for message in access_log(caplog)):
            assert time.monotonic() < deadline, "the request was never logged"
            time.sleep(0.01)  # waiting for the server's log line, not timing anything
        light = httpx.get(f"{url}/states", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert light["status"] == "off"  # the half-sent TurnOn did nothing
    (access,) = [message for message in access_log(caplog) if "request_id=left-early" in message]
    assert '"POST /light_control" 499 ' in access
    assert "request_id=left-early: the client closed the connection before" in caplog.text
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert "Traceback" not in caplog.text
