"""A durable outbox for ``after_*`` events, and the workers that deliver them.

The app adds an event inside the transaction of the change that caused it, so
every committed change has its events and a rolled-back one has none. Each
subscribed plug-in gets its own delivery row and its own lane of worker
threads (``concurrency`` of them):

- at least once: a delivery is marked done only after the handler returned;
  the event id is the idempotency key handlers dedupe on;
- in order per record: a plug-in gets an event only when its earlier events
  for the same subject are delivered or dead, and a lane never runs two
  deliveries of one subject at once; different records go out concurrently;
- retries with exponential backoff and jitter, up to ``max_attempts``, then
  the ``dead`` state, from which ``replay`` brings it back;
- woken when a change commits (``notify``); polling is only the fallback
  after a restart or a failure;
- a warning (log and ``summary()``) when the oldest pending delivery of a
  plug-in is older than ``warn_lag_s``.

Stopping lets deliveries in flight finish for ``grace_s`` seconds; one that
is still running then, or that failed because the app was stopping, stays
pending with its attempts untouched. The worker threads are not daemons: the
interpreter never exits while one of them is inside a plug-in (a thread torn
down inside native plug-in code aborts the process), and a worker whose
program forgot ``stop()`` ends by itself once the main thread has finished.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from hostwire._errors import PluginError, StorageError
from hostwire._events.storage import StorageGuard
from hostwire._runtime import CHAIN, Plugin, log_safe

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

# The oldest due deliveries of a plug-in that are first in line for their
# subject (so each has another subject) and whose subject has no delivery in
# flight or queued (the JSON list of busy subjects).
_NEXT_DUE = """
SELECT d.event_seq, d.export, d.subject, d.attempts, e.id, e.payload, e.chain
FROM hostwire_deliveries d JOIN hostwire_events e ON e.seq = d.event_seq
WHERE d.plugin = ? AND d.state = 'pending' AND d.next_attempt_at <= ?
  AND d.subject NOT IN (SELECT value FROM json_each(?))
  AND NOT EXISTS (
    SELECT 1 FROM hostwire_deliveries p
    WHERE p.plugin = d.plugin AND p.subject = d.subject
      AND p.state = 'pending' AND p.event_seq < d.event_seq)
