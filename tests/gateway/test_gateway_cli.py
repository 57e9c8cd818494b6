"""``hostwire gateway`` as a real process: --check, one-line errors, serving and stopping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from event_plugins import wait_for
from gateway.kit import API_KEY, ROOT, SECRET, FakeApp, invoice_created, sign
from live_server import free_port

ENV = {**os.environ, "BILLING_API_KEY": API_KEY, "WEBHOOK_SECRET": SECRET}


def hostwire(*args: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hostwire", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_loads_everything_and_says_what_is_there(
    gateway_file: Callable[..., Path],
) -> None:
    path = gateway_file("http://127.0.0.1:9")
    done = hostwire("gateway", "--check", "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{path}: ok: 202 operations and 61 webhooks in ")
    assert "plug-ins: on-invoice; events handled: invoice_created" in done.stdout
    # A check writes nothing: no outbox database next to the file.
    assert sorted(p.name for p in path.parent.iterdir() if p.suffix in {".db", ".sqlite"}) == []


def test_check_fails_in_one_line_on_a_missing_variable(
    gateway_file: Callable[..., Path],
) -> None:
    path = gateway_file("http://127.0.0.1:9")
    env = {k: v for k, v in ENV.items() if k != "WEBHOOK_SECRET"}
    done = hostwire("gateway", "--check", "--config", str(path), env=env)
    assert done.returncode == 2
    assert done.stderr == (
        f"hostwire: error: {path}: webhooks.secret: the environment variable "
        "WEBHOOK_SECRET is not set.\n"
    )


def test_a_missing_file_fails_in_one_line(tmp_path: Path) -> None:
    done = hostwire("gateway", "--config", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "nope.yaml: no such gateway configuration file." in done.stderr


def test_the_gateway_serves_delivers_and_stops_cleanly(
    gateway_file: Callable[..., Path], fake_app: FakeApp
) -> None:
    path = gateway_file(fake_app.url)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hostwire", "gateway", "--config", str(path), "--port", str(port)],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the gateway did not start: {process.communicate()[1][-2000:]}")
            time.sleep(0.05)  # waiting for the port to open, not timing anything
        data, headers = sign(invoice_created())
        answer = httpx.post(f"{url}/webhooks", content=data, headers=headers, timeout=10)
        assert answer.status_code == 202, answer.text
        wait_for(lambda: bool(fake_app.seen("/api/v1/customers/cus_1")), "the plug-in's call")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert f"webhook invoice_created {headers['webhook-id']}: accepted for on-invoice" in stderr
    [call] = fake_app.seen("/api/v1/customers/cus_1")
    assert call["authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in stderr  # the credentials never reach the logs
