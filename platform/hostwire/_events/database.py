"""The app's database as a SQLAlchemy ``Engine`` the outbox's threads can share.

``sync_engine`` accepts what an app has at hand: its ``Engine``, its
``AsyncEngine`` (the outbox's workers are threads, so they get a sync engine
on the same database: ``sqlite+aiosqlite`` becomes ``sqlite``, any
``postgresql+<async driver>`` becomes ``postgresql+psycopg``), a URL
(``postgresql://`` means psycopg 3) or the path of an SQLite file.

Engines made here on SQLite files put each connection in WAL mode with
``synchronous=NORMAL`` (a delivery mark lost to a power cut means one more
delivery: at least once holds) and wait up to 30 s for a lock. An in-memory
SQLite database lives in one connection: every thread must reach that same
connection (``StaticPool``), and the engine made here lends it to one thread
at a time, so a worker's commit never lands in the middle of the app's
transaction.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

Database = Engine | AsyncEngine | URL | str | os.PathLike[str]

SQLITE_TIMEOUT_S = 30.0
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_ACCEPTS = "a SQLAlchemy Engine or AsyncEngine, a database URL or the path of an SQLite file"
_STATIC_POOL_HINT = (
    'create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})'
)


def sync_engine(database: object) -> Engine:
    """An ``Engine`` on ``database`` that threads can share (see the module docstring)."""
    if isinstance(database, AsyncEngine):
        return _from_async(database)
    if isinstance(database, Engine):
        _check_shared(database)
        return database
    return _create(database_url(database))


def is_url(text: str) -> bool:
    """``text`` is a database URL (``scheme://...``), not a file path."""
    return _URL.match(text) is not None


def database_url(database: object) -> URL:
    """The URL for a URL string, a ``URL`` or an SQLite file path."""
    if isinstance(database, URL):
        url = database
    elif isinstance(database, str | os.PathLike):
        text = os.fspath(database)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"The outbox needs a database ({_ACCEPTS}), not an empty one.")
        if isinstance(database, str) and is_url(text):
            try:
                url = make_url(text)
            except exc.ArgumentError as error:
                raise ValueError(f"{text!r} is not a database URL: {error}") from None
        elif text == ":memory:":
            url = URL.create("sqlite")
        else:
            url = URL.create("sqlite", database=text)
    else:
        raise TypeError(f"The outbox needs a database ({_ACCEPTS}), not {database!r}.")
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")  # psycopg 3, not SQLAlchemy's psycopg2
    return url


def is_memory(url: URL) -> bool:
    """An SQLite URL whose database lives in memory (and in one connection)."""
    if url.get_backend_name() != "sqlite":
        return False
    name = url.database or ""
    return name in ("", ":memory:") or "mode=memory" in name or url.query.get("mode") == "memory"


def describe(database: Engine | URL) -> str:
    """Names the database in messages: an SQLite file's path, else the URL without password."""
    url = database.url if isinstance(database, Engine) else database
    if url.get_backend_name() == "sqlite":
        return "sqlite:// (in memory)" if is_memory(url) else str(url.database)
    return url.render_as_string(hide_password=True)


POOL_SIZE = 10  # connections kept open per engine on a server database (twice that at a peak)


def _create(url: URL) -> Engine:
    backend = url.get_backend_name()
    try:
        if backend != "sqlite":
            # A connection is checked before it is lent (the server may have
            # restarted), and the pool is sized for the outbox's lanes: a pool
            # smaller than the threads using it at once would connect and
            # disconnect for every delivery.
            return create_engine(
                url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_SIZE
            )
        if is_memory(url):
            engine = create_engine(
                url, poolclass=_OneThreadAtATime, connect_args={"check_same_thread": False}
            )
        else:
            engine = create_engine(url, connect_args={"timeout": SQLITE_TIMEOUT_S})
            event.listen(engine, "connect", _wal)
    except ModuleNotFoundError as error:
        hint = " (pip install 'hostwire[postgresql]')" if backend == "postgresql" else ""
        raise ValueError(
            f"The database {describe(url)} needs the Python module {error.name!r}, "
            f"which is not installed{hint}."
        ) from None
    except exc.NoSuchModuleError as error:
        raise ValueError(
            f"{describe(url)} is not a database URL SQLAlchemy knows: {error}"
        ) from None
    return engine


