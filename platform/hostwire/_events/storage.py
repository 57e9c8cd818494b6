"""SQLite failures that are the storage's state, not a bug: full, read-only, I/O...

A full disk or a read-only database makes every write fail the same way.
``StorageGuard`` turns such ``sqlite3`` errors into ``StorageError`` (the API
answers 503 with ``Retry-After``) and logs one line per kind of failure, not a
traceback per request; once storage works again it says so, once.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from hostwire._errors import StorageError

log = logging.getLogger("hostwire.storage")

# Primary SQLite result codes that describe the storage, with what they mean.
_KINDS = {
    3: ("permission", "permission denied"),  # SQLITE_PERM
    5: ("busy", "the database is locked by another writer"),  # SQLITE_BUSY
    6: ("busy", "a table is locked"),  # SQLITE_LOCKED
    8: ("read_only", "the database is read-only"),  # SQLITE_READONLY
    10: ("io_error", "a disk I/O error"),  # SQLITE_IOERR
    13: ("disk_full", "the disk or the database is full"),  # SQLITE_FULL
    14: ("cannot_open", "the database file cannot be opened"),  # SQLITE_CANTOPEN
}


def classify(exc: BaseException) -> tuple[str, str] | None:
    """``(kind, description)`` when ``exc`` is a storage failure, else None."""
    if not isinstance(exc, sqlite3.Error):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return _KINDS.get(code & 0xFF)
    text = str(exc).lower()  # older SQLite bindings carry no code
    for needle, kind in (
        ("readonly", _KINDS[8]),
        ("read-only", _KINDS[8]),
        ("disk is full", _KINDS[13]),
        ("disk i/o", _KINDS[10]),
        ("unable to open", _KINDS[14]),
        ("locked", _KINDS[5]),
    ):
        if needle in text:
            return kind
    return None


class StorageGuard:
    """Converts storage failures of one database to ``StorageError``; logs each kind once."""

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
        except sqlite3.Error as exc:
            error = self.error(exc, action, quiet=quiet)
            if error is exc:
                raise
            raise error from exc

    def error(self, exc: sqlite3.Error, action: str, *, quiet: bool = False) -> BaseException:
        """The error to raise for ``exc``: a ``StorageError``, or ``exc`` itself (a bug)."""
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
                exc,
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
