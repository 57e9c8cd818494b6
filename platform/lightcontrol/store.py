"""Lights in the app's database (SQLAlchemy ORM), changed only through one model path.

``Light`` is a mapped class on the ``lights`` table; ``LightStore`` runs every
change through a ``Session``, so the plug-ins' lifecycle events come from
hostwire's ``ModelTracker`` (``Hostwire.track(Light, name="light")``) like
in any app. Every change runs these steps, in this order, and nothing
writes around them:

- create:  before_validation, after_validation, before_save, before_create,
           (write), after_create, after_save
- update:  before_validation, after_validation, before_save, before_update,
           (write), after_update, after_save
- destroy: before_destroy, (delete), after_destroy

In-process observers (``LightStore.observers``: the change feed, tests) see
each step as a ``Change``; plug-ins see them as events, the tracker raising
the before-events in the Session's flush and adding the after-events to the
outbox on the flush's connection. ``before_*`` steps run before the write
takes the database, so an observer or plug-in may take time (or call back
into the API). Changes to one light are serialized by a per-light lock held
from reading the light to committing, and the write checks the light's
revision (``version_id_col``: ``UPDATE ... WHERE revision = <read>``): if it
moved anyway (another process), the change runs again on the fresh state. No
change is ever computed from a stale read. ``after_*`` steps run inside the
write's transaction, after the write and before the commit, so anything they
record (an outbox row) commits with it: ``Change.connection`` is the write's
SQLAlchemy ``Connection``. ``after_validation`` is one of them: it carries
the record as it was validated (before ``before_save`` ran) and is recorded
first, so its event comes first in the outbox; a change refused after
validation has none. A write that returns has been committed durably (SQLite
with ``synchronous=FULL``, PostgreSQL's commit): it survives the process
being killed.

The database is an ``Engine`` or what ``make_engine`` takes: an SQLite
file's path, ``sqlite:///lightcontrol.db``, ``sqlite://`` (in memory) or
``postgresql://...`` (psycopg 3). On SQLite, writes take the database's one
writer connection in turn (``BEGIN IMMEDIATE``), and reads a connection of
their own (WAL: they never wait for a writer).

A change made while another change of the same light is under way in the
same chain of calls (a before-step's plug-in updating its own light) can
never get the light's lock: it fails at once with ``LightReentrant`` (409)
instead of waiting. Storage failures (disk full, read-only database, I/O
errors, a database that is down) raise hostwire's ``StorageError`` (the API
answers 503).
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

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    exc,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import ExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, make_transient_to_detached
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from hostwire import (
    EventHandlerError,
    EventRejected,
    RecordInvalid,
    RecordReentrant,
    StorageGuard,
)
from lightcontrol._spec import problems

Action = Literal["create", "update", "destroy"]
DEFAULT_LIGHT_ID = "default"
MAX_ATTEMPTS = 20
LOCK_AFTER = 3  # attempts lost to another process's change, on PostgreSQL
LOCK_TIMEOUT_S = 30.0
SQLITE_TIMEOUT_S = 5.0
_STRIPES = 64
# Processes opening one PostgreSQL database at once create its tables in turn.
_SCHEMA_LOCK = 0x6C69676874  # "light"
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
Rows = list[dict[str, Any]]
FIELDS = ("id", "name", "status", "color", "brightness", "created_at", "updated_at", "revision")
# What a change may set (id and created_at never change; revision by one).
_CHANGED = ("name", "status", "color", "brightness", "updated_at", "revision")


class Base(DeclarativeBase):
    metadata = MetaData()


def _next_seq(context: ExecutionContext) -> int:
    """The insertion order of a new light: one more than the last one's."""
    found = context.connection.execute(select(func.coalesce(func.max(lights.c.seq), 0) + 1))
    return int(found.scalar_one())


lights = Table(
    "lights",
    Base.metadata,
    Column("id", String, primary_key=True),
    Column("name", String, nullable=False),
    Column("status", String, CheckConstraint("status IN ('on', 'off')"), nullable=False),
    Column(
        "color",
        String,
        CheckConstraint("color IN ('red', 'green', 'blue', 'white')"),
        nullable=False,
    ),
    Column(
        "brightness",
        Integer,
        CheckConstraint("brightness BETWEEN 0 AND 100"),
        nullable=False,
    ),
    Column("created_at", String, nullable=False),  # RFC 3339 text, as the API shows it
    Column("updated_at", String, nullable=False),
    Column("revision", Integer, nullable=False),
    # The order lights are listed in; not part of the record.
    Column("seq", Integer, nullable=False, default=_next_seq),
)


