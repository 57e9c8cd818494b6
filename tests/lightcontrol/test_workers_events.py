"""After-events with several workers, one killed with SIGKILL in the middle of a delivery.

A real ``hostwire serve --workers 4`` (lightcontrol) on a throw-away
PostgreSQL, with one plug-in (``REPORTER``, a WAT module) whose
``light_after_update`` reports each call over plug-in HTTP to a ``Recorder``
in the test: ``POST /start`` with the event, then ``POST /end`` with it; the
recorder timestamps both. In each round 8 clients send updates over the lights
and the workers; the recorder holds one delivery's ``/start`` open, the test
finds the worker that sent it (the connection's port -> its socket -> the
process holding it) and kills that worker mid-call. The supervisor starts
another, which takes back the dead worker's claims at once. After every
round: 0 acknowledged writes lost (the writes the killed worker was serving
get no answer: each may have committed or not), every committed write's
after-event in the outbox and every delivery of the plug-in delivered,
every acknowledged write's after-event delivered at least once, no event in
two calls at the same time (two workers), and per light each event's first
call starts only after the one before it was delivered.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

import wat
from event_plugins import wait_for
from hostwire._events import sync_engine
from hostwire._events.outbox import deliveries, events
from postgres import PostgresServer
from workers_kit import (
    AUTH,
    TOKEN,
    Ledger,
    check_ledger,
    connected_ports,
    process_state,
    socket_owner,
    wait_for_workers,
    worker_pids,
    workers_server,
)

WORKERS = 4
ROUNDS = 3
CLIENTS = 8
EACH = 6  # updates per client and round
HOLD = 4  # the round's 4th /start is held until its worker is killed
PLUGIN = "reporter"

# light_after_update: POST its input to config "start"'s request, then to "end"'s
# (http_request frees the body it is given: each gets a copy of the input).
REPORTER = f"""(module
{wat.KERNEL}
  (import "extism:host/env" "load_u8" (func $load_u8 (param i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "start")
  (data (i32.const 16) "end")
{wat.TO_BLOCK}
  (func $input_copy (result i64) (local $from i64) (local $to i64) (local $n i64) (local $i i64)
    (local.set $from (call $input_offset))
    (local.set $n (call $input_length))
    (local.set $to (call $alloc (local.get $n)))
    (block $done
      (loop $next
        (br_if $done (i64.ge_u (local.get $i) (local.get $n)))
        (call $store_u8 (i64.add (local.get $to) (local.get $i))
          (call $load_u8 (i64.add (local.get $from) (local.get $i))))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $next)))
    (local.get $to))
  (func (export "light_after_update") (result i32)
    (drop (call $http_request
      (call $config_get (call $to_block (i32.const 0) (i32.const 5))) (call $input_copy)))
    (drop (call $http_request
      (call $config_get (call $to_block (i32.const 16) (i32.const 3))) (call $input_copy)))
    (i32.const 0))
)
"""


@dataclass
class Call:
    """One call of the plug-in, as the recorder saw it (times: monotonic_ns)."""

    event: str
    light: str
    revision: int
    port: int  # the client port of its /start: which connection, so which worker
    start: int
    end: int | None = None
    killed: int | None = None  # its worker was killed (gone by then) before it ended

    def finish(self) -> int:
        """When it was over: its end, or its worker's death."""
        finished = self.end if self.end is not None else self.killed
        assert finished is not None, f"a call of {self.event} never ended, its worker not killed"
        return finished


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a killed worker's, expected
            super().handle_error(request, client_address)


class Recorder:
    """An HTTP server on 127.0.0.1 the plug-in reports its calls to."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.stray: list[str] = []  # an /end with no call of its event running
        self.twice: list[str] = []  # a /start while a call of its event was running
        self.closed: list[tuple[int, int]] = []  # (client port, when) of each connection done
        self.lock = threading.Lock()
        self.held = threading.Event()
        self.release = threading.Event()
        self._hold_at: int | None = None  # hold the start with this number
        self._starts = 0
        self.hold: Call | None = None
        recorder = self

        class Reports(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the plug-in's HTTP client

            def do_POST(self) -> None:
                moment = time.monotonic_ns()
                body = self.rfile.read(int(self.headers["content-length"]))
                if recorder.report(self.path, json.loads(body), self.client_address[1], moment):
                    recorder.release.wait(60)  # its worker is killed meanwhile
                with suppress(OSError):  # the worker may be gone
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    with recorder.lock:
                        recorder.closed.append((self.client_address[1], time.monotonic_ns()))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Reports)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def report(self, path: str, envelope: dict[str, Any], port: int, moment: int) -> bool:
        """Record one report; True when the caller is to hold its answer."""
        record = envelope["data"]["record"]
        with self.lock:
            running = [c for c in self.calls if c.event == envelope["id"] and c.end is None]
            if path == "/start":
                if any(c.killed is None for c in running):
                    self.twice.append(envelope["id"])  # two calls of one event at once
                call = Call(envelope["id"], record["id"], record["revision"], port, moment)
                self.calls.append(call)
                self._starts += 1
                if self._starts == self._hold_at:
                    self.hold = call
                    self.held.set()
                    return True
                return False
            assert path == "/end", path
            live = [c for c in running if c.killed is None]
            if live:
                live[0].end = moment
            else:
                self.stray.append(envelope["id"])
            return False

    def hold_next(self, count: int) -> None:
        """Hold the ``count``-th /start from now, until ``release`` is set."""
        with self.lock:
            self._hold_at = self._starts + count
            self.hold = None
            self.held.clear()
            self.release.clear()

    def closed_since(self, ports: set[int], moment: int) -> bool:
        """Has every connection from ``ports`` been read to its end since ``moment``?"""
        with self.lock:
            return ports <= {port for port, when in self.closed if when > moment}

    def killed(self, ports: set[int], moment: int) -> None:
        """The worker whose connections had ``ports`` is gone: its open calls ended then."""
        with self.lock:
            for call in self.calls:
                if call.end is None and call.killed is None and call.port in ports:
                    call.killed = moment

    def by_event(self) -> dict[str, list[Call]]:
        found: dict[str, list[Call]] = defaultdict(list)
        with self.lock:
            for call in self.calls:
                found[call.event].append(call)
        return found

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def pg_database(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    found = Recorder()
    yield found
    found.close()


def _configuration(folder: Path, recorder: Recorder) -> Path:
    (folder / "reporter.wat").write_text(REPORTER)
    request = {"method": "POST", "headers": {"content-type": "application/json"}}
    plugin = {
        "name": PLUGIN,
        "path": "reporter.wat",
        "allowed_hosts": ["127.0.0.1"],
        "config": {
            step: json.dumps({**request, "url": f"{recorder.url}/{step}"})
            for step in ("start", "end")
        },
        "limits": {"timeout_ms": 60_000},  # the held call lasts until its worker is killed
    }
    path = folder / "hostwire.yaml"
    path.write_text(json.dumps({"plugins": [plugin]}))
    return path


@contextmanager
def _clients(url: str, ledger: Ledger, lights: list[str], round_: int) -> Iterator[None]:
    """``CLIENTS`` threads sending ``EACH`` updates each over the lights; joined at the end."""

    def client(n: int) -> None:
        for i in range(EACH):
            light = lights[(n + i) % len(lights)]
            body = {"brightness": (n * 13 + i) % 101, "name": f"r{round_} c{n} #{i}"}
            ledger.send(url, light, body)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for thread in threads:
            thread.join(timeout=120)


def _kill_mid_delivery(process: subprocess.Popen[bytes], recorder: Recorder, round_: int) -> Call:
    """Kill the worker whose call the recorder holds, as soon as it holds one; the call.

    The worker is stopped first (SIGSTOP), so the connections it has are all it
    will ever have; once it is dead, and the recorder has read what it sent on
    them, its calls still running end at its death.
    """
    wait_for(recorder.held.is_set, f"round {round_}: the held delivery")
    held = recorder.hold
    assert held is not None
    victim = socket_owner(held.port, recorder.port, worker_pids(process.pid))
    assert victim is not None, f"round {round_}: no worker holds the held call's connection"
    os.kill(victim, signal.SIGSTOP)
    wait_for(lambda: process_state(victim) == "T", f"round {round_}: worker {victim} to stop")
    stopped = time.monotonic_ns()
    ports = connected_ports(victim, recorder.port)
    assert held.port in ports
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: process_state(victim) in {None, "Z"}, f"round {round_}: {victim} to die")
    dead = time.monotonic_ns()
    recorder.release.set()
    wait_for(lambda: recorder.closed_since(ports, stopped), f"round {round_}: its connections")
    recorder.killed(ports, dead)
    return held


def _outbox(engine: Engine) -> list[tuple[str, dict[str, Any], str]]:
    """The plug-in's deliveries: (event id, record, state), in commit order."""
    query = (
        select(events.c.id, events.c.payload, deliveries.c.state)
        .join(events, events.c.seq == deliveries.c.event_seq)
        .where(deliveries.c.plugin == PLUGIN)
        .order_by(deliveries.c.event_seq)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [(id_, json.loads(payload)["data"]["record"], state) for id_, payload, state in rows]


def _all_delivered(engine: Engine, expected: int) -> bool:
    found = _outbox(engine)
    return len(found) == expected and all(state == "delivered" for _, _, state in found)


def _check_deliveries(
    engine: Engine, url: str, ledger: Ledger, recorder: Recorder, start: dict[str, int]
) -> None:
    """Delivered at least once, never in two calls at once, in order per light."""
    with httpx.Client(base_url=url, headers=AUTH) as client:
        # Every committed update has its after-event: as many as revisions went by.
        written = sum(
            client.get(f"/lights/{light}").json()["revision"] - r for light, r in start.items()
        )
    wait_for(functools.partial(_all_delivered, engine, written), "every delivery done", 30)
    outbox = _outbox(engine)
    calls = recorder.by_event()
    assert recorder.twice == [], [calls[e] for e in recorder.twice]  # in two calls at once
    assert recorder.stray == []
    by_revision = {(record["id"], record["revision"]): (id_, record) for id_, record, _ in outbox}
    for _, acked in ledger.acked:
        found = by_revision.get((acked["id"], acked["revision"]))
        assert found is not None, f"{acked['id']} revision {acked['revision']}: no after-event"
        event, record = found
        assert record == acked  # the event carries what the client was answered
        assert any(c.end is not None for c in calls[event]), f"{event} never delivered"
    per_light: dict[str, list[str]] = defaultdict(list)
    for event, record, _ in outbox:
        per_light[record["id"]].append(event)
        done = [c for c in calls[event] if c.end is not None]
        assert done, f"{event} was marked delivered, but no call of it ended"
        intervals = sorted((c.start, c.finish()) for c in calls[event])
        for (_, end), (next_start, _) in itertools.pairwise(intervals):
            assert next_start > end, f"{event} was in two calls at once"
    for light, ids in per_light.items():
        for earlier, later in itertools.pairwise(ids):
            first_end = min(c.end for c in calls[earlier] if c.end is not None)
            next_start = min(c.start for c in calls[later])
            assert max(c.start for c in calls[earlier]) < next_start, f"{earlier} ran after {later}"
            assert first_end < next_start, f"{light}: {later} started before {earlier} was done"


def test_a_worker_killed_mid_delivery_loses_no_write_and_no_event(
    pg_database: str, tmp_path: Path, recorder: Recorder
) -> None:
    config = _configuration(tmp_path, recorder)
    engine = sync_engine(pg_database)
    try:
        with workers_server(pg_database, WORKERS, "--config", str(config), token=TOKEN) as (
            process,
            url,
        ):
            with httpx.Client(base_url=url, headers=AUTH) as client:
                created = [client.post("/lights", json={"name": f"lamp {n}"}) for n in "abc"]
                lights = [response.json()["id"] for response in created]
            lights.append("default")
            start = dict.fromkeys(lights, 1)
            ledger = Ledger()
            for round_ in range(ROUNDS):
                recorder.hold_next(HOLD)
                with _clients(url, ledger, lights, round_):
                    held = _kill_mid_delivery(process, recorder, round_)
                    acked_then = len(ledger.acked)
                assert len(ledger.acked) > acked_then, f"round {round_}: no write after the kill"
                assert ledger.refused == []
                # The supervisor starts another worker; it takes back the dead one's claims.
                wait_for_workers(process, url, set(range(1, WORKERS + 1)))
                check_ledger(url, ledger, lights, start)
                _check_deliveries(engine, url, ledger, recorder, start)
                again = [c for c in recorder.by_event()[held.event] if c is not held]
                assert held.killed is not None
                assert any(c.end is not None and c.start > held.killed for c in again), round_
            assert {worker for worker, _ in ledger.acked} == {"1", "2", "3", "4"}
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
    finally:
        engine.dispose()
