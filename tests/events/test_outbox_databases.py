"""Which databases the outbox takes, and what it does when one fails or goes away.

Engines and AsyncEngines, URLs and paths; in-memory SQLite shared by every
thread; an async app writing its events with ``run_sync``; deliveries that
survive ``kill -9``; storage failures (read-only, stopped server) as
``StorageError``, logged once per kind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import StaticPool

from conftest import ROOT
from event_plugins import Recorder, handler, states, wait_for, write_event
from hostwire import Outbox, StorageError, StorageGuard, new_envelope
from hostwire._events import sync_engine
from postgres import PostgresServer

TARGETS = [("p", "light_after_update")]
DURABLE = ["sqlite-file", "postgresql"]


def recording(recorder: Recorder) -> Any:
    return handler("p", recorder, exports=("light_after_update",))


# -- what the outbox accepts -------------------------------------------------------


@pytest.mark.parametrize(
    ("database", "error", "message"),
    [
        pytest.param(None, TypeError, "not None", id="none"),
        pytest.param(42, TypeError, "not 42", id="number"),
        pytest.param("", ValueError, "not an empty one", id="empty"),
        pytest.param("nosuch://x", ValueError, "is not a database URL SQLAlchemy knows", id="url"),
    ],
)
def test_an_outbox_needs_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: Any, error: type, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message):
        Outbox(database)
    assert list(tmp_path.iterdir()) == []  # no file named "None" (or anything else)


@pytest.mark.parametrize(
    "database",
    [
        pytest.param(":memory:", id="path"),
        pytest.param("sqlite://", id="url"),
        pytest.param("memory-engine", id="engine"),
    ],
)
def test_events_added_in_memory_are_delivered_and_no_file_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    # Issue 13: an in-memory database left a file named "None" and delivered nothing.
    monkeypatch.chdir(tmp_path)
    if database == "memory-engine":
        given: Any = create_engine(
            "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        given = database
    outbox = Outbox(given, poll_s=0.05)
    recorder = Recorder()
    with recording(recorder) as plugin:
        ids = [write_event(outbox, "light/default", TARGETS, brightness=n) for n in (1, 2)]
        outbox.start([plugin])
        try:
            wait_for(lambda: states(outbox, "p") == ["delivered"] * 2, "two deliveries")
        finally:
            outbox.close()
    assert recorder.ids() == ids
    assert list(tmp_path.iterdir()) == []


def test_an_in_memory_engine_threads_cannot_share_is_refused() -> None:
    with pytest.raises(ValueError, match="SingletonThreadPool, with which each thread sees"):
        Outbox(create_engine("sqlite://"))
    with pytest.raises(ValueError, match="refuses other threads; build it with"):
        Outbox(create_engine("sqlite://", poolclass=StaticPool))
    with pytest.raises(ValueError, match="AsyncEngine on in-memory SQLite cannot be shared"):
        Outbox(create_async_engine("sqlite+aiosqlite://"))


@pytest.mark.parametrize("kind", ["url", "app-engine"])
def test_in_memory_sqlite_lends_its_one_connection_to_one_thread_at_a_time(kind: str) -> None:
    # The app's own StaticPool engine is made to lend its connection the same way,
    # keeping what the database holds.
    given: Any = "sqlite://"
    if kind == "app-engine":
        given = create_engine(
            "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
        with given.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE kept (n INTEGER)")
    outbox = Outbox(given)
    if kind == "app-engine":
        with outbox.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM kept").scalar() == 0
    envelope = new_envelope("light", "after_update", {"id": "x"}, None, {})
    seen: list[list[dict[str, Any]]] = []
    reader = threading.Thread(target=lambda: seen.append(outbox.deliveries()))
    with outbox.engine.connect() as conn, conn.begin() as transaction:
        Outbox.add(conn, envelope, subject="light/x", targets=TARGETS)
        reader.start()
        # On a shared connection the reader would see (and end) this transaction.
        reader.join(0.2)
        transaction.rollback()
    reader.join(30)
    assert seen == [[]]
    assert outbox.deliveries() == []
    outbox.close()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param("postgresql://u:secret@db/app", "postgresql+psycopg", id="postgresql"),
        pytest.param("postgres://u:secret@db/app", "postgresql+psycopg", id="postgres"),
        pytest.param("postgresql+psycopg://u:secret@db/app", "postgresql+psycopg", id="psycopg"),
        pytest.param("app.db", "sqlite", id="path"),
    ],
)
def test_urls_and_paths_name_their_driver(given: str, expected: str) -> None:
    engine = sync_engine(given)
    assert engine.url.drivername == expected
    if expected == "sqlite":
        assert engine.url.database == "app.db"
    else:
        assert engine.url.render_as_string(hide_password=True) == f"{expected}://u:***@db/app"
        assert engine.url.password == "secret"
    engine.dispose()


# -- an async app ------------------------------------------------------------------


def async_url(database_url: str) -> str:
    if database_url.startswith("sqlite:"):
        return database_url.replace("sqlite:", "sqlite+aiosqlite:", 1)
    return database_url  # postgresql+psycopg: create_async_engine picks psycopg's async side


@pytest.mark.parametrize("database_url", DURABLE, indirect=True)
def test_an_async_app_adds_events_in_its_own_transactions(database_url: str) -> None:
    engine = create_async_engine(async_url(database_url))
    outbox = Outbox(engine, poll_s=0.05)
    assert outbox.engine.url.drivername in ("sqlite+pysqlite", "postgresql+psycopg")
    created = new_envelope("task", "after_create", {"id": "t1", "title": "Write"}, None, {})
    renamed = new_envelope("task", "after_update", {"id": "t1", "title": "Ship"}, None, {})
    dropped = new_envelope("task", "after_destroy", {"id": "t1"}, None, {})

    async def app() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE tasks (id TEXT PRIMARY KEY, title TEXT)"))
        async with engine.begin() as conn:  # an AsyncConnection
            await conn.execute(text("INSERT INTO tasks VALUES ('t1', 'Write')"))
            await conn.run_sync(
                lambda sync: outbox.add(sync, created, subject="task/t1", targets=TARGETS)
            )
        outbox.notify()
        async with AsyncSession(engine) as session, session.begin():
            await session.execute(text("UPDATE tasks SET title = 'Ship' WHERE id = 't1'"))
            await session.run_sync(
                lambda sync: outbox.add(
                    sync.connection(), renamed, subject="task/t1", targets=TARGETS
                )
            )
        outbox.notify()
        try:
            async with engine.begin() as conn:
                await conn.execute(text("DELETE FROM tasks WHERE id = 't1'"))
                await conn.run_sync(
                    lambda sync: outbox.add(sync, dropped, subject="task/t1", targets=TARGETS)
                )
                raise LookupError("the app changed its mind")  # the transaction rolls back
        except LookupError:
            pass
        await engine.dispose()

    recorder = Recorder()
    with recording(recorder) as plugin:
        outbox.start([plugin])
        try:
            asyncio.run(app())
            wait_for(lambda: states(outbox, "p") == ["delivered"] * 2, "two deliveries")
        finally:
            outbox.close()
    assert recorder.ids() == [created["id"], renamed["id"]]  # the rolled-back one never was


# -- kill -9 -----------------------------------------------------------------------

# Commits three events of one record, starts delivering, and blocks inside the
# first delivery: the test kills it there.
CHILD = """
import sys, threading
sys.path[:0] = ["platform", "tests"]
import wat
from hostwire import HostFunction, Outbox, Plugin
from hostwire._runtime.module import to_binary
from event_plugins import write_event