class Light(Base):
    """A light. ``revision`` is the version the database checks on every write."""

    __table__ = lights
    __mapper_args__ = {  # noqa: RUF012 - SQLAlchemy's declarative attribute
        "version_id_col": lights.c.revision,
        "version_id_generator": False,  # the store sets it: plug-ins see the new revision
        "exclude_properties": ["seq"],
    }

    id: Mapped[str]
    name: Mapped[str]
    status: Mapped[str]
    color: Mapped[str]
    brightness: Mapped[int]
    created_at: Mapped[str]
    updated_at: Mapped[str]
    revision: Mapped[int]

    def record(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in FIELDS}


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


def _locked(session: Session, light_id: str) -> dict[str, Any]:
    """The light, its row locked until the session's transaction ends."""
    query = select(*(lights.c[key] for key in FIELDS)).where(lights.c.id == light_id)
    row = session.execute(query.with_for_update()).first()
    if row is None:
        raise LightNotFound(f'No light has the id "{light_id}".')
    return dict(row._mapping)


def _stored(record: dict[str, Any]) -> Light:
    """``record`` as a persistent-to-be ``Light``: its values are the committed ones."""
    light = Light(**{key: record[key] for key in FIELDS})
    make_transient_to_detached(light)
    return light


class LightStore:
    """The lights table and the one model path that changes it. Thread-safe.

    ``database``: an ``Engine`` (the store leaves it open), or anything
    ``make_engine`` takes (the store makes the engine and disposes of it).
    """

    def __init__(
        self, database: Engine | str | Path, observers: list[Observer] | None = None
    ) -> None:
        self.engine = database if isinstance(database, Engine) else make_engine(database)
        self._own_engine = self.engine is not database
        # On SQLite: the database's one connection (see make_engine), for tests.
        self._db: sqlite3.Connection
        self.path = _describe(self.engine)
        self.observers: list[Observer] = list(observers or [])
        # Called after every committed write (e.g. to wake an outbox's workers).
        self.after_commit: list[Callable[[], None]] = []
        self.after_rollback: list[Callable[[], None]] = []
        self._light_locks = [threading.RLock() for _ in range(_STRIPES)]
        self.storage = StorageGuard(self.path)
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        try:
            with self.storage.guard("opening the database", quiet=True):
                self._create_tables()
                if self.engine.url.get_backend_name() == "sqlite":
                    with self.engine.connect() as conn:
                        self._db = cast(sqlite3.Connection, conn.connection.driver_connection)
                if _is_sqlite_file(self.engine):
                    # Reads use their own connection: in WAL mode they never wait
                    # for a writer's transaction or fsync, so they are cheap enough
                    # to run on the event loop.
                    self._reader = sqlite3.connect(
                        str(self.engine.url.database), check_same_thread=False, isolation_level=None
                    )
                    self._reader.row_factory = sqlite3.Row
            if self.get_or_none(DEFAULT_LIGHT_ID) is None:
                self._create_default()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
            if self._own_engine:
                dispose(self.engine)

    def _create_tables(self) -> None:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # create_all's check-then-create races
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            Base.metadata.create_all(conn)

    def _create_default(self) -> None:
        """The light the original routes control; made without lifecycle steps."""
        now = _now()
        record = {
            "id": DEFAULT_LIGHT_ID,
            "name": "Default light",
            "status": "off",
            "color": "white",
            "brightness": 100,
            "created_at": now,
            "updated_at": now,
            "revision": 1,
        }
        with (
            contextlib.suppress(exc.IntegrityError),  # another process made it first
            self.storage.guard("creating the default light"),
            self.engine.begin() as conn,
        ):
            conn.execute(insert(lights).values(**record))

    # -- reads --------------------------------------------------------------

    @property
    def reads_are_local(self) -> bool:
        """Reads use a connection of their own to an SQLite file: they never wait
        (WAL), so an event loop may run them itself. Else (PostgreSQL, in-memory
        SQLite) a read may wait for the network or a writer."""
        return self._reader is not None

    def get_or_none(self, light_id: str) -> dict[str, Any] | None:
        found = self._select("reading a light", light_id)
        return found[0] if found else None

    def get(self, light_id: str) -> dict[str, Any]:
        light = self.get_or_none(light_id)
        if light is None:
            raise LightNotFound(f'No light has the id "{light_id}".')
        return light

    def list(self) -> Rows:
        return self._select("listing lights", None)

    def _select(self, action: str, light_id: str | None) -> Rows:
        reader = self._reader
        if reader is not None:
            where, args = ("WHERE id = ?", (light_id,)) if light_id is not None else ("", ())
            with self._read_lock, self.storage.guard(action):
                rows = reader.execute(
                    f"SELECT {', '.join(FIELDS)} FROM lights {where} ORDER BY seq", args
                ).fetchall()
            return [dict(row) for row in rows]
        query = select(*(lights.c[key] for key in FIELDS)).order_by(lights.c.seq)
        if light_id is not None:
            query = query.where(lights.c.id == light_id)
        with self.storage.guard(action), self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

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
            if self.get_or_none(record["id"]) is not None:
                raise LightConflict(f'A light with the id "{record["id"]}" already exists.')
            light = Light(**record)
            try:
                with self._session("creating a light") as session:
                    session.add(light)
                    session.flush()
                    record = light.record()
                    self._after("create", record, validated, None, session.connection())
            except exc.IntegrityError as error:
                if self.get_or_none(record["id"]) is None:
                    raise self.storage.error(error, "creating a light") from error
                raise LightConflict(
                    f'A light with the id "{record["id"]}" already exists.'
                ) from None
        self._committed()
        return record

    def update(self, light_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        input_problems = problems("LightUpdate", changes)
        if input_problems:
            raise LightInvalid("The change is not valid.", input_problems)
        with self._light_lock(light_id):
            return self._update(light_id, changes)

    def _update(self, light_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        postgres = self.engine.dialect.name == "postgresql"
        for attempt in range(MAX_ATTEMPTS):
            # On PostgreSQL a change that lost the race a few times reads the
            # row FOR UPDATE: other processes' changes of the light wait for it.
            locked = postgres and attempt >= LOCK_AFTER
            try:
                with self._session("updating a light") as session:
                    previous = _locked(session, light_id) if locked else self.get(light_id)
                    record = {
                        **previous,
                        **changes,
                        "id": previous["id"],
                        "created_at": previous["created_at"],
                        "updated_at": _now(),
                        "revision": previous["revision"] + 1,
                    }
                    record, validated = self._before("update", record, previous)
                    light = _stored(previous)
                    session.add(light)
                    for key in _CHANGED:
                        setattr(light, key, record[key])
                    session.flush()  # UPDATE ... WHERE revision = previous revision
                    record = light.record()
                    self._after("update", record, validated, previous, session.connection())
            except StaleDataError:
                continue  # changed (or deleted) since it was read: run the steps again
            self._committed()
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
            light = _stored(previous)
            try:
                with self._session("deleting a light") as session:
                    session.add(light)
                    session.delete(light)
                    session.flush()  # DELETE ... WHERE revision = previous revision
                    self._run(
                        "destroy", "after_destroy", dict(previous), previous, session.connection()
                    )
            except StaleDataError:
                continue
            self._committed()
            return previous
        raise LightConflict(
            f'Light "{light_id}" kept changing during {MAX_ATTEMPTS} attempts; try again.'
        )

    # -- steps --------------------------------------------------------------

    def _before(
        self, action: Action, record: dict[str, Any], previous: dict[str, Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The record after the observers' before-steps, and the record as validated."""
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
        if not self.observers:
            return record
        change = Change("light", action, step, dict(record), previous, db, _diff(previous, record))
        for observer in self.observers:
            observer(change)
        return change.record if step.startswith("before_") else record

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
    def _session(self, action: str) -> Iterator[Session]:
        """A Session whose work commits at the end (or rolls back on an error).

        Hostwire's errors from the plug-ins' before-events become the model's;
        storage failures become ``StorageError``.
        """
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
                session.commit()
        except BaseException as error:
            for hook in self.after_rollback:
                hook()
            if isinstance(error, StaleDataError | exc.IntegrityError):
                raise
            found = _model_error(error)
            if found is not None:
                raise found from error
            storage = self.storage.error(error, action) if isinstance(error, Exception) else error
            if storage is not error:
                raise storage from error
            raise

    def _committed(self) -> None:
        self.storage.ok()
        for hook in self.after_commit:
            hook()


def _model_error(error: BaseException) -> LightError | None:
    """The model's error for one of hostwire's, raised by the tracker in a flush."""
    if isinstance(error, EventRejected):
        return LightRejected(str(error), plugin=error.plugin)
    if isinstance(error, EventHandlerError):
        return LightPluginFailed(str(error), plugin=error.plugin, export=error.export)
    if isinstance(error, RecordReentrant):
        return LightReentrant(str(error))
    if isinstance(error, RecordInvalid):
        return LightInvalid(str(error), list(error.details))
    return None


# -- the engine ------------------------------------------------------------------

POOL_SIZE = 10  # PostgreSQL connections a process keeps (LIGHTCONTROL_DB_POOL)


def make_engine(database: str | Path, *, pool_size: int = POOL_SIZE) -> Engine:
    """An engine for ``database``: a URL (``postgresql://`` means psycopg 3,
    ``sqlite://`` is in memory) or the path of an SQLite file.

    On PostgreSQL the pool keeps ``pool_size`` connections open and opens up
    to as many again for a burst (closed when given back). Size it to the
    requests a process has in the database at once: a pool too small for
    the load connects and disconnects per request (a new server process
    each time, several times the cost of the query).

    On SQLite the engine has one connection, lent to one thread at a time
    (a write holds it from its first statement to its commit), each
    transaction begins with ``BEGIN IMMEDIATE`` and commits with
    ``synchronous=FULL`` (WAL): a write that returned survives a crash.
    """
    text = str(database)
    if "://" in text:
        try:
            url = make_url(text)
        except exc.ArgumentError as error:
            raise ValueError(f"{text!r} is not a database URL: {error}") from None
    else:
        url = URL.create("sqlite", database=text)
    backend = url.get_backend_name()
    if backend == "postgresql":
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size)
    if backend != "sqlite":
        raise ValueError(f"lightcontrol keeps its lights in SQLite or PostgreSQL, not {backend}.")
    engine = create_engine(
        url,
        poolclass=_OneWriter,
        connect_args={"check_same_thread": False, "timeout": SQLITE_TIMEOUT_S},
    )
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def dispose(engine: Engine) -> None:
    """Close the engine's connections (it makes new ones if used again)."""
    if isinstance(engine.pool, _OneWriter):
        engine.pool.dispose()  # Engine.dispose would log "Pool recreating" at INFO
    else:
        engine.dispose()


def _is_sqlite_file(engine: Engine) -> bool:
    name = engine.url.database or ""
    return engine.url.get_backend_name() == "sqlite" and name not in ("", ":memory:")


def _describe(engine: Engine) -> str:
    if _is_sqlite_file(engine):
        return str(engine.url.database)
    if engine.url.get_backend_name() == "sqlite":
        return "sqlite:// (in memory)"
    return engine.url.render_as_string(hide_password=True)


def _sqlite_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # SQLAlchemy emits the BEGIN (IMMEDIATE: a write transaction takes the write
    # lock at once, so it waits for another process's writer in the busy timeout
    # instead of failing when its read lock cannot be upgraded), not sqlite3.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


def _begin_immediate(connection: Connection) -> None:
    cast(sqlite3.Connection, connection.connection.driver_connection).execute("BEGIN IMMEDIATE")


class _OneWriter(StaticPool):
    """An SQLite database's one connection, lent to one thread at a time.

    A transaction belongs to a connection: two threads using it at once would
    commit each other's work. The store's writes, the outbox's marks and
    in-memory reads take it in turn; a Session takes it at its flush's first
    statement, so before-steps run without it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lent = threading.Lock()
        self._borrower: int | None = None

    def _do_get(self) -> ConnectionPoolEntry:
        me = threading.get_ident()
        if self._borrower == me:
            raise exc.InvalidRequestError(
                "This thread already holds the SQLite database's one connection; "
                "end its transaction before opening another."
            )
        if not self._lent.acquire(timeout=LOCK_TIMEOUT_S):
            raise exc.TimeoutError(
                f"The SQLite database's one connection was busy for {LOCK_TIMEOUT_S:g} s."
            )
        self._borrower = me
        try:
            return super()._do_get()
        except BaseException:
            self._borrower = None
            self._lent.release()
            raise

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        if self._borrower is not None:
            self._borrower = None
            self._lent.release()
