"""API requests per second of lightcontrol with 1, 2 and 4 workers on one PostgreSQL.

A throw-away PostgreSQL server (tests/postgres.py, Debian's package) and, for
each N, ``hostwire serve --workers N`` (no plug-ins) on a database of its own
and a free 127.0.0.1 port; the benchmark waits until every worker has
answered. Two kinds of request, in alternating rounds after an untimed warm-up:

- read: ``GET /lights/default``;
- write: ``PATCH /lights/{id}`` with a new brightness, round-robin over 16
  lights: a committed transaction each, serialized per light by the
  database (``UPDATE ... WHERE revision = ...``) whichever worker takes it.

The load is closed-loop and bounded (``_bench.http_load``: ``--connections``
keep-alive connections, each waiting for its answer before the next request,
``--requests`` per round); the kernel spreads the connections over the
workers, which share one listening socket, and the table shows how many
workers answered. Requests per second is per round (median of the rounds);
latency is per request (p50, p99). CPU per request is that of hostwire's
processes (supervisor and workers) and of PostgreSQL's, from /proc, and the
load generator's own use is printed: on this 2-core machine all three share
the cores, so the curve flattens once they are busy, not at N = cores.

Goals (ratios of one run): 2 workers serve >= 1.2x the reads per second of 1
(a second process uses the second core), and 4 workers >= 0.9x those of 2
(no collapse past the cores: no lock, claim or connection contention grows
with N).

    make bench    # or: .venv/bin/python benchmarks/bench_workers.py [--requests N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "platform"), str(ROOT / "tests")]

from _bench import (
    Check,
    free_port,
    http_load,
    machine_busy_seconds,
    percentile,
    served,
    tree_cpu_seconds,
)
from postgres import PostgresServer  # tests/ holds the throw-away server
from workers_kit import WORKER_HEADER, wait_for_workers

TOKEN = "bench-token"
WORKERS = (1, 2, 4)
LIGHTS = 16
SCALE_GOAL = 1.2  # reads/s, 2 workers / 1
FLAT_GOAL = 0.9  # reads/s, 4 workers / 2
ANSWER_TIMEOUT_S = 10.0
START_S = 60.0


@dataclass
class Kind:
    """One kind of request against one server: its figures over the rounds."""

    name: str
    rates: list[float] = field(default_factory=list)  # requests per second, per round
    latencies: list[float] = field(default_factory=list)  # ms, every request
    app_cpu_us: list[float] = field(default_factory=list)  # hostwire's processes, per request
    db_cpu_us: list[float] = field(default_factory=list)  # PostgreSQL's, per request
    client_cpu: list[float] = field(default_factory=list)  # generator CPU / wall, per round
    other_load: list[float] = field(default_factory=list)  # other processes' cores, per round
    workers: Counter[str] = field(default_factory=Counter)  # answers per worker


@dataclass
class Served:
    workers: int
    port: int
    pid: int
    postmaster: int  # PostgreSQL's
    lights: list[str]
    kinds: dict[str, Kind]

    def read(self, _: int) -> bytes:
        return (
            f"GET /lights/default HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n"
        ).encode("ascii")

    def write(self, n: int) -> bytes:
        body = json.dumps({"brightness": n % 101}).encode()
        return (
            f"PATCH /lights/{self.lights[n % len(self.lights)]} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{self.port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("ascii") + body


def answered(kind: Kind) -> Check:
    marker = f"\r\n{WORKER_HEADER}: ".encode()

    def check(head: bytes, body: bytes) -> bool:
        start = head.find(marker)
        if start >= 0:
            end = head.find(b"\r\n", start + len(marker))
            kind.workers[head[start + len(marker) : end].decode()] += 1
        return head[9:12] == b"200" and body.startswith(b"{")

    return check


def run_round(
    runner: asyncio.Runner, server: Served, kind: str, requests: int, connections: int
) -> None:
    figures = server.kinds[kind]
    make = server.read if kind == "read" else server.write
    batch = [make(n) for n in range(requests)]  # untimed
    busy_before = machine_busy_seconds()
    app_before, db_before = tree_cpu_seconds(server.pid), tree_cpu_seconds(server.postmaster)
    client_before = time.process_time()
    done, elapsed, latencies = runner.run(
        http_load(
            server.port,
            batch,
            connections,
            check=answered(figures),
            label=f"{server.workers} workers",
            answer_timeout_s=ANSWER_TIMEOUT_S,
        )
    )
    client = time.process_time() - client_before
    app = tree_cpu_seconds(server.pid) - app_before
    db = tree_cpu_seconds(server.postmaster) - db_before
    busy_after = machine_busy_seconds()
    figures.rates.append(done / elapsed)
    figures.latencies.extend(latencies)
    figures.app_cpu_us.append(app / done * 1e6)
    figures.db_cpu_us.append(db / done * 1e6)
    figures.client_cpu.append(client / elapsed)
    if busy_before is not None and busy_after is not None:
        other = busy_after - busy_before - app - db - client
        figures.other_load.append(max(0.0, other / elapsed))


def print_table(servers: list[Served]) -> None:
    print(
        f"{'workers':<8}{'kind':<7}{'req/s':>8}{'min':>8}{'max':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'app CPU µs':>11}{'db CPU µs':>10}{'client':>8}{'other':>7}  answered by"
    )
    for server in servers:
        for kind in server.kinds.values():
            spread = " ".join(f"{w}:{c}" for w, c in sorted(kind.workers.items()))
            other = statistics.median(kind.other_load) if kind.other_load else float("nan")
            print(
                f"{server.workers:<8}{kind.name:<7}{statistics.median(kind.rates):>8.0f}"
                f"{min(kind.rates):>8.0f}{max(kind.rates):>8.0f}"
                f"{statistics.median(kind.latencies):>8.2f}{percentile(kind.latencies, 0.99):>8.2f}"
                f"{statistics.median(kind.app_cpu_us):>11.0f}{statistics.median(kind.db_cpu_us):>10.0f}"
                f"{statistics.median(kind.client_cpu):>8.0%}{other:>7.2f}  {spread}"
            )


def bench(
    pg: PostgresServer, workers: int, tmp: Path, runner: asyncio.Runner, args: argparse.Namespace
) -> Served:
    database = pg.create_database()
    port = free_port()
    executable = Path(sys.executable).with_name("hostwire")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "hostwire"]
    command += ["serve", "--host", "127.0.0.1", "--port", str(port), "--db", database]
    command += ["--workers", str(workers)]
    env = {**os.environ, "LIGHTCONTROL_TOKEN": TOKEN, "PYTHONPATH": str(ROOT / "platform")}
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    try:
        with served(
            f"{workers} workers",
            command=command,
            env=env,
            log_path=tmp / f"workers-{workers}.log",
            ready_url=f"http://127.0.0.1:{port}/openapi.json",
            start_s=START_S,
        ) as process:
            if workers > 1:  # one worker is the plain server: it names no worker
                wait_for_workers(process, f"http://127.0.0.1:{port}", set(range(1, workers + 1)))
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
                lights = [
                    client.post("/lights", json={"name": f"lamp {n}"})
                    .raise_for_status()
                    .json()["id"]
                    for n in range(LIGHTS)
                ]
            server = Served(
                workers,
                port,
                process.pid,
                postmaster,
                lights,
                {"read": Kind("read"), "write": Kind("write")},
            )
            for kind in server.kinds:  # warm-up, untimed, its figures dropped
                run_round(runner, server, kind, args.requests // 2, args.connections)
            server.kinds = {"read": Kind("read"), "write": Kind("write")}
            for _ in range(args.rounds):
                for kind in server.kinds:
                    run_round(runner, server, kind, args.requests, args.connections)
            return server
    finally:
        pg.drop_database(database)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per round and kind")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    print(
        f"lightcontrol, hostwire serve --workers N on one PostgreSQL, {args.connections} "
        f"connections, {args.rounds} rounds of {args.requests} requests per kind, "
        f"{os.cpu_count()} cores"
    )
    with (
        tempfile.TemporaryDirectory(prefix="hostwire-bench-") as tmp,
        PostgresServer() as pg,
        asyncio.Runner() as runner,
    ):
        servers = [bench(pg, n, Path(tmp), runner, args) for n in WORKERS]
    print_table(servers)
    reads = {s.workers: statistics.median(s.kinds["read"].rates) for s in servers}
    scale, flat = reads[2] / reads[1], reads[4] / reads[2]
    scale_met, flat_met = scale >= SCALE_GOAL, flat >= FLAT_GOAL
    print(
        f"reads/s, 2 workers / 1: {scale:.2f}x (goal >= {SCALE_GOAL}): "
        f"{'goal met' if scale_met else 'goal missed'}"
    )
    print(
        f"reads/s, 4 workers / 2: {flat:.2f}x (goal >= {FLAT_GOAL}): "
        f"{'goal met' if flat_met else 'goal missed'}"
    )
    return 0  # a missed goal is a figure, not an error: `make bench` runs the rest


if __name__ == "__main__":
    sys.exit(main())
