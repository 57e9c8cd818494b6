"""Lights in SQLite, changed only through one model path with lifecycle steps.

Every change runs these steps, in this order, and nothing writes around them:

- create:  before_validation, after_validation, before_save, before_create,
           (write), after_create, after_save
- update:  before_validation, after_validation, before_save, before_update,
           (write), after_update, after_save
- destroy: before_destroy, (delete), after_destroy

``before_*`` steps run outside the database lock, so an observer may take
time (or call back into the API). Changes to one light are serialized by a
per-light lock held from reading the light to committing, and the write also
checks the light's revision: if it moved anyway, the change runs again on the
fresh state. No change is ever computed from a stale read.
``after_*`` steps run inside the write's transaction, after the write and
before the commit, so anything they record (an outbox row) commits with it:
``Change.connection`` is the write's SQLAlchemy ``Connection``.
``after_validation`` is one of them: it carries the record as it was
validated (before ``before_save`` ran) and is recorded first, so its event
comes first in the outbox; a change refused after validation has none.
A write that returns has been committed with ``synchronous=FULL``: it survives
the process being killed.

A change made while another change of the same light is under way in the
same chain of calls (a before-step's plug-in updating its own light) can
never get the light's lock: it fails at once with ``LightReentrant`` (409)
instead of waiting. Storage failures (disk full, read-only database, I/O
errors) raise hostwire's ``StorageError`` (the API answers 503).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from hostwire import StorageGuard
from lightcontrol._spec import problems

Action = Literal["create", "update", "destroy"]
DEFAULT_LIGHT_ID = "default"
MAX_ATTEMPTS = 20
LOCK_TIMEOUT_S = 30.0
_STRIPES = 64
# Lights whose change is under way further up this chain of calls (it travels
# with the context into plug-ins' in-process calls).
_CHANGING: ContextVar[frozenset[str]] = ContextVar("lightcontrol_changing", default=frozenset())

STEPS: dict[Action, tuple[str, ...]] = {
    "create": (
        "before_validation",
        "after_validation",
        "before_save",
        "before_create",
        "after_create",
        "after_save",
    ),
    "update": (
        "before_validation",
        "after_validation",
        "before_save",
        "before_update",
        "after_update",
        "after_save",
    ),
    "destroy": ("before_destroy", "after_destroy"),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lights (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('on', 'off')),
    color TEXT NOT NULL CHECK (color IN ('red', 'green', 'blue', 'white')),
    brightness INTEGER NOT NULL CHECK (brightness BETWEEN 0 AND 100),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    revision INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
"""
_COLUMNS = ("id", "name", "status", "color", "brightness", "created_at", "updated_at", "revision")