def _wal(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _from_async(engine: AsyncEngine) -> Engine:
    url = engine.url
    backend = url.get_backend_name()
    if backend == "sqlite":
        if is_memory(url):
            raise ValueError(
                "An AsyncEngine on in-memory SQLite cannot be shared with the outbox's worker "
                "threads (its one connection belongs to the event loop); use a database file "
                f"(sqlite+aiosqlite:///app.db) or a sync engine: {_STATIC_POOL_HINT}."
            )
        return _create(url.set(drivername="sqlite+pysqlite"))
    if backend == "postgresql":
        return _create(url.set(drivername="postgresql+psycopg"))
    raise ValueError(
        f"The outbox knows no sync driver for the AsyncEngine on {describe(url)}; "
        "give it a sync Engine on the same database."
    )


def _check_shared(engine: Engine) -> None:
    url = engine.url
    if not is_memory(url) or "cache=shared" in (url.database or ""):
        return
    if not isinstance(engine.pool, StaticPool):
        raise ValueError(
            f"The Engine on in-memory SQLite uses {type(engine.pool).__name__}, with which "
            "each thread sees another, empty database; build it with "
            f"{_STATIC_POOL_HINT}."
        )
    failure: list[BaseException] = []

    def probe() -> None:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except exc.ProgrammingError as error:  # check_same_thread
            failure.append(error)

    with engine.connect():  # the one connection is made by this thread, as the app's would be
        pass
    thread = threading.Thread(target=probe, name="hostwire-memory-probe")
    thread.start()
    thread.join()
    if failure:
        raise ValueError(
            "The Engine on in-memory SQLite refuses other threads; build it with "
            f"{_STATIC_POOL_HINT}."
        ) from failure[0]
    if not isinstance(engine.pool, _OneThreadAtATime):
        # The app's own StaticPool lets every thread use the connection at once:
        # a delivery worker's commit would land inside the app's transaction.
        engine.pool = _one_thread_at_a_time(engine.pool)


def _one_thread_at_a_time(pool: StaticPool) -> _OneThreadAtATime:
    """The same connection (tables and rows kept), lent to one thread at a time."""
    shared = _OneThreadAtATime(
        creator=pool._creator,  # private, as StaticPool.recreate() reads it
        reset_on_return=pool._reset_on_return,
        echo=pool.echo,
        _dispatch=pool.dispatch,
        dialect=pool._dialect,
    )
    shared._transfer_from(pool)  # keeps the database the one connection holds
    return shared


class _OneThreadAtATime(StaticPool):
    """The one connection of an in-memory SQLite database, lent to one thread at a time.

    SQLite transactions belong to a connection: two threads using it at once
    would commit or roll back each other's work. A thread waits for the
    connection like for a pool's last one (``TimeoutError`` after 30 s).
    """

    timeout_s = SQLITE_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lent = threading.Lock()
        self._borrower: int | None = None
        self._depth = 0  # checkouts by the borrowing thread (it may nest, as with StaticPool)

    def _do_get(self) -> ConnectionPoolEntry:
        me = threading.get_ident()
        if self._borrower == me:
            self._depth += 1
            return super()._do_get()
        if not self._lent.acquire(timeout=self.timeout_s):
            raise exc.TimeoutError(
                f"The in-memory SQLite database's one connection was busy for {self.timeout_s:g} s."
            )
        self._borrower, self._depth = me, 1
        try:
            return super()._do_get()
        except BaseException:
            self._borrower, self._depth = None, 0
            self._lent.release()
            raise

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        if self._borrower is None:
            return
        self._depth -= 1
        if self._depth == 0:
            self._borrower = None
            self._lent.release()
