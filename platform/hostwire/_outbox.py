"""A durable outbox for ``after_*`` events, and the workers that deliver them.

The app adds an event inside the transaction of the change that caused it, so
every committed change has its events and a rolled-back one has none. Each
subscribed plug-in gets its own delivery row and its own worker thread:

- at least once: a delivery is marked done only after the handler returned;
  the event id is the idempotency key handlers dedupe on;
- in order per record: a plug-in gets an event only when its earlier events
  for the same subject are delivered or dead;
- retries with exponential backoff and jitter, up to ``max_attempts``, then
  the ``dead`` state, from which ``replay`` brings it back;
- woken when a change commits (``notify``); polling is only the fallback
  after a restart or a failure.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hostwire._errors import PluginError
from hostwire._runtime import Plugin
from hostwire._threads import CHAIN

log = logging.getLogger("hostwire.outbox")

SCHEMA = """
CREATE TABLE IF NOT EXISTS hostwire_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload TEXT NOT NULL,
    chain TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS hostwire_deliveries (
    event_seq INTEGER NOT NULL REFERENCES hostwire_events (seq),
    plugin TEXT NOT NULL,
    export TEXT NOT NULL,
    subject TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    delivered_at REAL,
    PRIMARY KEY (event_seq, plugin)
);
CREATE INDEX IF NOT EXISTS hostwire_deliveries_due
    ON hostwire_deliveries (plugin, state, next_attempt_at);
CREATE INDEX IF NOT EXISTS hostwire_deliveries_subject
    ON hostwire_deliveries (plugin, subject, state, event_seq);
"""
STATES = ("pending", "delivered", "dead")

_NEXT_DUE = """
SELECT d.event_seq, d.export, d.attempts, e.id, e.payload, e.chain
FROM hostwire_deliveries d JOIN hostwire_events e ON e.seq = d.event_seq
WHERE d.plugin = ? AND d.state = 'pending' AND d.next_attempt_at <= ?
  AND NOT EXISTS (
    SELECT 1 FROM hostwire_deliveries p
    WHERE p.plugin = d.plugin AND p.subject = d.subject
      AND p.state = 'pending' AND p.event_seq < d.event_seq)
