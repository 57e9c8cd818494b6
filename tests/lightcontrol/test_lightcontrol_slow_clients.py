"""Clients that send slowly or leave early, against a real uvicorn on 127.0.0.1.

Raw sockets send exactly the bytes a misbehaving client would. Waits are for
conditions (a log line, the server's answer) with generous bounds; no test
measures time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from conftest import ROOT
from hostwire import parse_config
from hostwire._targets.server import server_config
from lightcontrol.app import Settings, create_app

TOKEN = "slow-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT_S = 30.0  # the bound on every wait: far above what any step takes
TURN_ON = b'{"action":"TurnOn"}'  # 19 bytes
REDACTOR = {
    "name": "redactor",
    "path": str(ROOT / "sample_plugins/redactor/build/plugin.wasm"),
    "config": {"paths": "/lights"},
}


def post_head(length: int) -> bytes:
    return (
        "POST /light_control HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(WAIT_S)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@contextmanager
def serving(app: Any, header_timeout_s: float = 10.0) -> Iterator[str]:
    """``app`` under uvicorn in a thread, configured as ``hostwire serve`` does it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = server_config(
        app, host="127.0.0.1", port=port, header_timeout_s=header_timeout_s, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        with httpx.Client(timeout=WAIT_S) as probe:
            for _ in range(600):  # waiting for startup, not timing it
                if server.started or not thread.is_alive():
                    break
                threading.Event().wait(0.05)
            assert server.started, "uvicorn did not start"
            probe.get(f"http://127.0.0.1:{port}/openapi.json").raise_for_status()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
        listener.close()


class Arrivals:
    """Wraps an app and counts the requests for ``path`` that reached it."""

    def __init__(self, app: Any, path: str) -> None:
        self.app, self.path, self.count = app, path, 0
        self._changed = threading.Condition()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            with self._changed:
                self.count += 1
                self._changed.notify_all()
        await self.app(scope, receive, send)

    def wait_for(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.count >= count, WAIT_S)


@pytest.fixture
def access_lines() -> Iterator[Callable[[str], str]]:
    """``wait(text)``: the first access log line that contains ``text``, once written."""
    lines: list[str] = []
    written = threading.Condition()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            with written:
                lines.append(record.getMessage())
                written.notify_all()

    logger = logging.getLogger("lightcontrol.access")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def wait(text: str) -> str:
        with written:
            assert written.wait_for(lambda: any(text in line for line in lines), WAIT_S)
            return next(line for line in lines if text in line)

    yield wait
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_body_that_never_fully_arrives_is_not_executed_with_hooks(
    tmp_path: Path, access_lines: Callable[[str], str]
) -> None:
    config = parse_config({"plugins": [REDACTOR]}, path=tmp_path / "plugins.yaml")
    settings = Settings(db_path=str(tmp_path / "lights.db"), token=TOKEN)
    with serving(create_app(settings, plugins=config)) as url:
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
            sock.sendall(post_head(100) + TURN_ON)  # declares 100 bytes, sends 19, leaves
        line = access_lines('"POST /light_control"')
        state = httpx.get(f"{url}/states", headers=AUTH, timeout=WAIT_S).json()
    assert state["status"] == "off"  # nothing ran
    assert '"POST /light_control" 499 ' in line  # the client closed the request


def test_slow_senders_hold_no_slot_and_are_cut_with_408(tmp_path: Path) -> None:
    settings = Settings(
        db_path=str(tmp_path / "lights.db"), token=TOKEN, max_concurrent=4, body_timeout_s=2.0
    )
    app = Arrivals(create_app(settings), "/light_control")
    stop = threading.Event()
    with serving(app) as url:
        port = int(url.rsplit(":", 1)[1])
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]

        def trickle() -> None:  # a byte per client now and then, never the whole body
            sent = 0
            while not stop.is_set() and sent < len(TURN_ON) - 1:
                for sock in slow:
                    with contextlib.suppress(OSError):  # cut by the server already
                        sock.sendall(TURN_ON[sent : sent + 1])
                sent += 1
                stop.wait(0.2)  # the pace of a slow client, not a timing assertion

        try:
            for sock in slow:
                sock.sendall(post_head(100))
            app.wait_for(6)  # all six are in the server, sending their bodies
            trickler = threading.Thread(target=trickle)
            trickler.start()
            # More clients still sending than there are slots: a ready request is served.
            ready = httpx.get(f"{url}/states", headers=AUTH, timeout=WAIT_S)
            assert ready.status_code == 200
            answers = [read_until_closed(sock) for sock in slow]
        finally:
            stop.set()
            for sock in slow:
                sock.close()
        trickler.join(WAIT_S)
        state = httpx.get(f"{url}/states", headers=AUTH, timeout=WAIT_S).json()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b'"code": "request_timeout"' in answer
        assert b"connection: close" in answer.lower()
    assert state["status"] == "off"


def test_serve_cuts_a_client_that_trickles_its_headers(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "LIGHTCONTROL_TOKEN": TOKEN, "HOSTWIRE_HEADER_TIMEOUT_S": "1"}
    command = [sys.executable, "-m", "hostwire", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--db", str(tmp_path / "lights.db")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_S) as client:
            for _ in range(600):  # waiting for the port to open, not timing anything
                try:
                    client.get("/openapi.json")
                    break
                except httpx.TransportError:
                    assert process.poll() is None, "hostwire serve exited"
                    threading.Event().wait(0.05)
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"GET /states HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends
                answer = read_until_closed(sock)
            # The deadline covers each request on a kept-alive connection too.
            with socket.create_connection(("127.0.0.1", port)) as sock:
                request = f"GET /states HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {TOKEN}\r\n"
                sock.sendall(request.encode() + b"\r\n" + request.encode())
                again = read_until_closed(sock)
            assert client.get("/states", headers=AUTH).status_code == 200  # others are served
    finally:
        process.terminate()
        process.wait(WAIT_S)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"code": "request_timeout"' in answer
    first, _, second = again.partition(b"HTTP/1.1 408 ")
    assert first.startswith(b"HTTP/1.1 200 ")
    assert b"request_timeout" in second
