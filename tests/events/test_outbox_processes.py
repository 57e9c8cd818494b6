"""Delivery across processes on one PostgreSQL: claims, leases, order, wake-ups.

Several OS processes (``CHILD``) open an Outbox on the same database with one
plug-in (a WAT module) whose handler writes, per call, its start and end time
and the event id to a file of the process's own. From those files: every
event is delivered at least once, no event runs twice at the same time, and
per subject each event starts only after the one before it was delivered.
A process killed with SIGKILL mid-delivery has its deliveries redelivered by
the others once its leases run out. The schema upgrade from version 1 keeps
pending deliveries (SQLite and PostgreSQL).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, inspect, select, text, update

from conftest import ROOT
from event_plugins import Recorder, handler, states, wait_for, write_event
from hostwire import Outbox, new_envelope
from hostwire._events import sync_engine
from hostwire._events.claims import LeasedClaims, gone
from hostwire._events.outbox import deliveries, events
from postgres import PostgresServer

TARGETS = [("p", "light_after_update")]
LEASE_S = 2.0

CHILD = """
import itertools, json, os, sys, threading, time
sys.path[:0] = ["platform", "tests"]
import wat
from hostwire import HostFunction, Outbox, Plugin
from hostwire._runtime.module import to_binary

url, record, hang, lease = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
out = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
calls = itertools.count(1)

def note(context, data):
    event = json.loads(data)["id"]
    os.write(out, f"S {event} {time.monotonic_ns()}\\n".encode())
    if next(calls) == hang:
        print("hung", event, flush=True)
        threading.Event().wait()  # until killed
    os.write(out, f"E {event} {time.monotonic_ns()}\\n".encode())
    return b"{}"