class LightError(Exception):
    """Base of the model's errors; ``status`` and ``code`` are for the API."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class LightNotFound(LightError):
    status = 404
    code = "not_found"


class LightInvalid(LightError):
    status = 422
    code = "invalid_request"


class LightRejected(LightError):
    """An observer of a before step refused the change."""

    status = 422
    code = "rejected"

    def __init__(
        self, message: str, details: list[dict[str, str]] | None = None, plugin: str | None = None
    ) -> None:
        super().__init__(message, details)
        self.plugin = plugin


class LightPluginFailed(LightError):
    """A plug-in handling a before step failed, and its policy refuses the change."""

    status = 502
    code = "plugin_failed"

    def __init__(self, message: str, plugin: str, export: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.export = export


class LightConflict(LightError):
    status = 409
    code = "conflict"


class LightReentrant(LightConflict):
    """A change of a light made from inside a change of the same light."""

    code = "reentrant_change"


@dataclass
class Change:
    """What the observers of one change see. Before steps may edit ``record``."""

    model: str
    action: Action
    step: str
    record: dict[str, Any]
    previous: dict[str, Any] | None
    connection: Connection | None = None
    changes: dict[str, Any] = field(default_factory=dict)


Observer = Callable[[Change], None]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _diff(previous: dict[str, Any] | None, record: dict[str, Any]) -> dict[str, Any]:
    before = previous or {}
    return {
        key: {"from": before.get(key), "to": value}
        for key, value in record.items()
        if before.get(key) != value
    }


class LightStore:
    """The lights table and the one model path that changes it. Thread-safe."""

    def __init__(self, path: str | Path, observers: list[Observer] | None = None) -> None:
        self.path = str(path)
        self.observers: list[Observer] = list(observers or [])
        # Called after every committed write (e.g. to wake an outbox's workers).
        self.after_commit: list[Callable[[], None]] = []
        self.after_rollback: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._light_locks = [threading.RLock() for _ in range(_STRIPES)]
        self.storage = StorageGuard(self.path)
        self._read_lock = threading.Lock()
        self.engine = _engine(self.path)
        with self.storage.guard("opening the database", quiet=True):
            self._writer = self.engine.connect()
            try:
                # The writer's sqlite3 connection: the store's own statements run on
                # it, in the transactions the SQLAlchemy connection begins and ends.
                self._db = cast(sqlite3.Connection, self._writer.connection.driver_connection)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
                # Reads use their own connection: in WAL mode they never wait for a
                # writer's transaction or fsync, so they are cheap enough to run on
                # the event loop.
                self._reader = sqlite3.connect(
                    self.path, check_same_thread=False, isolation_level=None
                )
                self._reader.row_factory = sqlite3.Row
            except BaseException:
                self._writer.close()
                self.engine.dispose()
                raise
        try:
            if self.get_or_none(DEFAULT_LIGHT_ID) is None:
                self.create({"name": "Default light"}, light_id=DEFAULT_LIGHT_ID)
        except BaseException:
            self.close()
            raise

    @property
    def write_lock(self) -> threading.Lock:
        """Held around every write transaction (an outbox shares it for its marks)."""
        return self._lock

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._writer.close()
            self._reader.close()
            self.engine.dispose()

    # -- reads --------------------------------------------------------------

    def get_or_none(self, light_id: str) -> dict[str, Any] | None:
        with self._read_lock, self.storage.guard("reading a light"):
            row = self._reader.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM lights WHERE id = ?", (light_id,)
            ).fetchone()
        return dict(row) if row else None

    def get(self, light_id: str) -> dict[str, Any]:
        light = self.get_or_none(light_id)
        if light is None:
            raise LightNotFound(f'No light has the id "{light_id}".')
        return light

    def list(self) -> list[dict[str, Any]]:
        with self._read_lock, self.storage.guard("listing lights"):
            rows = self._reader.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM lights ORDER BY seq"
            ).fetchall()
        return [dict(row) for row in rows]

    # -- the model path -----------------------------------------------------

    def create(self, fields: dict[str, Any], *, light_id: str | None = None) -> dict[str, Any]:
        input_problems = problems("LightCreate", fields)
        if input_problems:
            raise LightInvalid("The new light is not valid.", input_problems)
        now = _now()
        record = {
            "id": light_id or fields.get("id") or uuid.uuid4().hex[:12],
            "name": fields["name"],
            "status": fields.get("status", "off"),
            "color": fields.get("color", "white"),
            "brightness": fields.get("brightness", 100),
            "created_at": now,
            "updated_at": now,
            "revision": 1,
        }
        with self._changing(record["id"]):
            record, validated = self._before("create", record, None)
            with self._transaction("creating a light") as db:
                if self._exists(record["id"]):
                    raise LightConflict(f'A light with the id "{record["id"]}" already exists.')
                self._db.execute(
                    f"INSERT INTO lights ({', '.join(_COLUMNS)}, seq) VALUES "
                    f"({', '.join('?' for _ in _COLUMNS)}, "
                    "(SELECT COALESCE(MAX(seq), 0) + 1 FROM lights))",
                    tuple(record[c] for c in _COLUMNS),
                )
                self._after("create", record, validated, None, db)
        return record

    def update(self, light_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        input_problems = problems("LightUpdate", changes)
        if input_problems:
            raise LightInvalid("The change is not valid.", input_problems)
        with self._light_lock(light_id):
            return self._update(light_id, changes)

    def _update(self, light_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        for _ in range(MAX_ATTEMPTS):
            previous = self.get(light_id)
            record = {
                **previous,
                **changes,
                "id": previous["id"],
                "created_at": previous["created_at"],
                "updated_at": _now(),
                "revision": previous["revision"] + 1,
            }
            record, validated = self._before("update", record, previous)
            with self._transaction("updating a light") as db:
                current = self._db.execute(
                    "SELECT revision FROM lights WHERE id = ?", (light_id,)
                ).fetchone()
                if current is None:
                    raise LightNotFound(f'No light has the id "{light_id}".')
                if current[0] != previous["revision"]:
                    continue  # changed while the before steps ran: run them again
                self._db.execute(
                    "UPDATE lights SET name = ?, status = ?, color = ?, brightness = ?, "
                    "updated_at = ?, revision = ? WHERE id = ?",
                    (
                        record["name"],
                        record["status"],
                        record["color"],
                        record["brightness"],
                        record["updated_at"],
                        record["revision"],
                        light_id,
                    ),
                )
                self._after("update", record, validated, previous, db)
            return record
        raise LightConflict(
            f'Light "{light_id}" kept changing during {MAX_ATTEMPTS} attempts; try again.'
        )

    def destroy(self, light_id: str) -> dict[str, Any]:
        with self._light_lock(light_id):
            return self._destroy(light_id)

    def _destroy(self, light_id: str) -> dict[str, Any]:
        for _ in range(MAX_ATTEMPTS):
            previous = self.get(light_id)
            self._run("destroy", "before_destroy", dict(previous), previous, None)
            with self._transaction("deleting a light") as db:
                deleted = self._db.execute(
                    "DELETE FROM lights WHERE id = ? AND revision = ?",
                    (light_id, previous["revision"]),
                ).rowcount
                if deleted == 0:
                    if self._exists(light_id):
                        continue
                    raise LightNotFound(f'No light has the id "{light_id}".')
                self._run("destroy", "after_destroy", dict(previous), previous, db)
            return previous
        raise LightConflict(
            f'Light "{light_id}" kept changing during {MAX_ATTEMPTS} attempts; try again.'
        )

    # -- steps --------------------------------------------------------------

    def _before(
        self, action: Action, record: dict[str, Any], previous: dict[str, Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The record after the before-steps, and the record as validated."""
        steps = STEPS[action]
        record = self._run(action, steps[0], record, previous, None)  # before_validation
        record_problems = problems("Light", record)
        if record_problems:
            raise LightInvalid("The light would not be valid.", record_problems)
        validated = dict(record)
        for step in steps[2:4]:  # before_save, before_<action>
            record = self._run(action, step, record, previous, None)
        # An observer may have replaced the record in a before step: validate again.
        record_problems = problems("Light", record)
        if record_problems:
            raise LightInvalid("A plug-in made the light invalid.", record_problems)
        immutable = {"id", "created_at", "revision"}
        if previous is not None and any(record[k] != previous[k] for k in immutable - {"revision"}):
            raise LightInvalid("A light's id and created_at cannot change.")
        return record, validated

    def _after(
        self,
        action: Action,
        record: dict[str, Any],
        validated: dict[str, Any],
        previous: dict[str, Any] | None,
        db: Connection,
    ) -> None:
        # after_validation first: its event precedes the others in the outbox.
        self._run(action, STEPS[action][1], validated, previous, db)
        for step in STEPS[action][4:]:
            self._run(action, step, record, previous, db)

    def _run(
        self,
        action: Action,
        step: str,
        record: dict[str, Any],
        previous: dict[str, Any] | None,
        db: Connection | None,
    ) -> dict[str, Any]:
        change = Change("light", action, step, dict(record), previous, db, _diff(previous, record))
        for observer in self.observers:
            observer(change)
        return change.record if step.startswith("before_") else record

    def _exists(self, light_id: str) -> bool:
        found = self._db.execute("SELECT 1 FROM lights WHERE id = ?", (light_id,)).fetchone()
        return found is not None

    @contextmanager
    def _changing(self, light_id: str) -> Iterator[None]:
        """Mark ``light_id`` as being changed in this chain; refuse a nested change of it."""
        changing = _CHANGING.get()
        if light_id in changing:
            raise LightReentrant(
                f'Light "{light_id}" cannot change while a change of it is under way '
                "(a plug-in handling that change tried to change the same light); "
                "change the record in the handler's answer instead."
            )
        token = _CHANGING.set(changing | {light_id})
        try:
            yield
        finally:
            _CHANGING.reset(token)

    @contextmanager
    def _light_lock(self, light_id: str) -> Iterator[None]:
        with self._changing(light_id):
            lock = self._light_locks[hash(light_id) % _STRIPES]
            if not lock.acquire(timeout=LOCK_TIMEOUT_S):
                raise LightConflict(f'Light "{light_id}" is busy with another change; try again.')
            try:
                yield
            finally:
                lock.release()

    @contextmanager
    def _transaction(self, action: str) -> Iterator[Connection]:
        with self._lock:
            with self.storage.guard(action):
                transaction = self._writer.begin()  # BEGIN IMMEDIATE: see _engine
            try:
                yield self._writer
            except BaseException as exc:
                # SQLite may have rolled back already (a full disk does that).
                with contextlib.suppress(SQLAlchemyError):
                    transaction.rollback()
                for hook in self.after_rollback:
                    hook()
                error = self.storage.error(exc, action)
                if error is not exc:
                    raise error from exc
                raise
            else:
                try:
                    with self.storage.guard(action):
                        transaction.commit()
                except BaseException:
                    with contextlib.suppress(SQLAlchemyError):
                        transaction.rollback()
                    if self._db.in_transaction:
                        self._db.rollback()
                    for hook in self.after_rollback:
                        hook()
                    raise
        self.storage.ok()
        for hook in self.after_commit:
            hook()


def _engine(path: str) -> Engine:
    """The engine of the store's writer (the reader is a plain sqlite3 connection).

    SQLAlchemy emits the BEGIN (IMMEDIATE: a write transaction takes the write
    lock at once, so it waits for another writer in the busy timeout instead
    of failing when its read lock cannot be upgraded), not the sqlite3 module.
    """
    engine = create_engine(
        URL.create("sqlite", database=path),
        poolclass=NullPool,
        connect_args={"check_same_thread": False, "timeout": 5.0},
    )
    event.listen(engine, "connect", _driver_begins_nothing)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _driver_begins_nothing(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    dbapi_connection.isolation_level = None


def _begin_immediate(connection: Connection) -> None:
    cast(sqlite3.Connection, connection.connection.driver_connection).execute("BEGIN IMMEDIATE")
