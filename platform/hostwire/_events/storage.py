"""Database failures that are the storage's state, not a bug: full, read-only, gone...

A full disk, a read-only database or a stopped PostgreSQL server makes every
write fail the same way. ``StorageGuard`` turns such errors (SQLAlchemy's,
unwrapped to the driver's: ``sqlite3`` and ``psycopg``) into ``StorageError``
(the API answers 503 with ``Retry-After``) and logs one line per kind of
failure, not a traceback per request; once storage works again it says so,
once.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from hostwire._errors import StorageError

log = logging.getLogger("hostwire.storage")

_UNAVAILABLE = ("unavailable", "the database server cannot be reached or went away")
_BUSY = ("busy", "the database is locked by another writer")
_READ_ONLY = ("read_only", "the database is read-only")
_DISK_FULL = ("disk_full", "the disk or the database is full")
_IO_ERROR = ("io_error", "a disk I/O error")
_PERMISSION = ("permission", "permission denied")
_CANNOT_OPEN = ("cannot_open", "the database file cannot be opened")

# Primary SQLite result codes that describe the storage.
_SQLITE = {
    3: _PERMISSION,  # SQLITE_PERM
    5: _BUSY,  # SQLITE_BUSY
    6: ("busy", "a table is locked"),  # SQLITE_LOCKED
    8: _READ_ONLY,  # SQLITE_READONLY
    10: _IO_ERROR,  # SQLITE_IOERR
    13: _DISK_FULL,  # SQLITE_FULL
    14: _CANNOT_OPEN,  # SQLITE_CANTOPEN
}
# PostgreSQL SQLSTATEs that describe the server or the storage; then whole classes.
_SQLSTATE = {
    "25006": _READ_ONLY,  # read_only_sql_transaction (a standby, a read-only database)
    "28000": ("cannot_open", "the database server refused the login"),
    "28P01": ("cannot_open", "the database server refused the login"),
    "3D000": ("cannot_open", "the database does not exist"),
    "40001": ("busy", "a concurrent change conflicted (serialization failure)"),
    "40P01": ("busy", "a deadlock with another transaction"),
    "42501": _PERMISSION,
    "53100": ("disk_full", "the database server's disk is full"),
    "53200": ("out_of_memory", "the database server is out of memory"),
    "53300": ("busy", "the database server has no free connection (too many connections)"),
    "55P03": ("busy", "a lock was not granted in time"),
    "57014": ("busy", "a statement was cancelled or timed out"),
    "57P01": ("unavailable", "the database server is shutting down"),
    "57P02": ("unavailable", "the database server crashed"),
    "57P03": ("unavailable", "the database server is not accepting connections yet"),
    "58030": ("io_error", "an I/O error on the database server"),
}
_SQLSTATE_CLASS = {
    "08": _UNAVAILABLE,  # connection exceptions
    "53": ("busy", "the database server is short of resources"),
    "57": _UNAVAILABLE,  # operator intervention
}


def classify(exc: BaseException) -> tuple[str, str] | None:
    """``(kind, description)`` when ``exc`` is a storage failure, else None.

    SQLAlchemy's errors are looked through to the driver's (``.orig``).
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 8:
        error = todo.pop(0)
        if id(error) in seen or isinstance(error, StorageError):
            continue
        seen.add(id(error))
        found = _classify_one(error)
        if found is not None:
            return found
        orig = getattr(error, "orig", None) if isinstance(error, sa_exc.DBAPIError) else None
        todo.extend(e for e in (orig, error.__cause__) if isinstance(e, BaseException))
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return _UNAVAILABLE  # SQLAlchemy saw the connection drop
    return None


def _classify_one(error: BaseException) -> tuple[str, str] | None:
    if isinstance(error, sqlite3.Error):
        return _classify_sqlite(error)
    if isinstance(error, sa_exc.TimeoutError):  # the pool had no connection in time
        return ("busy", "no database connection was free in time")
    if isinstance(error, sa_exc.DisconnectionError | ConnectionError):
        return _UNAVAILABLE
    if type(error).__module__.startswith("psycopg"):
        code = getattr(error, "sqlstate", None)
        if isinstance(code, str):
            return _SQLSTATE.get(code) or _SQLSTATE_CLASS.get(code[:2])
        # Client-side: refused, reset, closed; psycopg gives these no SQLSTATE.
        if type(error).__name__ in ("OperationalError", "ConnectionTimeout"):
            return _UNAVAILABLE
    return None


def _classify_sqlite(error: sqlite3.Error) -> tuple[str, str] | None:
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return _SQLITE.get(code & 0xFF)
    text = str(error).lower()  # older SQLite bindings carry no code
    for needle, kind in (
        ("readonly", _READ_ONLY),
        ("read-only", _READ_ONLY),
        ("disk is full", _DISK_FULL),
        ("disk i/o", _IO_ERROR),
        ("unable to open", _CANNOT_OPEN),
        ("locked", _BUSY),
    ):
        if needle in text:
            return kind
    return None


class StorageGuard:
    """Converts storage failures of one database to ``StorageError``; logs each kind once.

    ``path`` describes the database in messages: an SQLite file's path, or a
    URL with its password hidden (``hostwire._events.database.describe``).
    """

    def __init__(self, path: str, *, retry_after_s: int = 5) -> None:
        self.path = path
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._failing: set[str] = set()

    @contextmanager
    def guard(self, action: str, *, quiet: bool = False) -> Iterator[None]:
        """Run a database step; a storage failure becomes ``StorageError`` naming ``action``.

        ``quiet``: do not log it (the caller reports the error itself, e.g. at start).
        """
        try:
            yield
        except Exception as exc:
            error = self.error(exc, action, quiet=quiet)
            if error is exc:
                raise
            raise error from exc

    def error(self, exc: BaseException, action: str, *, quiet: bool = False) -> BaseException:
        """The error to raise for ``exc``: a ``StorageError``, or ``exc`` itself (a bug)."""
        if isinstance(exc, StorageError):
            return exc
        found = classify(exc)
        if found is None:
            return exc
        kind, description = found
        with self._lock:
            first = kind not in self._failing
            self._failing.add(kind)
        if first and not quiet:
            log.error(
                "storage unavailable (%s) while %s in %s: %s; later failures of this kind "
                "are not logged until storage works again.",
                kind,
                action,
                self.path,
                _first_line(exc),
            )
        return StorageError(
            f"Storage is unavailable: {description} ({self.path}, while {action}); "
            f"nothing was changed, retry in {self.retry_after_s} s.",
            kind=kind,
            retry_after_s=self.retry_after_s,
        )

    def ok(self) -> None:
        """A write succeeded: storage works (again)."""
        if not self._failing:
            return
        with self._lock:
            recovered, self._failing = self._failing, set()
        if recovered:
            log.warning(
                "storage works again in %s (it failed with: %s).",
                self.path,
                ", ".join(sorted(recovered)),
            )


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy appends the SQL, its parameters and a link on further lines.
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
