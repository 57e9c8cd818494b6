"""The tasks example end to end: a FastAPI + SQLAlchemy app with its own plug-in.

On SQLite (file and in memory) and PostgreSQL, through the app's real routes:
the plug-in trims titles and vetoes some (nothing written), and its
after-create handler calls the app back to add a review task.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from tasks.app import create_app

from event_plugins import wait_for
from hostwire.cli import main
from live_server import free_port

HERE = Path(__file__).resolve().parents[2] / "examples" / "tasks"
CONFIG = HERE / "plugins.yaml"
WASM = HERE / "plugins" / "task_policy" / "build" / "plugin.wasm"


@pytest.fixture(autouse=True)
def _built() -> None:
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: run the tests with `make test`, which builds it.")


def titles(client: TestClient) -> list[str]:
    return [t["title"] for t in client.get("/tasks").json()]


def test_the_plugin_trims_vetoes_and_reacts(database_url: str) -> None:
    app = create_app(database_url, config=CONFIG)
    with TestClient(app) as client:
        made = client.post("/tasks", json={"title": "  ship it  ", "priority": 1})
        vetoed = client.post("/tasks", json={"title": "we can skip the tests"})
        wait_for(lambda: len(titles(client)) == 2, "the review task")
        listed = titles(client)
    assert made.status_code == 201
    assert made.json()["title"] == "ship it"
    assert vetoed.status_code == 422
    assert vetoed.json()["error"]["code"] == "rejected"
    assert (
        'task-policy" rejected the change: a task may not say' in vetoed.json()["error"]["message"]
    )
    assert listed == ["ship it", "Review: ship it"]


def test_updates_are_checked_too_and_a_veto_changes_nothing(database_url: str) -> None:
    app = create_app(database_url, config=CONFIG)
    with TestClient(app) as client:
        task = client.post("/tasks", json={"title": "write docs"}).json()
        refused = client.patch(f"/tasks/{task['id']}", json={"title": "skip the tests"})
        kept = client.get(f"/tasks/{task['id']}").json()
    assert refused.status_code == 422
    assert kept["title"] == "write docs"


def test_the_served_document_has_the_tracked_models_webhooks(tmp_path: Path) -> None:
    app = create_app("sqlite://", config=CONFIG)
    with TestClient(app) as client:
        document = client.get("/openapi.json").json()
    assert "task.before_save" in document["webhooks"]
    assert "task.after_destroy" in document["webhooks"]
    out = tmp_path / "openapi.json"
    assert (
        main(["openapi", "--app", "tasks.app:create_app", "--db", "sqlite://", "--out", str(out)])
        == 0
    )
    assert json.loads(out.read_text())["webhooks"] == document["webhooks"]


def test_hostwire_serve_runs_the_app_named_by_app(tmp_path: Path) -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "hostwire", "serve", "--app", "tasks.app:create_app",
        "--config", str(CONFIG), "--db", f"sqlite:///{tmp_path / 'tasks.db'}",
        "--port", str(port),
    ]  # fmt: skip
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(command, cwd=HERE, stderr=log, env={**os.environ})
    try:
        base = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/tasks", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < end, "the server did not start"
                time.sleep(0.1)
        refused = httpx.post(f"{base}/tasks", json={"title": "skip the tests"})
        made = httpx.post(f"{base}/tasks", json={"title": "ok"})
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        log.close()
    assert refused.status_code == 422
    assert made.status_code == 201
    assert server.returncode == 0