outbox = Outbox(sys.argv[1], poll_s=0.05)
for n in (1, 2, 3):
    print(write_event(outbox, "light/default", [("p", "light_after_update")], brightness=n))

def note(context, data):
    print("delivering", flush=True)
    threading.Event().wait()  # until killed
    return b"{}"

wasm = to_binary(wat.event_handler("light_after_update").encode(), "p.wat")
outbox.start([Plugin("p", wasm, host_functions=[HostFunction("note", note)])])
"""


@pytest.mark.parametrize("database_url", DURABLE, indirect=True)
def test_pending_deliveries_survive_kill_9(database_url: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, database_url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ids = [child.stdout.readline().strip() for _ in range(3)]
        assert child.stdout.readline().strip() == "delivering", "the child did not deliver"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    outbox = Outbox(database_url, poll_s=0.05)
    assert [(d["state"], d["attempts"]) for d in outbox.deliveries()] == [("pending", 0)] * 3
    recorder = Recorder()
    with recording(recorder) as plugin:
        outbox.start([plugin])
        try:
            wait_for(lambda: states(outbox, "p") == ["delivered"] * 3, "three deliveries")
        finally:
            outbox.close()
    assert recorder.ids() == ids  # all of them, the interrupted one included, in order


# -- storage failures --------------------------------------------------------------


def storage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "hostwire.storage"]


def test_a_read_only_sqlite_file_is_a_storage_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "app.db"
    Outbox(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    # A file-format write version above 2 makes SQLite treat the file as read-only,
    # for root too (chmod does not stop root).
    with db.open("r+b") as raw:
        raw.seek(18)
        raw.write(bytes([3]))
    with caplog.at_level("ERROR", "hostwire.storage"), pytest.raises(StorageError) as caught:
        Outbox(db)
    assert caught.value.kind == "read_only"
    assert str(caught.value) == (
        f"Storage is unavailable: the database is read-only ({db}, while creating the "
        "outbox tables); nothing was changed, retry in 5 s."
    )
    (line,) = storage_lines(caplog)
    assert line.startswith(
        f"storage unavailable (read_only) while creating the outbox tables in {db}"
    )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_read_only_postgresql_database_is_a_storage_error(database_url: str) -> None:
    outbox = Outbox(database_url)
    event = write_event(outbox, "light/default", TARGETS)
    with outbox.engine.connect() as conn:
        name = conn.execute(text("SELECT current_database()")).scalar_one()
        conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
        conn.commit()
    outbox.engine.dispose()  # new connections are read-only
    with pytest.raises(StorageError) as caught:
        outbox.replay(event)
    assert caught.value.kind == "read_only"
    assert f"{outbox.engine.url.render_as_string(hide_password=True)}, while replaying" in str(
        caught.value
    )
    assert outbox.deliveries()[0]["event_id"] == event  # reads still work
    outbox.close()


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, which it may stop."""
    with PostgresServer() as server:
        yield server


