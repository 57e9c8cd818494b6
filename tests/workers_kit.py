"""``hostwire serve --workers N`` (lightcontrol) as a real process, and its worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from live_server import ROOT, free_port

WORKER_HEADER = "x-hostwire-worker"


@contextmanager
def workers_server(
    db: str, workers: int, *extra: str, token: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """lightcontrol served by ``workers`` processes on ``db``: the parent process and the URL.

    Yields once every worker answers (each says which it is, in ``x-hostwire-worker``).
    """
    port = free_port()
    env = {**os.environ, "LIGHTCONTROL_TOKEN": token}
    command = [sys.executable, "-m", "hostwire", "serve", "--port", str(port), "--db", db]
    process = subprocess.Popen(
        [*command, "--workers", str(workers), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_workers(process, url, set(range(1, workers + 1)))
        yield process, url
    finally:
        if process.poll() is None:
            workers_left = worker_pids(process.pid)
            process.kill()
            for pid in workers_left:
                _kill(pid)
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()


def wait_for_workers(
    process: subprocess.Popen[bytes],
    url: str,
    expected: set[int],
    *,
    path: str = "/openapi.json",
    timeout_s: float = 60,
) -> None:
    """Until every worker numbered in ``expected`` has answered a request (new connections)."""
    wanted = {str(n) for n in expected}
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while not wanted <= seen:
        try:
            response = httpx.get(f"{url}{path}", timeout=5)
            seen.add(response.headers.get(WORKER_HEADER, ""))
        except httpx.TransportError:
            time.sleep(0.05)  # waiting for the port to open, not timing anything
        if process.poll() is not None or time.monotonic() > deadline:
            stderr = process.stderr.read().decode()[-3000:] if process.stderr else ""
            raise RuntimeError(f"workers {sorted(wanted - seen)} did not answer: {stderr}")


def worker_pids(parent: int) -> list[int]:
    """The worker processes of ``hostwire serve --workers`` (pid ``parent``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in command:
            found.append(int(entry.name))
    return sorted(found)


def _kill(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, 9)