ORDER BY d.event_seq LIMIT 1
"""


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Outbox:
    """The outbox tables in an app's SQLite database, and their delivery workers."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_attempts: int = 8,
        backoff_s: float = 0.5,
        max_backoff_s: float = 300.0,
        poll_s: float = 1.0,
        retain_s: float = 7 * 86400,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.path = str(path)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.poll_s = poll_s
        self.retain_s = retain_s
        self._jitter = jitter
        self._workers: dict[str, _Worker] = {}
        self._pruned_at = time.monotonic()
        self._prune_lock = threading.Lock()
        with self.connect() as db:
            db.executescript(SCHEMA)

    def connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # A delivery mark lost to a power cut means one more delivery: at least once holds.
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    # -- writing, inside the app's transaction ----------------------------------

    @staticmethod
    def add(
        db: sqlite3.Connection,
        envelope: dict[str, Any],
        *,
        subject: str,
        targets: Iterable[tuple[str, str]],
    ) -> None:
        """Record ``envelope`` for each ``(plugin, export)`` in the caller's open transaction."""
        now = time.time()
        cursor = db.execute(
            "INSERT INTO hostwire_events (id, type, subject, payload, chain, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                envelope["id"],
                envelope["type"],
                subject,
                json.dumps(envelope, separators=(",", ":")),
                json.dumps(list(CHAIN.get())),
                now,
            ),
        )
        db.executemany(
            "INSERT INTO hostwire_deliveries (event_seq, plugin, export, subject, next_attempt_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(cursor.lastrowid, plugin, export, subject, now) for plugin, export in targets],
        )

    def notify(self) -> None:
        """A change committed: wake the workers (thread-safe, cheap)."""
        for worker in self._workers.values():
            worker.wake.set()

    # -- delivering ------------------------------------------------------------

    def start(self, plugins: Iterable[Plugin]) -> None:
        """Start one delivery worker per plug-in (idempotent per plug-in name).

        Old deliveries are pruned now, and then hourly by an idle worker.
        """
        self.prune()
        self._pruned_at = time.monotonic()
        for plugin in plugins:
            if plugin.name not in self._workers:
                worker = _Worker(self, plugin)
                self._workers[plugin.name] = worker
                worker.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the workers after their current delivery. Idempotent."""
        workers, self._workers = self._workers, {}
        for worker in workers.values():
            worker.halt.set()
            worker.wake.set()
        for worker in workers.values():
            worker.join(timeout_s)

    def prune_if_due(self, every_s: float = 3600.0) -> None:
        with self._prune_lock:
            if time.monotonic() - self._pruned_at < every_s:
                return
            self._pruned_at = time.monotonic()
        self.prune()

    def backoff(self, attempts: int) -> float:
        """Seconds before retry number ``attempts``: exponential, capped, half jitter."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempts - 1))
        return float(ceiling * (0.5 + self._jitter() / 2))

    # -- visibility ------------------------------------------------------------

    def deliveries(
        self,
        *,
        plugin: str | None = None,
        state: str | None = None,
        event_id: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Deliveries, newest first, filtered by plug-in, state and event id."""
        where, args = [], []
        for column, value in (("d.plugin", plugin), ("d.state", state), ("e.id", event_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = (
            "SELECT e.id, e.type, d.subject, d.plugin, d.export, d.state, d.attempts, "
            "d.next_attempt_at, d.last_error, e.created_at, d.delivered_at "
            "FROM hostwire_deliveries d JOIN hostwire_events e ON e.seq = d.event_seq"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY d.event_seq DESC, d.plugin LIMIT ?"
        )
        with self.connect() as db:
            rows = db.execute(sql, (*args, limit)).fetchall()
        return [
            {
                "event_id": row["id"],
                "type": row["type"],
                "subject": row["subject"],
                "plugin": row["plugin"],
                "export": row["export"],
                "state": row["state"],
                "attempts": row["attempts"],
                "next_attempt_at": _iso(row["next_attempt_at"])
                if row["state"] == "pending"
                else None,
                "last_error": row["last_error"],
                "created_at": _iso(row["created_at"]),
                "delivered_at": _iso(row["delivered_at"]),
            }
            for row in rows
        ]

    def prune(self, now: float | None = None) -> int:
        """Forget deliveries done more than ``retain_s`` ago, and events with none left.

        Dead and pending deliveries are kept until they are replayed and done.
        """
        cutoff = (time.time() if now is None else now) - self.retain_s
        with self.connect() as db:
            count = db.execute(
                "DELETE FROM hostwire_deliveries WHERE state = 'delivered' AND delivered_at < ?",
                (cutoff,),
            ).rowcount
            db.execute(
                "DELETE FROM hostwire_events WHERE seq NOT IN "
                "(SELECT event_seq FROM hostwire_deliveries)"
            )
        return int(count)

    def replay(self, event_id: str, plugin: str | None = None) -> int:
        """Send a dead (or delivered) event again; returns how many deliveries were reset."""
        sql = (
            "UPDATE hostwire_deliveries SET state = 'pending', attempts = 0, "
            "next_attempt_at = ?, last_error = NULL, delivered_at = NULL "
            "WHERE event_seq = (SELECT seq FROM hostwire_events WHERE id = ?) "
            "AND state != 'pending'"
        )
        args: list[Any] = [time.time(), event_id]
        if plugin is not None:
            sql += " AND plugin = ?"
            args.append(plugin)
        with self.connect() as db:
            count = db.execute(sql, args).rowcount
        self.notify()
        return int(count)


class _Worker(threading.Thread):
    def __init__(self, outbox: Outbox, plugin: Plugin) -> None:
        super().__init__(name=f"hostwire-deliver-{plugin.name}", daemon=True)
        self.outbox = outbox
        self.plugin = plugin
        self.wake = threading.Event()
        self.halt = threading.Event()

    def run(self) -> None:
        db = self.outbox.connect()
        # A restart often follows a fix (a grant added, a plug-in updated): retry
        # this plug-in's pending deliveries now rather than after their backoff.
        db.execute(
            "UPDATE hostwire_deliveries SET next_attempt_at = ? "
            "WHERE plugin = ? AND state = 'pending'",
            (time.time(), self.plugin.name),
        )
        try:
            while not self.halt.is_set():
                self.wake.clear()  # before looking: a later notify is never lost
                try:
                    if self._deliver_next(db):
                        continue
                    self.outbox.prune_if_due()
                    pause = self._until_next_due(db)
                except sqlite3.Error:
                    log.exception('delivery worker for "%s" hit a database error', self.plugin.name)
                    pause = self.outbox.poll_s
                self.wake.wait(pause)
        finally:
            db.close()

    def _until_next_due(self, db: sqlite3.Connection) -> float:
        row = db.execute(
            "SELECT MIN(next_attempt_at) FROM hostwire_deliveries "
            "WHERE plugin = ? AND state = 'pending'",
            (self.plugin.name,),
        ).fetchone()
        if row is None or row[0] is None:
            return self.outbox.poll_s
        return max(0.0, min(self.outbox.poll_s, float(row[0]) - time.time()))

    def _deliver_next(self, db: sqlite3.Connection) -> bool:
        row = db.execute(_NEXT_DUE, (self.plugin.name, time.time())).fetchone()
        if row is None:
            return False
        error = self._call(row["export"], row["payload"].encode(), json.loads(row["chain"]))
        attempts = row["attempts"] + 1
        key = (row["event_seq"], self.plugin.name)
        if error is None:
            db.execute(
                "UPDATE hostwire_deliveries SET state = 'delivered', attempts = ?, "
                "delivered_at = ?, last_error = NULL WHERE event_seq = ? AND plugin = ?",
                (attempts, time.time(), *key),
            )
        elif attempts >= self.outbox.max_attempts:
            log.error(
                "event %s is dead for %s after %d attempts: %s",
                row["id"],
                self.plugin.name,
                attempts,
                error,
            )
            db.execute(
                "UPDATE hostwire_deliveries SET state = 'dead', attempts = ?, last_error = ? "
                "WHERE event_seq = ? AND plugin = ?",
                (attempts, error, *key),
            )
        else:
            delay = self.outbox.backoff(attempts)
            log.warning(
                "event %s failed for %s (attempt %d, retry in %.1f s): %s",
                row["id"],
                self.plugin.name,
                attempts,
                delay,
                error,
            )
            db.execute(
                "UPDATE hostwire_deliveries SET attempts = ?, last_error = ?, next_attempt_at = ? "
                "WHERE event_seq = ? AND plugin = ?",
                (attempts, error, time.time() + delay, *key),
            )
        return True

    def _call(self, export: str, payload: bytes, chain: list[str]) -> str | None:
        token = CHAIN.set(tuple(chain))  # host calls from the handler extend the chain
        try:
            self.plugin.call(export, payload)
        except PluginError as exc:
            return str(exc)
        except Exception as exc:  # a bug must not kill the worker; the event stays pending
            log.exception("delivering to %s failed", self.plugin.name)
            return f"{type(exc).__name__}: {exc}"
        finally:
            CHAIN.reset(token)
        return None