def test_a_stopped_postgresql_server_is_unavailable_until_it_is_back(
    own_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = own_server.create_database()
    outbox = Outbox(url, poll_s=0.05)
    event = write_event(outbox, "light/default", TARGETS)
    recorder = Recorder()
    with recording(recorder) as plugin, caplog.at_level("INFO", "hostwire.storage"):
        own_server.stop(remove=False)
        with pytest.raises(StorageError) as caught:
            outbox.deliveries()
        assert caught.value.kind == "unavailable"
        assert "postgresql+psycopg://postgres@127.0.0.1" in str(caught.value)
        with pytest.raises(StorageError, match="cannot be reached") as refused:
            Outbox(url)
        assert refused.value.kind == "unavailable"
        outbox.start([plugin])  # while the server is down: the workers keep trying
        own_server.start()
        try:
            wait_for(lambda: recorder.ids() == [event], "the delivery once the server is back")
            wait_for(lambda: states(outbox, "p") == ["delivered"], "the delivery's mark")
        finally:
            outbox.close()
    # One line per outbox (the second one failed to start), and one when it is over.
    assert [line.split(" while ")[0] for line in storage_lines(caplog)] == [
        "storage unavailable (unavailable)",
        "storage unavailable (unavailable)",
        f"storage works again in {outbox.storage.path} (it failed with: unavailable).",
    ]


def _wrapped(error: BaseException) -> sqlalchemy.exc.DBAPIError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, error)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        pytest.param(psycopg.errors.DiskFull(), "disk_full", id="pg-disk-full"),
        pytest.param(psycopg.errors.ReadOnlySqlTransaction(), "read_only", id="pg-read-only"),
        pytest.param(psycopg.errors.LockNotAvailable(), "busy", id="pg-lock-timeout"),
        pytest.param(psycopg.errors.SerializationFailure(), "busy", id="pg-serialization"),
        pytest.param(psycopg.errors.DeadlockDetected(), "busy", id="pg-deadlock"),
        pytest.param(psycopg.errors.TooManyConnections(), "busy", id="pg-too-many"),
        pytest.param(psycopg.errors.AdminShutdown(), "unavailable", id="pg-admin-shutdown"),
        pytest.param(psycopg.errors.CannotConnectNow(), "unavailable", id="pg-starting"),
        pytest.param(psycopg.errors.OutOfMemory(), "out_of_memory", id="pg-out-of-memory"),
        pytest.param(
            psycopg.OperationalError('connection to server at "127.0.0.1" failed: refused'),
            "unavailable",
            id="pg-refused",
        ),
        pytest.param(psycopg.errors.UniqueViolation(), None, id="pg-bug"),
        pytest.param(sqlite3.OperationalError("database is locked"), "busy", id="sqlite-locked"),
        pytest.param(sqlite3.OperationalError("database or disk is full"), "disk_full", id="full"),
        pytest.param(sqlite3.IntegrityError("UNIQUE constraint failed"), None, id="sqlite-bug"),
        pytest.param(sqlalchemy.exc.TimeoutError("QueuePool limit"), "busy", id="pool-timeout"),
    ],
)
def test_storage_failures_are_told_from_bugs(error: BaseException, kind: str | None) -> None:
    guard = StorageGuard("postgresql+psycopg://app:***@db/app")
    for raised in (error, _wrapped(error)):
        found = guard.error(raised, "testing", quiet=True)
        if kind is None:
            assert found is raised
        else:
            assert isinstance(found, StorageError)
            assert found.kind == kind
            assert "(postgresql+psycopg://app:***@db/app, while testing)" in str(found)