ORDER BY d.event_seq LIMIT ?
"""
_SUMMARY = """
SELECT d.plugin, d.state, COUNT(*) AS count, MIN(e.created_at) AS oldest
FROM hostwire_deliveries d JOIN hostwire_events e ON e.seq = d.event_seq
WHERE d.state != 'delivered'
GROUP BY d.plugin, d.state
"""
_LAG_CHECK_EVERY_S = 5.0
_LAG_LOG_EVERY_S = 60.0


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _database_path(path: object) -> str:
    if path is None or not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"Outbox needs the path of the app's SQLite database file (str or path), not {path!r}."
        )
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            "Outbox needs the path of the app's SQLite database file, not an empty one."
        )
    if text == ":memory:" or "mode=memory" in text:
        raise ValueError(
            f"Outbox cannot use an in-memory database ({text!r}): its workers open their own "
            "connections, which would each see another, empty database; give a file path "
            "(a temporary file for tests)."
        )
    return text


class Outbox:
    """The outbox tables in an app's SQLite database, and their delivery workers.

    ``path`` is the database file (a ``str`` or path; never ``None`` nor
    ``":memory:"``, which raise ``TypeError`` and ``ValueError``).
    ``write_lock``: the lock the app holds around its own write transactions
    in this process, if any; the workers take it to record a delivery, so the
    two never wait for each other inside SQLite.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_attempts: int = 8,
        backoff_s: float = 0.5,
        max_backoff_s: float = 300.0,
        poll_s: float = 1.0,
        retain_s: float = 7 * 86400,
        concurrency: int = 4,
        grace_s: float = 5.0,
        warn_lag_s: float = 60.0,
        write_lock: threading.Lock | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.path = _database_path(path)
        if concurrency < 1:
            raise ValueError(f"Outbox concurrency must be at least 1, not {concurrency}.")
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.poll_s = poll_s
        self.retain_s = retain_s
        self.concurrency = concurrency
        self.grace_s = grace_s
        self.warn_lag_s = warn_lag_s
        self.storage = StorageGuard(self.path)
        self._jitter = jitter
        self._lanes: dict[str, _Lane] = {}
        self._pruned_at = time.monotonic()
        self._prune_lock = threading.Lock()
        self._lag_lock = threading.Lock()
        self._lag_checked_at = 0.0
        self._lag_logged_at: dict[str, float] = {}
        # The workers' marks go one at a time, and with the app's own writes
        # when it shares its writer's lock (``write_lock``): SQLite's busy wait
        # sleeps for up to 100 ms at a time, a lock hands over at once.
        self.mark_lock = write_lock or threading.Lock()
        with self.storage.guard("creating the outbox tables"):
            db = self.connect()
            try:
                db.executescript(SCHEMA)
            finally:
                db.close()

    def connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # A delivery mark lost to a power cut means one more delivery: at least once holds.
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _read(self, action: str, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self.storage.guard(action):
            db = self.connect()
            try:
                return db.execute(sql, tuple(args)).fetchall()
            finally:
                db.close()

    def _write(self, action: str, sql: str, args: Iterable[Any] = ()) -> int:
        with self.storage.guard(action):
            db = self.connect()
            try:
                count = int(db.execute(sql, tuple(args)).rowcount)
            finally:
                db.close()
        self.storage.ok()
        return count

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
        for lane in list(self._lanes.values()):
            lane.notify()

    # -- delivering ------------------------------------------------------------

    def start(self, plugins: Iterable[Plugin]) -> None:
        """Start a lane of ``concurrency`` delivery workers per plug-in (idempotent per name).

        Old deliveries are pruned now, and then hourly by an idle worker.
        """
        self.prune()
        self._pruned_at = time.monotonic()
        for plugin in plugins:
            if plugin.name not in self._lanes:
                lane = _Lane(self, plugin)
                self._lanes[plugin.name] = lane
                lane.start()

    def stop(self, grace_s: float | None = None) -> None:
        """Stop the workers, letting deliveries in flight finish for ``grace_s``. Idempotent.

        This blocks for up to the grace period: on an event loop, await
        ``stop_async()`` instead. A delivery still running after it stays
        pending, its attempts untouched, and is sent again after a restart.
        """
        grace = self.grace_s if grace_s is None else grace_s
        lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            lane.halt()
        deadline = time.monotonic() + grace
        for lane in lanes:
            lane.join(max(0.0, deadline - time.monotonic()))
        for lane in lanes:
            running = lane.running()
            if running:
                lane.abandoned.set()
                log.warning(
                    'stopping: %d deliveries to "%s" still running after the %g s grace period '
                    "stay pending and go out again after a restart.",
                    running,
                    lane.plugin.name,
                    grace,
                )

    async def stop_async(self, grace_s: float | None = None) -> None:
        """``stop()`` in a worker thread, so the event loop keeps serving meanwhile.

        Deliveries in flight may call the app in process: they need its loop
        to finish within the grace period.
        """
        await anyio.to_thread.run_sync(self.stop, grace_s)

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
        rows = self._read("listing deliveries", sql, (*args, limit))
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

    def summary(self, now: float | None = None) -> list[dict[str, Any]]:
        """Per plug-in with undelivered events: pending and dead counts, the oldest
        pending delivery's age in seconds, and ``lagging`` when that age is over
        ``warn_lag_s``."""
        now = time.time() if now is None else now
        found: dict[str, dict[str, Any]] = {}
        for row in self._read("summarising deliveries", _SUMMARY):
            entry = found.setdefault(
                row["plugin"],
                {"plugin": row["plugin"], "pending": 0, "dead": 0, "oldest_pending_age_s": 0.0},
            )
            entry[row["state"]] = row["count"]
            if row["state"] == "pending":
                entry["oldest_pending_age_s"] = round(max(0.0, now - row["oldest"]), 3)
        for entry in found.values():
            entry["lagging"] = entry["oldest_pending_age_s"] > self.warn_lag_s
        return [found[name] for name in sorted(found)]

    def check_lag(self, now: float | None = None) -> None:
        """Log a warning (at most once a minute per plug-in) for plug-ins that lag."""
        moment = time.monotonic()
        with self._lag_lock:
            if moment - self._lag_checked_at < _LAG_CHECK_EVERY_S:
                return
            self._lag_checked_at = moment
        for entry in self.summary(now):
            if not entry["lagging"]:
                continue
            name = entry["plugin"]
            with self._lag_lock:
                if moment - self._lag_logged_at.get(name, -_LAG_LOG_EVERY_S) < _LAG_LOG_EVERY_S:
                    continue
                self._lag_logged_at[name] = moment
            log.warning(
                'deliveries to "%s" lag: the oldest of %d pending is %.0f s old '
                "(warn_lag_s is %g); the plug-in does not keep up or keeps failing.",
                name,
                entry["pending"],
                entry["oldest_pending_age_s"],
                self.warn_lag_s,
            )

    def prune(self, now: float | None = None) -> int:
        """Forget deliveries done more than ``retain_s`` ago, and events with none left.

        Dead and pending deliveries are kept until they are replayed and done.
        """
        cutoff = (time.time() if now is None else now) - self.retain_s
        with self.storage.guard("pruning old deliveries"):
            db = self.connect()
            try:
                count = db.execute(
                    "DELETE FROM hostwire_deliveries "
                    "WHERE state = 'delivered' AND delivered_at < ?",
                    (cutoff,),
                ).rowcount
                db.execute(
                    "DELETE FROM hostwire_events WHERE seq NOT IN "
                    "(SELECT event_seq FROM hostwire_deliveries)"
                )
            finally:
                db.close()
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
        count = self._write("replaying an event", sql, args)
        self.notify()
        return count


class _Lane:
    """One plug-in's workers, and the subjects they are delivering right now."""

    def __init__(self, outbox: Outbox, plugin: Plugin) -> None:
        self.outbox = outbox
        self.plugin = plugin
        self.stopping = threading.Event()
        self.abandoned = threading.Event()  # stop() gave up waiting: record no outcome
        self._lock = threading.Lock()
        self._claim_lock = threading.Lock()  # one batch query at a time
        self._busy: set[str] = set()  # subjects in flight or queued in _ready
        self._ready: collections.deque[sqlite3.Row] = collections.deque()
        self._idle: list[_Worker] = []
        self._generation = 0  # bumped by every notify, so a worker never sleeps through one
        self.workers = [_Worker(self, n) for n in range(outbox.concurrency)]

    def start(self) -> None:
        db = self.outbox.connect()
        try:
            # A restart often follows a fix (a grant added, a plug-in updated): retry
            # this plug-in's pending deliveries now rather than after their backoff.
            db.execute(
                "UPDATE hostwire_deliveries SET next_attempt_at = ? "
                "WHERE plugin = ? AND state = 'pending'",
                (time.time(), self.plugin.name),
            )
        except sqlite3.Error as exc:
            error = self.outbox.storage.error(exc, f'scheduling deliveries to "{self.plugin.name}"')
            if not isinstance(error, StorageError):
                raise
            # Logged once by the guard; the workers retry when storage is back.
        finally:
            db.close()
        for worker in self.workers:
            worker.start()

    def notify(self) -> None:
        with self._lock:
            self._generation += 1
            worker = self._idle.pop() if self._idle else None
        if worker is not None:
            worker.wake.set()

    def halt(self) -> None:
        self.stopping.set()
        for worker in self.workers:
            worker.wake.set()

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def running(self) -> int:
        return sum(1 for w in self.workers if w.is_alive() and w.delivering)

    def generation(self) -> int:
        with self._lock:
            return self._generation

    def claim(self, db: sqlite3.Connection) -> sqlite3.Row | None:
        """The next delivery to make, its subject marked busy; None when nothing is due.

        One query fetches a batch (one delivery per subject, their subjects
        reserved at once), so a backlog costs a query per batch, not per event.
        The query runs outside ``_lock``: commits notify through that lock and
        must never wait for a query.
        """
        with self._claim_lock:
            with self._lock:
                row = self._take()
                if row is not None or self.stopping.is_set():
                    return row
                busy = json.dumps(sorted(self._busy))
            rows = db.execute(
                _NEXT_DUE, (self.plugin.name, time.time(), busy, 2 * len(self.workers))
            ).fetchall()
            with self._lock:
                fresh = [r for r in rows if r["subject"] not in self._busy]
                self._ready.extend(fresh)
                self._busy.update(r["subject"] for r in fresh)
                return self._take()

    def _take(self) -> sqlite3.Row | None:
        # Under _lock. Brings one more worker in while more is queued.
        if not self._ready:
            return None
        row: sqlite3.Row = self._ready.popleft()
        if self._ready and self._idle:
            self._idle.pop().wake.set()
        return row

    def release(self, subject: str) -> None:
        with self._lock:
            self._busy.discard(subject)

    def sleep(self, worker: _Worker, seen: int, pause: float) -> None:
        """Wait for a notify (or ``pause``), unless one came since ``seen``."""
        with self._lock:
            if self._generation != seen or self.stopping.is_set():
                return
            self._idle.append(worker)
        worker.wake.wait(pause)
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)

    def until_next_due(self, db: sqlite3.Connection) -> float:
        row = db.execute(
            "SELECT MIN(next_attempt_at) FROM hostwire_deliveries "
            "WHERE plugin = ? AND state = 'pending'",
            (self.plugin.name,),
        ).fetchone()
        if row is None or row[0] is None:
            return self.outbox.poll_s
        return max(0.0, min(self.outbox.poll_s, float(row[0]) - time.time()))