outbox = Outbox(url, poll_s=0.2, lease_s=lease, backoff_s=0.05, max_backoff_s=0.2)
wasm = to_binary(wat.event_handler("light_after_update").encode(), "p.wat")
outbox.start([Plugin("p", wasm, host_functions=[HostFunction("note", note)])])
print("ready", flush=True)
sys.stdin.read()  # until the test closes it
outbox.close()
"""


@dataclass
class Worker:
    process: subprocess.Popen[str]
    record: Path
    killed_at: int | None = None  # monotonic_ns just after SIGKILL

    def line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()


@dataclass
class Cluster:
    """Processes delivering from one database, and the events the test wrote."""

    url: str
    folder: Path
    engine: Engine
    workers: list[Worker] = field(default_factory=list)
    subjects: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def start(self, count: int, *, hang: int = 0) -> list[Worker]:
        started = []
        for _ in range(count):
            record = self.folder / f"calls-{len(self.workers)}.txt"
            process = subprocess.Popen(
                [sys.executable, "-c", CHILD, self.url, str(record), str(hang), str(LEASE_S)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            worker = Worker(process, record)
            self.workers.append(worker)
            started.append(worker)
        for worker in started:
            assert worker.line() == "ready", "a delivering process did not start"
        return started

    def write(self, count: int, subjects: int, *, per_commit: int = 50) -> None:
        """``count`` events round-robin over ``subjects`` records, in several commits."""
        written = sum(len(ids) for ids in self.subjects.values())
        for first in range(0, count, per_commit):
            with self.engine.begin() as conn:
                for n in range(first, min(count, first + per_commit)):
                    subject = f"light/{(written + n) % subjects}"
                    envelope = new_envelope("light", "after_update", {"n": n}, None, {})
                    Outbox.add(conn, envelope, subject=subject, targets=TARGETS)
                    self.subjects[subject].append(envelope["id"])

    def delivered(self) -> int:
        query = select(func.count()).where(deliveries.c.state == "delivered")
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def wait_delivered(self, what: str) -> None:
        total = sum(len(ids) for ids in self.subjects.values())
        wait_for(lambda: self.delivered() == total, what, timeout_s=45)

    def kill(self, worker: Worker) -> None:
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(30)
        worker.killed_at = time.monotonic_ns()

    def stop(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                assert worker.process.stdin is not None
                worker.process.stdin.close()
        for worker in self.workers:
            try:
                worker.process.wait(30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            for stream in (worker.process.stdin, worker.process.stdout):
                if stream is not None and not stream.closed:
                    stream.close()

    def calls(self) -> dict[str, list[tuple[int, int | None, int]]]:
        """Per event id: (start, end or None if it never ended, process) of every call."""
        found: dict[str, list[tuple[int, int | None, int]]] = defaultdict(list)
        for index, worker in enumerate(self.workers):
            started: dict[str, int] = {}
            for line in worker.record.read_text().splitlines():
                kind, event, moment = line.split()
                if kind == "S":
                    assert event not in started, f"process {index} ran {event} twice at once"
                    started[event] = int(moment)
                else:
                    found[event].append((started.pop(event), int(moment), index))
            for event, start in started.items():  # killed mid-delivery
                found[event].append((start, None, index))
        return found

    def check(self) -> dict[str, list[tuple[int, int | None, int]]]:
        """At least once, never two at once, in order per subject; the calls."""
        calls = self.calls()
        for subject, ids in self.subjects.items():
            for event in ids:
                assert any(end is not None for _, end, _ in calls[event]), f"{event} lost"
                intervals = sorted(
                    (start, end if end is not None else self._killed(process), process)
                    for start, end, process in calls[event]
                )
                for (_, end, one), (start, _, other) in itertools.pairwise(intervals):
                    assert start > end, f"{event} ran in processes {one} and {other} at once"
            for earlier, later in itertools.pairwise(ids):
                first_end = min(e for _, e, _ in calls[earlier] if e is not None)
                next_start = min(s for s, _, _ in calls[later])
                assert max(s for s, _, _ in calls[earlier]) < next_start, (subject, earlier)
                assert first_end < next_start, f"{later} started before {earlier} was delivered"
        return calls

    def _killed(self, process: int) -> int:
        moment = self.workers[process].killed_at
        assert moment is not None, f"process {process} left a call unfinished, unkilled"
        return moment


@pytest.fixture
def cluster(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Cluster]:
    url = postgres_server.create_database()
    engine = sync_engine(url)
    Outbox(engine).close()  # the tables, before the processes race to make them
    group = Cluster(url, tmp_path, engine)
    try:
        yield group
    finally:
        group.stop()
        engine.dispose()
        postgres_server.drop_database(url)


def test_four_processes_deliver_every_event_once_at_a_time_in_order(cluster: Cluster) -> None:
    cluster.start(4)
    cluster.write(3000, subjects=60)
    cluster.wait_delivered("3000 deliveries by four processes")
    calls = cluster.check()
    by_process = {p for event in calls.values() for _, _, p in event}
    assert by_process == {0, 1, 2, 3}  # they all took part


def test_a_killed_process_deliveries_go_to_the_others_after_its_lease(cluster: Cluster) -> None:
    cluster.start(3)
    for round_ in range(3):
        _kill_mid_delivery(cluster, round_)


def _kill_mid_delivery(cluster: Cluster, round_: int) -> None:
    """A fourth process hangs in its fifth delivery, keeps its lease, and is killed."""
    (victim,) = cluster.start(1, hang=5)
    cluster.write(400, subjects=40)
    word, hung = victim.line().split()
    assert word == "hung", f"round {round_}: the victim never got to its fifth delivery"
    held = (
        select(deliveries.c.claimed_by, deliveries.c.lease_until)
        .join(events, events.c.seq == deliveries.c.event_seq)
        .where(events.c.id == hung)
    )
    with cluster.engine.connect() as conn:
        owner, first_lease = conn.execute(held).one()

    def renewed() -> bool:
        with cluster.engine.connect() as conn:
            now_owner, lease = conn.execute(held).one()
        assert now_owner == owner, "the hung delivery was taken while its process lived"
        return bool(time.time() > first_lease and lease > time.time())

    wait_for(renewed, "the hung delivery's lease to outlive its first term", timeout_s=15)
    cluster.kill(victim)
    cluster.wait_delivered(f"round {round_}: every delivery, the killed one's too")
    calls = cluster.check()
    assert victim.killed_at is not None
    again = [start for start, end, _ in calls[hung] if end is not None]
    assert again, f"round {round_}: the hung event was never delivered"
    assert all(start > victim.killed_at for start in again)


# -- claims, statement by statement -------------------------------------------------


@pytest.fixture
def pg_engine(postgres_server: PostgresServer) -> Iterator[Engine]:
    url = postgres_server.create_database()
    engine = sync_engine(url)
    Outbox(engine).close()
    yield engine
    engine.dispose()
    postgres_server.drop_database(url)


def _add(engine: Engine, subject: str) -> str:
    envelope = new_envelope("light", "after_update", {"id": subject}, None, {})
    with engine.begin() as conn:
        Outbox.add(conn, envelope, subject=subject, targets=TARGETS)
    event_id: str = envelope["id"]
    return event_id


def _set(engine: Engine, event_id: str, **values: object) -> None:
    seq = text("(SELECT seq FROM hostwire_events WHERE id = :id)").bindparams(id=event_id)
    with engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.event_seq == seq).values(**values))


def test_a_claim_is_one_workers_first_in_line_until_its_lease_runs_out(pg_engine: Engine) -> None:
    outbox = Outbox(pg_engine)
    one = LeasedClaims(pg_engine, outbox.storage, "p", owner="one", lease_s=30)
    other = LeasedClaims(pg_engine, outbox.storage, "p", owner="other", lease_s=30)
    a1, a2, b1 = _add(pg_engine, "a"), _add(pg_engine, "a"), _add(pg_engine, "b")
    assert [d.id for d in one.fetch(10)] == [a1, b1]  # first in line per subject only
    assert other.fetch(10) == []  # held, and a2 waits for a1
    assert one.fetch(10) == []  # its own claims are never handed out twice
    _set(pg_engine, a1, lease_until=time.time() - 1)  # as if "one" died 30 s ago
    assert [d.id for d in other.fetch(10)] == [a1]
    _set(pg_engine, a1, state="delivered", claimed_by=None, lease_until=None)
    assert [d.id for d in other.fetch(10)] == [a2]
    _set(pg_engine, a1, state="pending")  # replayed while a2 runs: it waits for a2
    assert one.fetch(10) == []
    _set(pg_engine, b1, lease_until=time.time() + 5)  # less than two thirds of 30 s left
    assert one.renew() == 1
    with pg_engine.connect() as conn:
        lease = conn.execute(
            select(deliveries.c.lease_until).where(deliveries.c.claimed_by == "one")
        ).scalar_one()
    assert lease > time.time() + 25
    outbox.close()


def test_claims_of_a_process_gone_from_this_machine_are_taken_back_at_once(
    pg_engine: Engine,
) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                              capture_output=True, text=True)  # fmt: skip
    outbox = Outbox(pg_engine, poll_s=0.05)
    machine = outbox.owner.rsplit("/", 2)[0]
    dead, alive = f"{machine}/{finished.stdout.strip()}/0000", f"{machine}/{os.getpid()}/ffff"
    assert gone(dead)
    assert not gone(alive)
    assert not gone(f"elsewhere/1/{finished.stdout.strip()}/0000")  # another machine's: its lease
    event = _add(pg_engine, "light/default")
    _set(pg_engine, event, claimed_by=dead, lease_until=time.time() + 3600)
    recorder = Recorder()
    with handler("p", recorder, exports=("light_after_update",)) as plugin:
        outbox.start([plugin])
        try:
            wait_for(lambda: states(outbox, "p") == ["delivered"], "the taken-back delivery")
        finally:
            outbox.close()
    assert recorder.ids() == [event]


# -- LISTEN/NOTIFY ------------------------------------------------------------------


def test_a_commit_in_another_process_wakes_the_workers_without_polling(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()
    writer = Outbox(url)
    reader = Outbox(url, poll_s=3600)  # only a notification can wake it in time
    recorder = Recorder()
    with handler("p", recorder, exports=("light_after_update",)) as plugin:
        reader.start([plugin])
        try:
            listener = reader._listener
            assert listener is not None
            assert listener.listening.wait(20)
            first = write_event(writer, "light/default", TARGETS)
            wait_for(lambda: recorder.ids() == [first], "the woken delivery")
            # The listener's connection breaks: it reconnects by itself.
            with writer.engine.begin() as conn:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = :q"),
                    {"q": "LISTEN hostwire_outbox"},
                )
            wait_for(lambda: listener.connections == 2 and listener.listening.is_set(), "reconnect")
            second = write_event(writer, "light/default", TARGETS)
            wait_for(lambda: recorder.ids() == [first, second], "the delivery after reconnecting")
        finally:
            reader.close()
            writer.close()
    postgres_server.drop_database(url)


# -- the schema ---------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite-file", "postgresql"], indirect=True)
def test_a_version_1_outbox_is_upgraded_in_place_and_keeps_its_deliveries(
    database_url: str,
) -> None:
    engine = sync_engine(database_url)
    old = Outbox(engine)
    pending = write_event(old, "light/default", TARGETS)
    old.close()
    with engine.begin() as conn:  # back to version 1: no claim columns
        conn.execute(text("ALTER TABLE hostwire_deliveries DROP COLUMN claimed_by"))
        conn.execute(text("ALTER TABLE hostwire_deliveries DROP COLUMN lease_until"))
        conn.execute(text("UPDATE hostwire_schema SET version = 1"))
    outbox = Outbox(engine, poll_s=0.05)
    columns = {c["name"] for c in inspect(engine).get_columns("hostwire_deliveries")}
    assert {"claimed_by", "lease_until"} <= columns
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM hostwire_schema")).scalars().all() == [2]
    recorder = Recorder()
    with handler("p", recorder, exports=("light_after_update",)) as plugin:
        outbox.start([plugin])
        try:
            wait_for(lambda: states(outbox, "p") == ["delivered"], "the kept delivery")
        finally:
            outbox.close()
    assert recorder.ids() == [pending]
    engine.dispose()
