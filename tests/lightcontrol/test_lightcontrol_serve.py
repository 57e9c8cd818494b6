"""`hostwire serve` as a real uvicorn process: durability, races, shutdown."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path
from subprocess import Popen

import httpx

from conftest import ROOT
from live_server import free_port, lightcontrol_server
from openapi_check import SpecChecker

TOKEN = "serve-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def server(db: Path | str, *extra: str) -> AbstractContextManager[tuple[Popen[bytes], str]]:
    return lightcontrol_server(db, *extra, token=TOKEN)


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "lights.db"
    created_ids = []
    with server(db) as (process, url):
        with httpx.Client(base_url=url, headers=AUTH) as client:
            for n in range(5):
                response = client.post("/lights", json={"name": f"lamp {n}"})
                assert response.status_code == 201
                created_ids.append(response.json()["id"])
            assert client.post("/light_color", json={"action": "ToBlue"}).status_code == 200
        process.send_signal(signal.SIGKILL)  # right after the last response
        process.wait(timeout=30)
    with server(db) as (_, url), httpx.Client(base_url=url, headers=AUTH) as client:
        ids = [light["id"] for light in client.get("/lights").json()["lights"]]
        assert ids[1:] == created_ids
        assert client.get("/states").json()["color"] == "blue"


def test_concurrent_clients_leave_a_consistent_state(tmp_path: Path) -> None:
    checker = SpecChecker()
    with server(tmp_path / "lights.db") as (_, url):
        successes = 0
        lock = threading.Lock()
        errors: list[str] = []

        def client_loop(n: int) -> None:
            nonlocal successes
            with httpx.Client(
                base_url=url, headers=AUTH, timeout=30, event_hooks={"response": [checker]}
            ) as client:
                for i in range(25):
                    if (n + i) % 2:
                        body = {"action": "TurnOn" if i % 2 else "TurnOff"}
                        response = client.post("/light_control", json=body)
                    else:
                        body = {"action": ["ToRed", "ToGreen", "ToBlue"][i % 3]}
                        response = client.post("/light_color", json=body)
                    if response.status_code == 200:
                        with lock:
                            successes += 1
                    else:
                        errors.append(response.text)

        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors
        with httpx.Client(base_url=url, headers=AUTH) as client:
            light = client.get("/lights/default").json()
        assert light["revision"] == 1 + successes == 151
        assert checker.checked == 150


def test_sigterm_shuts_down_cleanly(tmp_path: Path) -> None:
    with server(tmp_path / "lights.db") as (process, url):
        assert httpx.get(f"{url}/states", headers=AUTH).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_sigint_shuts_down_cleanly(tmp_path: Path) -> None:
    with server(tmp_path / "lights.db") as (process, _):
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0


def test_serve_loads_the_configured_plugins(tmp_path: Path) -> None:
    with server(tmp_path / "lights.db", "--config", "plugins.yaml") as (process, url):
        # plugins.yaml has api-guard, an HTTP hook that wants an API key first.
        assert httpx.get(f"{url}/states", headers=AUTH).status_code == 401
        guarded = {**AUTH, "X-API-Key": "demo-key"}
        assert httpx.get(f"{url}/states", headers=guarded).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        log = process.stderr.read().decode()  # type: ignore[union-attr]
    assert 'loaded plug-in "cycle-color": events none; HTTP hooks none; calls get_states, ' in log
    assert 'loaded plug-in "count-vowels"' in log
    assert 'loaded plug-in "api-guard": events none; HTTP hooks http_pre_hook' in log


def test_serve_refuses_a_bad_plugin_before_serving(tmp_path: Path) -> None:
    config = tmp_path / "plugins.yaml"
    config.write_text(
        "plugins:\n  - name: cycle\n"
        f"    path: {ROOT}/sample_plugins/cycle_color/build/plugin.wasm\n"
        "    grants: [getStates, paintItBlack]\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hostwire",
            "serve",
            "--port",
            str(free_port()),
            "--config",
            str(config),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f'hostwire: error: {config}: Plug-in "cycle" grants "paintItBlack", '
            "which is not an operation"
        )
    )
    assert not (tmp_path / "lightcontrol.db").exists()


def _follow_config(path: Path, target: str, grants: list[str]) -> Path:
    path.write_text(
        "plugins:\n"
        "  - name: follow\n"
        f"    path: {ROOT}/sample_plugins/follow/build/plugin.wasm\n"
        f"    config: {{source: default, target: {target}}}\n"
        f"    grants: {grants}\n"
        # The first in-process call of a cold server on a loaded machine can take
        # over a second, and there is only one attempt before the hour of backoff.
        "    limits: {timeout_ms: 15000}\n"
        # an hour of backoff: nothing is retried before the kill
        "events: {backoff_s: 3600, max_backoff_s: 3600}\n"
    )
    return path


def test_undelivered_events_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "lights.db"
    with server(db) as (process, url):
        lamp = httpx.post(f"{url}/lights", json={"name": "Lamp"}, headers=AUTH).json()["id"]
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    # follow's target does not exist yet: its delivery fails (404) and waits to be retried.
    broken = _follow_config(tmp_path / "broken.yaml", "nowhere", ["updateLight"])
    with server(db, "--config", str(broken)) as (process, url):
        response = httpx.post(f"{url}/light_color", json={"action": "ToGreen"}, headers=AUTH)
        assert response.status_code == 200
        process.kill()
        process.wait(timeout=30)
    listed = subprocess.run(
        [sys.executable, "-m", "hostwire", "events", "list", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    (pending,) = json.loads(listed.stdout)
    assert (pending["type"], pending["state"]) == ("light.after_update", "pending")
    # Fixed and restarted: the pending delivery goes out at once, not after its backoff.
    fixed = _follow_config(tmp_path / "fixed.yaml", lamp, ["updateLight"])
    with server(db, "--config", str(fixed)) as (process, url):
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/lights/{lamp}", headers=AUTH).json()["color"] != "green":
            assert time.monotonic() < deadline, "the event was not delivered after the restart"
            time.sleep(0.05)  # polling a condition, not timing anything
        (delivered,) = [
            d
            for d in httpx.get(f"{url}/events/deliveries", headers=AUTH).json()["deliveries"]
            if d["event_id"] == pending["event_id"]
        ]
        assert delivered["state"] == "delivered"


def test_the_event_stream_sends_each_committed_change(tmp_path: Path) -> None:
    with server(tmp_path / "lights.db") as (_, url):
        lines: list[str] = []
        ready = threading.Event()

        def listen() -> None:
            with httpx.stream(
                "GET", f"{url}/events/stream", params={"limit": 2}, headers=AUTH, timeout=30
            ) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                for line in response.iter_lines():
                    if line.startswith(": listening"):
                        ready.set()
                    lines.append(line)

        listener = threading.Thread(target=listen)
        listener.start()
        assert ready.wait(30), "the stream did not start"
        httpx.post(f"{url}/light_color", json={"action": "ToBlue"}, headers=AUTH)
        # A refused change is not in the stream: only committed ones are.
        assert (
            httpx.patch(f"{url}/lights/default", json={"brightness": 500}, headers=AUTH).status_code
            == 422
        )
        httpx.post(f"{url}/lights", json={"id": "desk", "name": "Desk"}, headers=AUTH)
        listener.join(30)
        assert not listener.is_alive(), "the stream did not end after its limit"
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert events == ["light.after_update", "light.after_create"]
    assert data[0]["record"]["color"] == "blue"
    assert data[0]["changes"]["color"] == {"from": "white", "to": "blue"}
    assert data[1]["record"]["id"] == "desk"


def test_serve_refuses_a_read_only_database_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "lights.db"
    with server(db) as (process, _):
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    # A file-format write version above 2 makes SQLite treat the file as read-only,
    # for root too (chmod does not stop root).
    with db.open("r+b") as raw:
        raw.seek(18)
        raw.write(bytes([3]))
    result = subprocess.run(
        [sys.executable, "-m", "hostwire", "serve", "--port", str(free_port()), "--db", str(db)],
        cwd=ROOT,
        env={**os.environ, "LIGHTCONTROL_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"hostwire: error: Storage is unavailable: the database is read-only ({db}, while "
        "opening the database); nothing was changed, retry in 5 s."
    ]