class _Worker(threading.Thread):
    def __init__(self, lane: _Lane, index: int) -> None:
        # Not a daemon: see the module docstring.
        super().__init__(name=f"hostwire-deliver-{lane.plugin.name}-{index}", daemon=False)
        self.lane = lane
        self.outbox = lane.outbox
        self.plugin = lane.plugin
        self.index = index
        self.wake = threading.Event()
        self.delivering = False

    def _should_run(self) -> bool:
        return not self.lane.stopping.is_set() and threading.main_thread().is_alive()

    def run(self) -> None:
        try:
            db = self.outbox.connect()
        except sqlite3.Error as exc:
            self.outbox.storage.error(exc, f'opening the outbox for "{self.plugin.name}"')
            return
        try:
            while self._should_run():
                self.wake.clear()
                seen = self.lane.generation()
                try:
                    if self.index == 0:  # time-gated: cheap when not due, and runs under load
                        self.outbox.check_lag()
                    row = self.lane.claim(db)
                    if row is not None:
                        try:
                            self._deliver(db, row)
                        finally:
                            self.lane.release(row["subject"])
                        continue
                    if self.index == 0:
                        self.outbox.prune_if_due()
                    pause = self.lane.until_next_due(db)
                except StorageError:
                    pause = self.outbox.poll_s  # logged once per kind by the guard
                except sqlite3.Error as exc:
                    # One log line per kind of storage failure; anything else is a bug.
                    if not isinstance(
                        self.outbox.storage.error(exc, "delivering events"), StorageError
                    ):
                        log.exception(
                            'delivery worker for "%s" hit a database error', self.plugin.name
                        )
                    pause = self.outbox.poll_s
                self.lane.sleep(self, seen, pause)
        finally:
            db.close()

    def _deliver(self, db: sqlite3.Connection, row: sqlite3.Row) -> None:
        self.delivering = True
        try:
            error = self._call(row["export"], row["payload"].encode(), json.loads(row["chain"]))
        finally:
            self.delivering = False
        if self.lane.abandoned.is_set():
            return  # stop() gave up on this delivery: it stays pending, attempts untouched
        with self.outbox.mark_lock:
            self._record(db, row, error)

    def _record(self, db: sqlite3.Connection, row: sqlite3.Row, error: str | None) -> None:
        attempts = row["attempts"] + 1
        key = (row["event_seq"], self.plugin.name)
        if error is None:
            db.execute(
                "UPDATE hostwire_deliveries SET state = 'delivered', attempts = ?, "
                "delivered_at = ?, last_error = NULL WHERE event_seq = ? AND plugin = ?",
                (attempts, time.time(), *key),
            )
            self.outbox.storage.ok()
        elif self.lane.stopping.is_set():
            # Likely the app going away under it: not the handler's failure.
            log.info(
                "event %s for %s was interrupted by the shutdown and stays pending: %s",
                row["id"],
                self.plugin.name,
                log_safe(error),
            )
        elif attempts >= self.outbox.max_attempts:
            log.error(
                "event %s is dead for %s after %d attempts: %s",
                row["id"],
                self.plugin.name,
                attempts,
                log_safe(error),
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
                log_safe(error),
            )
            db.execute(
                "UPDATE hostwire_deliveries SET attempts = ?, last_error = ?, next_attempt_at = ? "
                "WHERE event_seq = ? AND plugin = ?",
                (attempts, error, time.time() + delay, *key),
            )

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
