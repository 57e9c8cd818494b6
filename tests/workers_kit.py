"""``hostwire serve --workers N`` (lightcontrol) as a real process, its worker processes,
and what clients sending it updates were told (``Ledger``, ``check_ledger``)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from live_server import ROOT, free_port

WORKER_HEADER = "x-hostwire-worker"
TOKEN = "workers-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextmanager
def workers_server(
    db: str, workers: int, *extra: str, token: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """lightcontrol served by ``workers`` processes on ``db``: the parent process and the URL.

    Yields once every worker answers (each says which it is, in ``x-hostwire-worker``).
    Their log goes to a file, which ``process.stderr`` reads: a pipe nobody reads
    while they run fills up (an access line per request), and then their logging
    blocks them.
    """
    port = free_port()
    env = {**os.environ, "LIGHTCONTROL_TOKEN": token}
    command = [sys.executable, "-m", "hostwire", "serve", "--port", str(port), "--db", db]
    with (
        tempfile.NamedTemporaryFile(prefix="hostwire-workers-", suffix=".log") as log,
        open(log.name, "rb") as reading,  # an offset of its own: the log so far
    ):
        process = subprocess.Popen(
            [*command, "--workers", str(workers), *extra],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        process.stderr = reading
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


def socket_owner(local_port: int, remote_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the TCP connection 127.0.0.1:local_port -> :remote_port."""
    inodes = {
        inode
        for local, remote, _, inode in _tcp_connections()
        if (local, remote) == (local_port, remote_port)
    }
    for pid in pids:
        if inodes & _socket_inodes(pid):
            return pid
    return None


def connected_ports(pid: int, remote_port: int) -> set[int]:
    """The local ports of process ``pid``'s established TCP connections to ``remote_port``."""
    held = _socket_inodes(pid)
    return {
        local
        for local, remote, state, inode in _tcp_connections()
        if remote == remote_port and state == _ESTABLISHED and inode in held
    }


_ESTABLISHED = 1  # the state column of /proc/net/tcp


def _tcp_connections() -> list[tuple[int, int, int, int]]:
    """(local port, remote port, state, socket inode) of each IPv4 TCP socket (/proc/net/tcp)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        ports = int(local.split(":")[1], 16), int(remote.split(":")[1], 16)
        found.append((*ports, int(state, 16), int(inode)))
    return found


def process_state(pid: int) -> str | None:
    """The state letter of process ``pid`` (R, S, T stopped, Z a zombie...); None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` has open (empty when it is gone)."""
    found = set()
    with suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    found.add(int(target[len("socket:[") : -1]))
    return found


@dataclass
class Ledger:
    """What the clients were told: every acknowledged record, every other answer, and the
    writes that got no answer at all (their worker was killed, say)."""

    acked: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (worker, record)
    refused: list[httpx.Response] = field(default_factory=list)
    unanswered: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (light, body)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, url: str, light: str, body: dict[str, Any]) -> int:
        """PATCH ``light`` with ``body``: the status, or 0 when no answer came."""
        # A new connection for each request: the kernel spreads them over the workers.
        try:
            response = httpx.patch(f"{url}/lights/{light}", json=body, headers=AUTH, timeout=30)
        except httpx.TransportError:
            with self.lock:
                self.unanswered.append((light, body))
            return 0
        with self.lock:
            if response.status_code == 200:
                self.acked.append((response.headers[WORKER_HEADER], response.json()))
            else:
                self.refused.append(response)
        return response.status_code

    def records(self, light: str) -> list[dict[str, Any]]:
        with self.lock:
            return [record for _, record in self.acked if record["id"] == light]

    def unanswered_bodies(self, light: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for id_, body in self.unanswered if id_ == light]


def check_ledger(url: str, ledger: Ledger, lights: list[str], start: dict[str, int]) -> None:
    """0 acknowledged writes lost: each has its own revision, the last one is what is stored.

    ``start``: each light's revision before the clients began. A write that got
    no answer may have been committed: it may take a revision of its own (no
    more than one each), and be what is stored if it came last. With every write
    answered, the revisions acknowledged are exactly those after ``start``.
    """
    with httpx.Client(base_url=url, headers=AUTH) as client:
        for light in lights:
            records = ledger.records(light)
            unanswered = ledger.unanswered_bodies(light)
            revisions = sorted(r["revision"] for r in records)
            stored = client.get(f"/lights/{light}").json()
            committed = stored["revision"] - start[light]
            assert len(set(revisions)) == len(revisions), f"{light}: two writes, one revision"
            assert len(records) <= committed <= len(records) + len(unanswered), (light, committed)
            assert all(start[light] < r <= stored["revision"] for r in revisions), light
            last = max(records, key=lambda r: int(r["revision"]), default=None)
            if last is not None and last["revision"] == stored["revision"]:
                assert stored == last
            elif committed:  # an unanswered write came last
                assert any(body.items() <= stored.items() for body in unanswered), stored