# The tables as hostwire made them before SQLAlchemy (no hostwire_schema yet).
EARLIER_SCHEMA = """
CREATE TABLE hostwire_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    subject TEXT NOT NULL, payload TEXT NOT NULL, chain TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL);
CREATE TABLE hostwire_deliveries (
    event_seq INTEGER NOT NULL REFERENCES hostwire_events (seq), plugin TEXT NOT NULL,
    export TEXT NOT NULL, subject TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, last_error TEXT,
    delivered_at REAL, PRIMARY KEY (event_seq, plugin));
INSERT INTO hostwire_events (id, type, subject, payload, created_at)
    VALUES ('evt_old', 'light.after_update', 'light/default', '{"id": "evt_old"}', 1000);
INSERT INTO hostwire_deliveries (event_seq, plugin, export, subject, next_attempt_at)
    VALUES (1, 'p', 'light_after_update', 'light/default', 1000);
"""


def test_an_outbox_of_an_earlier_hostwire_keeps_its_pending_deliveries(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(EARLIER_SCHEMA)
    outbox = Outbox(db, poll_s=0.05)
    recorder = Recorder()
    with recording(recorder) as plugin:
        later = write_event(outbox, "light/default", TARGETS)
        outbox.start([plugin])
        try:
            wait_for(lambda: states(outbox, "p") == ["delivered"] * 2, "both deliveries")
        finally:
            outbox.close()
    assert recorder.ids() == ["evt_old", later]
