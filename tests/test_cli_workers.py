"""``hostwire serve --workers N`` and ``hostwire gateway --workers N``: several processes.

More than one worker needs PostgreSQL (SQLite is refused in one line, exit 2);
every worker answers on the one port; one that dies is started again; SIGTERM
to the parent stops them all, exit 0; a worker that cannot start stops the
server with its error.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from event_plugins import wait_for
from gateway.kit import API_KEY, ROOT, SECRET, environ, gateway_file
from hostwire.cli import main
from live_server import free_port
from postgres import PostgresServer
from workers_kit import WORKER_HEADER, wait_for_workers, worker_pids, workers_server

__all__ = ["environ", "gateway_file"]  # fixtures, used by name

TOKEN = "workers-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def pg_database(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.mark.parametrize(
    ("db", "named"),
    [
        pytest.param([], "--db is not given", id="no-db"),
        pytest.param(["--db", "sqlite:///lights.db"], "--db is sqlite:///lights.db", id="url"),
        pytest.param(["--db", "lights.db"], "--db is lights.db", id="file"),
    ],
)
def test_serve_refuses_several_workers_without_postgresql(
    db: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--workers", "4", *db]) == 2
    err = capsys.readouterr().err
    assert err == (
        "hostwire: error: --workers 4 needs a PostgreSQL database that every worker shares "
        f"({named}; give postgresql://...): SQLite serves one process only.\n"
    )


def test_serve_refuses_no_workers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--workers", "0"]) == 64
    assert capsys.readouterr().err.endswith("--workers 0: give a number of processes, 1 or more.\n")


def test_gateway_refuses_several_workers_on_its_sqlite_outbox(
    gateway_file: Callable[..., Path], environ: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = gateway_file("http://127.0.0.1:9")
    assert main(["gateway", "--config", str(path), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "--workers 2 needs a PostgreSQL database that every worker shares" in err
    assert f"{path}: database is sqlite:///{path.parent / 'gateway.db'}" in err
    assert err.count("\n") == 1


def test_every_worker_answers_a_killed_one_is_replaced_and_sigterm_stops_all(
    pg_database: str,
) -> None:
    with workers_server(pg_database, 3, token=TOKEN) as (process, url):
        pids = worker_pids(process.pid)
        assert len(pids) == 3
        os.kill(pids[0], signal.SIGKILL)
        # Its slot answers again, from a new process; the others never stopped.
        wait_for(lambda: len(set(worker_pids(process.pid)) - {pids[0]}) == 3, "a new worker")
        wait_for_workers(process, url, {1, 2, 3})
        with httpx.Client(base_url=url, headers=AUTH) as client:
            response = client.post("/light_control", json={"action": "TurnOn"})
            assert response.status_code == 200
            assert response.headers[WORKER_HEADER] in {"1", "2", "3"}
        workers = worker_pids(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert process.stderr is not None
        log = process.stderr.read().decode()
        assert "exited (signal SIGKILL); starting another" in log
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def test_a_worker_that_cannot_start_stops_the_server_with_its_error(pg_database: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LIGHTCONTROL_TOKEN"}
    command = ["serve", "--port", str(free_port()), "--db", pg_database, "--workers", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "hostwire", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("hostwire: error:")]
    assert errors == [
        "hostwire: error: LIGHTCONTROL_TOKEN is not set: with several workers each would make "
        "a bearer token of its own; set it to the token clients use."
    ]


def test_gateway_serves_with_several_workers(
    gateway_file: Callable[..., Path], pg_database: str
) -> None:
    path = gateway_file("http://127.0.0.1:9", database=pg_database)
    port = free_port()
    env = {**os.environ, "BILLING_API_KEY": API_KEY, "WEBHOOK_SECRET": SECRET}
    command = ["gateway", "--config", str(path), "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "hostwire", *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_workers(process, url, {1, 2}, path="/healthz")
        assert httpx.get(f"{url}/healthz").json()["plugins"] == ["on-invoice"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        assert process.stderr is not None
        process.stderr.close()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_shared_socket_lets_asyncio_turn_off_nagle() -> None:
    # asyncio sets TCP_NODELAY only on sockets whose proto says TCP: without
    # it every small answer waits for a delayed ACK (40 ms), as measured.
    from hostwire._targets.server import _listen

    listening = _listen("127.0.0.1", 0)
    with listening:
        assert listening.proto == socket.IPPROTO_TCP


def test_with_json_logs_every_workers_line_is_json_naming_the_worker(pg_database: str) -> None:
    import json

    with workers_server(pg_database, 2, "--log-format", "json", token=TOKEN) as (process, url):
        with httpx.Client(base_url=url, headers=AUTH) as client:
            assert client.get("/states").status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert process.stderr is not None
        lines = process.stderr.read().decode().splitlines()
    # Every line is JSON, the supervisor's and the CLI's own too; a worker's names it.
    records = [json.loads(line) for line in lines if line.strip()]
    from_workers = [r for r in records if "worker" in r]
    assert {r["worker"] for r in from_workers} == {1, 2}
    access = [r for r in from_workers if r["logger"] == "lightcontrol.access"]
    assert any('"GET /states"' in r["message"] and r.get("request_id") for r in access)
    assert any(r["message"].startswith("serving lightcontrol on") for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in from_workers)
