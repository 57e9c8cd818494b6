"""The store's and events' guarantees on every database lightcontrol runs on.

SQLite (a file, in memory) and PostgreSQL: no lost update under concurrent
toggles (also from two stores, as two processes would be: only the revision
check in the database serializes them), after-events in order and committed
with the write, a veto that writes nothing, and writes that survive SIGKILL.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from conftest import ROOT
from event_plugins import wait_for
from hostwire import parse_config
from lightcontrol.app import Settings, create_app
from lightcontrol.store import LightStore
from live_server import lightcontrol_server
from postgres import PostgresServer

TOKEN = "databases-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST_EVENTS = {"max_attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05, "poll_s": 0.05}
# As in test_lightcontrol_events: light_before_save answers config "answer";
# light_after_validation and light_after_update answer nothing.
ANSWERING = """(module
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "config_get" (func $config_get (param i64) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "answer")
  (data (i32.const 16) "bad_utf8")
  (func $key (param $ptr i32) (param $len i32) (result i64) (local $b i64) (local $i i32)
    (local.set $b (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done (loop $copy
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $b) (i64.extend_i32_u (local.get $i)))
        (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $copy)))
    (local.get $b))
  (func (export "light_before_save") (result i32) (local $v i64) (local $b i64)
    (if (i64.ne (call $config_get (call $key (i32.const 16) (i32.const 8))) (i64.const 0))
      (then
        (local.set $b (call $alloc (i64.const 2)))
        (call $store_u8 (local.get $b) (i32.const 0xff))
        (call $store_u8 (i64.add (local.get $b) (i64.const 1)) (i32.const 0xfe))
        (call $output_set (local.get $b) (i64.const 2))
        (return (i32.const 0))))
    (local.set $v (call $config_get (call $key (i32.const 0) (i32.const 6))))
    (if (i64.eqz (local.get $v)) (then (return (i32.const 0))))
    (call $output_set (local.get $v) (call $length (local.get $v)))
    (i32.const 0))
  (func (export "light_after_validation") (result i32) (i32.const 0))
  (func (export "light_after_update") (result i32) (i32.const 0))
)"""


def server(db: str, *extra: str) -> AbstractContextManager[tuple[Popen[bytes], str]]:
    return lightcontrol_server(db, *extra, token=TOKEN)


@pytest.fixture(params=["sqlite-file", "postgresql"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database that outlives a process."""
    if request.param == "sqlite-file":
        yield f"sqlite:///{tmp_path / 'lights.db'}"
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


def test_concurrent_toggles_lose_no_update(database_url: str) -> None:
    first = LightStore(database_url)
    # A second store (as another process would have) where the database is shared.
    second = LightStore(database_url) if database_url != "sqlite://" else first
    per_thread, threads = 15, 4
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        store = (first, second)[n % 2]
        try:
            for i in range(per_thread):
                if (n + i) % 2:
                    store.update("default", {"status": "on" if i % 2 else "off"})
                else:
                    store.update("default", {"color": ["red", "green", "blue"][i % 3]})
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    try:
        assert not errors
        assert first.get("default")["revision"] == 1 + threads * per_thread
    finally:
        first.close()
        if second is not first:
            second.close()


def _client(tmp_path: Path, url: str, config: dict[str, str]) -> TestClient:
    path = tmp_path / "answering.wat"
    path.write_text(ANSWERING)
    plugins = parse_config(
        {
            "openapi": str(ROOT / "openapi/light.yaml"),
            "plugins": [{"name": "watcher", "path": str(path), "config": config}],
            "events": FAST_EVENTS,
        },
        path=tmp_path / "plugins.yaml",
    )
    settings = Settings(db_path=url, token=TOKEN)
    return TestClient(create_app(settings, plugins=plugins), headers=AUTH)


def _deliveries(client: TestClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.get("/events/deliveries").json()["deliveries"]
    return found


def test_after_events_are_delivered_in_order(tmp_path: Path, database_url: str) -> None:
    with _client(tmp_path, database_url, {}) as client:
        assert client.patch("/lights/default", json={"brightness": 40}).status_code == 200
        wait_for(
            lambda: [d["state"] for d in _deliveries(client)] == ["delivered", "delivered"],
            "both deliveries",
        )
        oldest_first = list(reversed(_deliveries(client)))
    assert [d["type"] for d in oldest_first] == ["light.after_validation", "light.after_update"]


def test_a_veto_writes_nothing_and_leaves_no_outbox_rows(tmp_path: Path, database_url: str) -> None:
    veto = {"answer": '{"reject": {"reason": "not tonight"}}'}
    with _client(tmp_path, database_url, veto) as client:
        before = client.get("/lights/default").json()
        response = client.patch("/lights/default", json={"brightness": 40})
        assert response.status_code == 422
        error = response.json()["error"]
        assert (error["code"], error["plugin"]) == ("rejected", "watcher")
        assert client.get("/lights/default").json() == before
        assert _deliveries(client) == []


def test_acknowledged_writes_survive_sigkill(durable_url: str) -> None:
    created = []
    with server(durable_url) as (process, url):
        with httpx.Client(base_url=url, headers=AUTH) as client:
            for n in range(3):
                response = client.post("/lights", json={"name": f"lamp {n}"})
                assert response.status_code == 201
                created.append(response.json()["id"])
            assert client.post("/light_color", json={"action": "ToBlue"}).status_code == 200
        process.send_signal(signal.SIGKILL)  # right after the last response
        process.wait(timeout=30)
    with server(durable_url) as (_, url), httpx.Client(base_url=url, headers=AUTH) as client:
        ids = [light["id"] for light in client.get("/lights").json()["lights"]]
        assert ids[1:] == created
        assert client.get("/states").json()["color"] == "blue"
