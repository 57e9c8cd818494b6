"""`hostwire serve` stops cleanly under load: SIGTERM with a delivery backlog and
after hostile plug-in answers exits 0, quickly, and burns no delivery attempt.

A thread torn down inside a plug-in call while the interpreter exits aborts the
process (SIGABRT, "FATAL: exception not rethrown"); a delivery worker blocked on
the event loop made shutdown wait 10 s and then fail that delivery.
``scripts/shutdown_rounds.py`` runs many more rounds of the same.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from hostwire import Outbox

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "shutdown-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUNDS = 6

# before_validation answers invalid UTF-8, before_save config "answer" (garbage
# or deep JSON), before_update 2 MiB (over max_output_bytes).
HOSTILE = """(module
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "config_get" (func $config_get (param i64) (result i64)))
  (memory (export "memory") 1)
  (func (export "light_before_validation") (result i32) (local $b i64)
    (local.set $b (call $alloc (i64.const 2)))
    (call $store_u8 (local.get $b) (i32.const 0xff))
    (call $store_u8 (i64.add (local.get $b) (i64.const 1)) (i32.const 0xfe))
    (call $output_set (local.get $b) (i64.const 2))
    (i32.const 0))
  (func (export "light_before_save") (result i32) (local $k i64) (local $v i64)
    (local.set $k (call $alloc (i64.const 1)))
    (call $store_u8 (local.get $k) (i32.const 97))
    (local.set $v (call $config_get (local.get $k)))
    (if (i64.eqz (local.get $v)) (then (return (i32.const 0))))
    (call $output_set (local.get $v) (call $length (local.get $v)))
    (i32.const 0))
  (func (export "light_before_update") (result i32)
    (call $output_set (call $alloc (i64.const 2097152)) (i64.const 2097152))
    (i32.const 0))
)"""


def write_config(directory: Path) -> Path:
    (directory / "hostile.wat").write_text(HOSTILE)
    follow = ROOT / "sample_plugins/follow/build/plugin.wasm"
    deep = "[" * 100_000
    config = directory / "plugins.yaml"
    config.write_text(
        f"openapi: {ROOT / 'openapi/light.yaml'}\n"
        "plugins:\n"
        f"  - {{name: garbage, path: hostile.wat, on_error: fail_open, config: {{a: 'no json'}}}}\n"
        f"  - {{name: deep, path: hostile.wat, on_error: fail_open, config: {{a: '{deep}'}}}}\n"
        f"  - name: follow\n    path: {follow}\n"
        "    config: {source: default, target: lamp}\n    grants: [updateLight]\n"
        "events: {backoff_s: 0.2}\n"
    )
    return config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sigterm_round(directory: Path, writes: int = 60) -> dict[str, Any]:
    """Start the server, write concurrently (a backlog), SIGTERM; what happened."""
    db = directory / "lights.db"
    log_path = directory / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:  # a file, not a pipe: a full pipe blocks the server
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hostwire",
                "serve",
                "--port",
                str(port),
                "--db",
                str(db),
                "--config",
                str(write_config(directory)),
            ],
            cwd=directory,
            env={**os.environ, "LIGHTCONTROL_TOKEN": TOKEN},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/openapi.json", timeout=1)
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"no server: {log_path.read_text()[-2000:]}") from None
                    time.sleep(0.05)  # waiting for the port to open, not timing anything
            with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
                if client.get("/lights/lamp").status_code == 404:
                    client.post("/lights", json={"id": "lamp", "name": "Lamp"})
                colours = ["ToRed", "ToGreen", "ToBlue"]
                with ThreadPoolExecutor(6) as pool:
                    statuses = list(
                        pool.map(
                            lambda n: (
                                client.post(
                                    "/light_color", json={"action": colours[n % 3]}
                                ).status_code
                            ),
                            range(writes),
                        )
                    )
            stopping = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(60)
            stop_s = time.monotonic() - stopping
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)
    outbox = Outbox(db)
    rows = [(d["state"], d["attempts"], d["last_error"]) for d in outbox.deliveries(limit=10**6)]
    outbox.close()
    return {
        "code": code,
        "stop_s": stop_s,
        "statuses": statuses,
        "pending": sum(1 for state, _, _ in rows if state == "pending"),
        "burned": [row for row in rows if row[0] != "delivered" and (row[1] or row[2])],
        "log": log_path.read_text(),
    }


def test_sigterm_with_a_backlog_and_after_hostile_answers_exits_0(tmp_path: Path) -> None:
    backlog = 0
    for n in range(ROUNDS):
        outcome = sigterm_round(tmp_path)
        assert outcome["code"] == 0, f"round {n} exited {outcome['code']}: {outcome['log'][-3000:]}"
        assert set(outcome["statuses"]) == {200}
        # Whatever was in flight at the SIGTERM stays pending, attempts untouched.
        assert outcome["burned"] == []
        assert "Traceback" not in outcome["log"]
        backlog = max(backlog, outcome["pending"])
    assert backlog > 0, "no round had a backlog at the SIGTERM: the test proves nothing"
