"""lightcontrol's middleware in process: the access log and the body reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient

from lightcontrol._middleware import BodyLimitMiddleware, RequestIdMiddleware
from lightcontrol.app import Settings, create_app

TOKEN = "log-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(db_path=str(tmp_path / "lights.db"), token=TOKEN)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("encoded", "escaped"),
    [
        pytest.param("%0A", "\\n", id="LF"),
        pytest.param("%0D", "\\r", id="CR"),
        pytest.param("%00", "\\x00", id="NUL"),
        pytest.param("%E2%80%AE", "\\u202e", id="RLO"),
        pytest.param("%C2%85", "\\x85", id="NEL"),
        pytest.param("%22", '\\"', id="quote"),
    ],
)
def test_the_path_and_query_in_the_access_log_are_escaped(
    client: TestClient, caplog: pytest.LogCaptureFixture, encoded: str, escaped: str
) -> None:
    forged = f'{encoded}1.2.3.4 "GET /states" 200 0.1ms request_id=x principal=user{encoded}'
    with caplog.at_level("INFO", logger="lightcontrol.access"):
        client.get(f"/lights/a{forged}")  # no token needed to be logged
        client.get(f"/states?q={encoded}&r=1", headers={"X-Request-ID": "q-1"})
    lines = [r.getMessage() for r in caplog.records if r.name == "lightcontrol.access"]
    assert len(lines) == 2  # one line per request: nothing forged
    assert all(line.isprintable() and len(line.splitlines()) == 1 for line in lines)
    path_line, query_line = lines
    assert f'"GET /lights/a{escaped}1.2.3.4 \\"GET /states\\" 200' in path_line
    assert '" 401 ' in path_line
    assert f'"GET /states?q={encoded}&r=1" 401 ' in query_line  # the query as it was sent
    assert "request_id=q-1" in query_line


@pytest.mark.parametrize(
    ("agent", "escaped"),
    [
        pytest.param(b"curl\nx", "curl\\nx", id="LF"),
        pytest.param(b"curl\x00x", "curl\\x00x", id="NUL"),
        pytest.param(b"curl\x1b[2Jx", "curl\\x1b[2Jx", id="terminal-escape"),
        pytest.param(b"curl\x85x", "curl\\x85x", id="NEL"),
        pytest.param(b'curl" principal="admin', 'curl\\" principal=\\"admin', id="quote"),
    ],
)
def test_a_header_in_the_access_log_is_escaped(
    caplog: pytest.LogCaptureFixture, agent: bytes, escaped: str
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    # The header bytes exactly as a server passes them (the TestClient re-encodes them).
    headers = [(b"user-agent", agent)]
    scope = {"type": "http", "method": "GET", "path": "/states", "headers": headers}
    with caplog.at_level("INFO", logger="lightcontrol.access"):
        anyio.run(RequestIdMiddleware(app), scope, receive, send)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "lightcontrol.access"]
    assert line.isprintable()
    assert line.endswith(f' principal=- agent="{escaped}"')


def test_a_client_that_leaves_before_its_body_is_complete_runs_nothing() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not run")

    messages = [
        {"type": "http.request", "body": b'{"action":"TurnOn"}', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Any:
        return messages.pop(0)

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/light_control", "headers": []}
    anyio.run(BodyLimitMiddleware(app, max_bytes=1000), scope, receive, send)
    assert messages == []
    # Only the access log reads this answer: the client is gone.
    assert [m.get("status") for m in sent] == [499, None]
