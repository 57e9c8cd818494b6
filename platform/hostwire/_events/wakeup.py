"""Waking delivery workers in every process: PostgreSQL's LISTEN/NOTIFY.

A transaction that adds events also runs ``NOTIFY hostwire_outbox``
(``NOTIFY`` below): PostgreSQL sends it to every listening session when,
and only if, that transaction commits, and folds the notifications of one
transaction into one. Notifications carry nothing: they only wake workers,
which then claim what is due from the tables; polling stays the fallback.

``Listener`` is a thread per Outbox on a connection of its own (taken from
the app's engine, so it connects the same way) that calls ``wake`` on every
notification, and again after (re)connecting, since notifications sent while
it was away are lost. When the connection breaks it reconnects by itself,
waiting a little longer after each failure (up to ``max_retry_s``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("hostwire.outbox")

CHANNEL = "hostwire_outbox"
NOTIFY = text(f"NOTIFY {CHANNEL}")


def notify_in(connection: Connection) -> None:
    """Have ``connection``'s transaction wake every process's workers when it commits."""
    if connection.dialect.name == "postgresql":
        connection.execute(NOTIFY)


class Listener(threading.Thread):
    """LISTENs on ``hostwire_outbox`` and calls ``wake`` for every notification."""

    def __init__(
        self,
        engine: Engine,
        wake: Callable[[], None],
        *,
        check_s: float = 0.5,
        max_retry_s: float = 5.0,
    ) -> None:
        # A daemon: it never runs plug-in code, and must not keep a program alive.
        super().__init__(name="hostwire-outbox-listener", daemon=True)
        self.engine = engine
        self.wake = wake
        self.check_s = check_s  # how often a quiet connection looks at stopping
        self.max_retry_s = max_retry_s
        self.stopping = threading.Event()
        self.listening = threading.Event()  # set while LISTEN is in effect
        self.connections = 0  # how many times it (re)connected

    def run(self) -> None:
        import psycopg  # noqa: PLC0415 (only PostgreSQL listens: SQLite needs no psycopg)

        retry_s = 0.05
        while not self.stopping.is_set():
            connection: psycopg.Connection[Any] | None = None
            try:
                connection = self._listen()
                retry_s = 0.05
                self.wake()  # what was committed while it was not listening
                while not self.stopping.is_set():
                    for _ in connection.notifies(timeout=self.check_s):
                        self.wake()
            except (SQLAlchemyError, psycopg.Error, OSError) as error:
                self._lost(error, retry_s)
            except Exception:  # a bug: polling goes on, and so does listening, slowly
                log.exception("the outbox's LISTEN thread failed")
                retry_s = self.max_retry_s
            finally:
                self.listening.clear()
                if connection is not None:
                    self._close(connection)
            if self.stopping.wait(retry_s):
                break
            retry_s = min(self.max_retry_s, retry_s * 2)

    def _listen(self) -> psycopg.Connection[Any]:
        pooled = self.engine.raw_connection()
        connection: psycopg.Connection[Any] | None = pooled.driver_connection
        pooled.detach()  # its own for good: closing it closes the connection
        try:
            assert connection is not None  # a live pooled connection has its driver's
            connection.rollback()  # autocommit may only be switched on when idle
            connection.autocommit = True
            connection.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            pooled.close()
            raise
        self.connections += 1
        self.listening.set()
        return connection

    def _lost(self, error: BaseException, retry_s: float) -> None:
        if self.stopping.is_set():
            return
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log.info(
            "the outbox's LISTEN connection failed (%s); reconnecting in %.2f s, "
            "polling meanwhile.",
            first,
            retry_s,
        )

    @staticmethod
    def _close(connection: psycopg.Connection[Any]) -> None:
        try:
            connection.close()
        except Exception as error:  # a broken connection may fail to close: it is gone anyway
            log.debug("closing the LISTEN connection failed: %s", error)

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout_s)
