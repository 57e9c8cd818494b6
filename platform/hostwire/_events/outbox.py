"""A durable outbox for ``after_*`` events, and the workers that deliver them.

The outbox's tables (``tables``) live in the app's own database (SQLite,
file or memory, or PostgreSQL, through SQLAlchemy). The app adds an event
inside the transaction of the change that caused it, so every committed
change has its events and a rolled-back one has none. Each subscribed
plug-in gets its own delivery row and its own lane of worker threads
(``concurrency`` of them) in every process that delivers:

- at least once: a delivery is marked done only after the handler returned;
  the event id is the idempotency key handlers dedupe on; a process killed
  mid-delivery leaves it pending, and the next one sends it again;
- in order per record: a plug-in gets an event only when its earlier events
  for the same subject are delivered or dead, and never two deliveries of one
  subject at once; different records go out concurrently;
- claimed by one worker at a time (``claims``): in memory on SQLite (one
  process); on PostgreSQL with ``FOR UPDATE SKIP LOCKED`` and a renewed lease,
  so processes share the work, and a killed process's deliveries go to
  another once its leases run out;
- retries with exponential backoff and jitter, up to ``max_attempts``, then
  the ``dead`` state, from which ``replay`` brings it back; a delivery that
  can never succeed as configured (the plug-in lacks the handler, or the
  handler failed after a host call was refused as not granted) is dead at once;
- woken when a change commits (``notify``, and on PostgreSQL LISTEN/NOTIFY
  for the other processes: ``wakeup``); polling is only the fallback after
  a restart or a failure;
- handed over in memory on SQLite: a tracked model's commit gives its
  deliveries to the idle workers (``committed``) rather than have them read
  back, while the lane knows it holds every pending delivery of its plug-in
  (a count when idle says so; a ``notify`` for rows added elsewhere, a retry
  or a quiet ``poll_s`` unsettles it until the next count). On SQLite one
  process adds and delivers an outbox's events: rows another process adds are
  read at the next quiet poll, in order with what is read, but a hand-off
  meanwhile does not wait for them;
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
import contextlib
import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, cast

import anyio.to_thread
from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.sql.elements import TextClause

from hostwire._errors import (
    PluginCallError,
    PluginError,
    PluginExportError,
    PluginTrapError,
    StorageError,
)
from hostwire._events.bus import encode_event
from hostwire._events.claims import Claims, Due, LeasedClaims, LocalClaims, Renewer, new_owner
from hostwire._events.database import Database, describe, sync_engine
from hostwire._events.storage import StorageGuard
from hostwire._events.tables import (
    SCHEMA_VERSION,
    STATES,
    deliveries,
    events,
    metadata,
    prepare,
    schema,
)
from hostwire._events.wakeup import Listener, notify_in
from hostwire._runtime import CHAIN, Plugin, log_safe

__all__ = ["SCHEMA_VERSION", "STATES", "Outbox", "deliveries", "events", "metadata", "schema"]

log = logging.getLogger("hostwire.outbox")

_d = deliveries.alias("d")
_e = events.alias("e")
_joined = _d.join(_e, _e.c.seq == _d.c.event_seq)


def _summary_statement(dialect: str) -> TextClause:
    """Per plug-in with deliveries: pending and dead counts and the oldest pending
    event's time, in one statement whose cost grows with the plug-ins and their
    undelivered rows, never with the delivered ones (``/metrics`` and the console
    read it every few seconds, beside a million delivered rows).

    The plug-ins come from a skip scan of the ``due`` index (one index search per
    plug-in); each count and the oldest are index searches on (plugin, state).
    SQLite would pick the covering subject index for the oldest and read all the
    plug-in's rows: ``INDEXED BY`` keeps it on the due index; PostgreSQL has its
    partial index of pending rows.
    """
    due = " INDEXED BY hostwire_deliveries_due" if dialect == "sqlite" else ""
    return text(
        f"""
        WITH RECURSIVE names(plugin) AS (
            SELECT min(plugin) FROM {deliveries.name}
            UNION ALL
            SELECT (SELECT min(n.plugin) FROM {deliveries.name} n WHERE n.plugin > names.plugin)
            FROM names WHERE names.plugin IS NOT NULL
        )
        SELECT names.plugin,
            (SELECT count(*) FROM {deliveries.name} p{due}
             WHERE p.plugin = names.plugin AND p.state = 'pending'),
            (SELECT count(*) FROM {deliveries.name} x{due}
             WHERE x.plugin = names.plugin AND x.state = 'dead'),
            (SELECT min(e.created_at) FROM {deliveries.name} o{due}
             JOIN {events.name} e ON e.seq = o.event_seq
             WHERE o.plugin = names.plugin AND o.state = 'pending')
        FROM names WHERE names.plugin IS NOT NULL
        """
    )


# How long /metrics and the console may show a summary already read.
SUMMARY_MAX_AGE_S = 1.0
_PENDING = (deliveries.c.plugin == bindparam("plugin"), deliveries.c.state == "pending")
_NEXT_ATTEMPT = select(func.min(deliveries.c.next_attempt_at)).where(*_PENDING)
# With leases: the soonest moment a pending delivery may become claimable, its
# next attempt or the end of the lease another process holds on it. Rows that
# wait behind another of their subject are not due by themselves.
_READY_AT = func.greatest(
    deliveries.c.next_attempt_at, func.coalesce(deliveries.c.lease_until, 0.0)
)
_NEXT_CLAIMABLE = select(func.min(_READY_AT)).where(*_PENDING, bindparam("now") < _READY_AT)
_LISTED = select(
    _e.c.id,
    _e.c.type,
    _d.c.subject,
    _d.c.plugin,
    _d.c.export,
    _d.c.state,
    _d.c.attempts,
    _d.c.next_attempt_at,
    _d.c.last_error,
    _e.c.created_at,
    _d.c.delivered_at,
).select_from(_joined)
_INSERT_EVENT = insert(events)
_PENDING_COUNT = select(func.count()).select_from(deliveries).where(*_PENDING)
_INSERT_DELIVERIES = insert(deliveries)
# The delivery, while the one recording it still holds it: on PostgreSQL a
# worker whose lease ran out and was taken over records nothing (the other
# one will); SQLite never claims rows (owner NULL).
_THIS_DELIVERY = (
    deliveries.c.event_seq == bindparam("key_seq"),
    deliveries.c.plugin == bindparam("key_plugin"),
    deliveries.c.claimed_by.is_not_distinct_from(bindparam("owner")),
)
_UNCLAIMED = {"claimed_by": None, "lease_until": None}
_MARK_DELIVERED = (
    update(deliveries)
    .where(*_THIS_DELIVERY)
    .values(
        state="delivered",
        attempts=bindparam("attempts"),
        last_error=None,
        delivered_at=bindparam("now"),
        **_UNCLAIMED,
    )
)
_MARK_DEAD = (
    update(deliveries)
    .where(*_THIS_DELIVERY)
    .values(
        state="dead", attempts=bindparam("attempts"), last_error=bindparam("error"), **_UNCLAIMED
    )
)
_MARK_RETRY = (
    update(deliveries)
    .where(*_THIS_DELIVERY)
    .values(
        attempts=bindparam("attempts"),
        last_error=bindparam("error"),
        next_attempt_at=bindparam("retry_at"),
        **_UNCLAIMED,
    )
)
_LAG_CHECK_EVERY_S = 5.0
_LAG_LOG_EVERY_S = 60.0


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Outbox:
    """The outbox tables in an app's database, and their delivery workers.

    ``database``: the app's ``Engine`` or ``AsyncEngine``, a URL
    (``postgresql://`` means psycopg 3) or the path of an SQLite file
    (``str`` or path); see ``hostwire._events.database.sync_engine``. The
    tables are created if missing. ``engine`` is the sync engine the workers use.
    ``write_lock``: the lock the app holds around its own write transactions
    in this process, if any; the workers take it to record a delivery, so the
    two never wait for each other inside SQLite.

    On PostgreSQL any number of processes may deliver from one outbox: a lane
    claims up to ``claim_batch`` deliveries (default ``2 * concurrency``) in
    one statement, each with a lease of ``lease_s`` seconds that is renewed
    while it runs; a delivery whose lease ran out (its process died) is
    claimed by another. Commits that add events wake every process's workers
    (LISTEN/NOTIFY); ``poll_s`` is the fallback.
    """

    def __init__(
        self,
        database: Database,
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
        lease_s: float = 30.0,
        claim_batch: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"Outbox concurrency must be at least 1, not {concurrency}.")
        if not lease_s > 0:
            raise ValueError(f"Outbox lease_s must be more than 0 seconds, not {lease_s}.")
        if claim_batch is not None and claim_batch < 1:
            raise ValueError(f"Outbox claim_batch must be at least 1, not {claim_batch}.")
        self.engine = sync_engine(database)
        self._own_engine = self.engine is not database
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.poll_s = poll_s
        self.retain_s = retain_s
        self.concurrency = concurrency
        self.grace_s = grace_s
        self.warn_lag_s = warn_lag_s
        self.lease_s = lease_s
        self.claim_batch = 2 * concurrency if claim_batch is None else claim_batch
        # Claims with leases, across processes, on PostgreSQL; SQLite is one process's.
        self.leased = self.engine.dialect.name == "postgresql"
        # Written into the rows this Outbox claims: unique per process and Outbox.
        self.owner = new_owner()
        self.storage = StorageGuard(describe(self.engine))
        self._listener: Listener | None = None
        self._renewer: Renewer | None = None
        self._stopping: list[_Lane] = []
        self._jitter = jitter
        self._lanes: dict[str, _Lane] = {}
        self._lanes_lock = threading.RLock()  # starting and stopping lanes
        self._pruned_at = time.monotonic()
        self._prune_lock = threading.Lock()
        self._lag_lock = threading.Lock()
        self._lag_checked_at = 0.0
        self._lag_logged_at: dict[str, float] = {}
        self._summary = _summary_statement(self.engine.dialect.name)
        # (when it was read, the summary): one tuple, read and replaced whole.
        self._summary_cache: tuple[float, list[dict[str, Any]] | None] = (0.0, None)
        # The workers' marks go one at a time, and with the app's own writes
        # when it shares its writer's lock (``write_lock``): SQLite's busy wait
        # sleeps for up to 100 ms at a time, a lock hands over at once.
        self.mark_lock = write_lock or threading.Lock()
        try:
            with self.storage.guard("creating the outbox tables"):
                self._create_tables()
        except BaseException:
            self._dispose()
            raise

    def _create_tables(self) -> None:
        with self.engine.begin() as conn:
            version = prepare(conn)
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"The outbox tables in {self.storage.path} have schema version {version}, newer "
                f"than this hostwire knows ({SCHEMA_VERSION}); upgrade hostwire.",
                kind="schema_too_new",
            )

    def close(self) -> None:
        """``stop()``, then close the engine's connections if the outbox made it. Idempotent."""
        self.stop()
        self._dispose()

    def _dispose(self) -> None:
        if self._own_engine:
            self.engine.dispose()

    def _read(self, action: str, statement: Any, args: dict[str, Any] | None = None) -> list[Any]:
        with self.storage.guard(action), self.engine.connect() as conn:
            return list(conn.execute(statement, args or {}).all())

    def _write(self, action: str, statement: Any, args: dict[str, Any] | None = None) -> int:
        with self.storage.guard(action), self.engine.begin() as conn:
            count = int(conn.execute(statement, args or {}).rowcount)
        self.storage.ok()
        return count

    # -- writing, inside the app's transaction ----------------------------------

    @staticmethod
    def add(
        connection: Connection,
        envelope: dict[str, Any],
        *,
        subject: str,
        targets: Iterable[tuple[str, str]],
        event_id: str | None = None,
        event_type: str | None = None,
        handoff: list[tuple[str, Due]] | None = None,
    ) -> None:
        """Record ``envelope`` for each ``(plugin, export)`` in the caller's open transaction.

        ``connection`` is a SQLAlchemy ``Connection`` (also the one an
        ``AsyncConnection`` or ``AsyncSession`` hands to ``run_sync``). Nothing
        is committed here: call ``notify()`` once the caller has committed (on
        PostgreSQL the commit itself wakes other processes: ``NOTIFY hostwire_outbox``).
        ``envelope`` is what handlers receive; its id and type are
        ``envelope["id"]`` and ``envelope["type"]`` unless ``event_id`` and
        ``event_type`` are given (a bare payload, one that is not an envelope).

        ``handoff``: a list that gets ``(plugin, Due)`` for each delivery added;
        once the caller has committed, ``committed(handoff)`` gives them to the
        workers in memory (instead of ``notify()``), so they need not read them back.
        """
        now = time.time()
        row = _event_row(
            envelope,
            event_id if event_id is not None else envelope["id"],
            event_type if event_type is not None else envelope["type"],
            subject,
            now,
        )
        targets = list(targets)
        if connection.dialect.name == "sqlite" and connection.dialect.driver == "pysqlite":
            seq: int | None = _add_sqlite(connection, row, subject, targets, now)
        else:
            result = connection.execute(_INSERT_EVENT, row)
            key = result.inserted_primary_key  # a single-row INSERT always has it
            seq = key[0] if key is not None else None
            _add_deliveries(connection, seq, subject, targets, now)
            notify_in(connection)
        if handoff is not None and seq is not None:
            handoff.extend(
                (plugin, Due(seq, export, subject, 0, row["id"], row["payload"], row["chain"]))
                for plugin, export in targets
            )

    @staticmethod
    def add_once(
        connection: Connection,
        payload: dict[str, Any],
        *,
        event_id: str,
        event_type: str,
        subject: str,
        targets: Iterable[tuple[str, str]],
    ) -> bool:
        """``add()``, unless an event with ``event_id`` is recorded already: then nothing
        is added and it returns False (a sender's retry, e.g. the same ``webhook-id``).

        The check is the unique event id itself (``INSERT ... ON CONFLICT DO
        NOTHING``), so two processes receiving one event at once add it once.
        An event is remembered until it is pruned (``retain_s`` after its
        deliveries are done).
        """
        dialect = connection.dialect.name
        if dialect == "postgresql":
            statement: Any = postgresql_insert(events)
        elif dialect == "sqlite":
            statement = sqlite_insert(events)
        else:
            raise StorageError(
                f"The outbox cannot add an event once on {dialect}; use SQLite or PostgreSQL.",
                kind="unsupported",
            )
        statement = statement.on_conflict_do_nothing(index_elements=[events.c.id]).returning(
            events.c.seq
        )
        now = time.time()
        seq = connection.execute(
            statement, _event_row(payload, event_id, event_type, subject, now)
        ).scalar_one_or_none()
        if seq is None:
            return False
        _add_deliveries(connection, seq, subject, targets, now)
        notify_in(connection)
        return True

    def notify(self) -> None:
        """A change committed: wake this process's workers (thread-safe, cheap).

        Other processes were woken by the commit itself (PostgreSQL).
        """
        for lane in list(self._lanes.values()):
            lane.notify()

    def committed(self, handoff: list[tuple[str, Due]]) -> None:
        """The transaction that ``add``-ed ``handoff`` committed: hand its deliveries to
        this process's workers in memory (thread-safe, cheap).

        A lane takes them when it knows every pending delivery of its plug-in
        (SQLite, one process: see ``_Lane.hand``); a delivery of a subject in
        flight waits behind it in memory. Any other lane is woken as by
        ``notify()`` and reads them from the database.
        """
        refused: set[str] = set()
        lanes = self._lanes
        for plugin, due in handoff:
            lane = lanes.get(plugin)
            if lane is not None and plugin not in refused and not lane.hand(due):
                refused.add(plugin)
        for plugin in refused:
            lane = lanes.get(plugin)
            if lane is not None:
                lane.notify(committed=True)

    # -- delivering ------------------------------------------------------------

    def start(self, plugins: Iterable[Plugin]) -> None:
        """Start a lane of ``concurrency`` delivery workers per plug-in (idempotent per name).

        Old deliveries are pruned now, and then hourly by an idle worker. When
        the database fails now, the workers start anyway and keep trying.
        """
        with contextlib.suppress(StorageError):  # logged once by the guard
            self.prune()
        self._pruned_at = time.monotonic()
        for plugin in plugins:
            self.start_lane(plugin)

    def start_lane(self, plugin: Plugin) -> None:
        """Start delivering to ``plugin`` (a lane of its own); nothing if one runs already."""
        with self._lanes_lock:
            if plugin.name in self._lanes:
                return
            lane = _Lane(self, plugin)
            # Replaced whole: notify() and committed() read it without the lock.
            self._lanes = {**self._lanes, plugin.name: lane}
            lane.start()
            if self.leased and self._listener is None:
                self._renewer = Renewer(self._leased_claims, self.lease_s)
                self._listener = Listener(self.engine, self.notify)
                self._renewer.start()
                self._listener.start()

    def stop_lane(self, name: str, grace_s: float | None = None) -> Plugin | None:
        """Stop delivering to plug-in ``name``, as ``stop()`` does for every lane; return
        the plug-in its lane delivered to (None: it had none). Its pending deliveries
        stay pending, for the next lane of that name (``start_lane``) or a restart."""
        with self._lanes_lock:
            lane = self._lanes.get(name)
            if lane is None:
                return None
            self._lanes = {k: v for k, v in self._lanes.items() if k != name}
            self._stopping = [*self._stopping, lane]
        try:
            lane.halt()
            self._finish([lane], self.grace_s if grace_s is None else grace_s)
        finally:
            with self._lanes_lock:
                self._stopping = [s for s in self._stopping if s is not lane]
        return lane.plugin

    def replace_lane(self, plugin: Plugin, grace_s: float | None = None) -> None:
        """Deliver to ``plugin`` from now on, in place of the lane's plug-in of its name:
        the old lane's deliveries in flight finish (on the old version), then a new lane
        starts and takes over what is pending. Nothing if no lane of that name runs."""
        if self.stop_lane(plugin.name, grace_s) is not None:
            self.start_lane(plugin)

    def lane_plugin(self, name: str) -> Plugin | None:
        """The plug-in the lane ``name`` delivers to, if one runs."""
        lane = self._lanes.get(name)
        return lane.plugin if lane is not None else None

    def _leased_claims(self) -> list[LeasedClaims]:
        found: list[LeasedClaims] = []
        for lane in [*self._lanes.values(), *self._stopping]:
            if isinstance(lane.claims, LeasedClaims):
                found.append(lane.claims)
        return found

    def stop(self, grace_s: float | None = None) -> None:
        """Stop the workers, letting deliveries in flight finish for ``grace_s``. Idempotent.

        This blocks for up to the grace period: on an event loop, await
        ``stop_async()`` instead. A delivery still running after it stays
        pending, its attempts untouched, and is sent again after a restart.
        """
        grace = self.grace_s if grace_s is None else grace_s
        with self._lanes_lock:
            lanes, self._lanes = list(self._lanes.values()), {}
            self._stopping = [*self._stopping, *lanes]  # their leases are renewed meanwhile
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stopping.set()
        for lane in lanes:
            lane.halt()
        self._finish(lanes, grace)
        with self._lanes_lock:
            renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.stop()
        with self._lanes_lock:
            self._stopping = [s for s in self._stopping if s not in lanes]
        if listener is not None:
            listener.stop()

    def _finish(self, lanes: list[_Lane], grace: float) -> None:
        """Let halted ``lanes`` finish their deliveries in flight for ``grace`` seconds."""
        deadline = time.monotonic() + grace
        for lane in lanes:
            lane.join(max(0.0, deadline - time.monotonic()))
        for lane in lanes:
            with contextlib.suppress(StorageError):  # logged by the guard; the leases run out
                lane.release_queued()
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
        query = _LISTED
        for column, value in ((_d.c.plugin, plugin), (_d.c.state, state), (_e.c.id, event_id)):
            if value is not None:
                query = query.where(column == value)
        query = query.order_by(_d.c.event_seq.desc(), _d.c.plugin).limit(limit)
        return [
            {
                "event_id": row.id,
                "type": row.type,
                "subject": row.subject,
                "plugin": row.plugin,
                "export": row.export,
                "state": row.state,
                "attempts": row.attempts,
                "next_attempt_at": _iso(row.next_attempt_at) if row.state == "pending" else None,
                "last_error": row.last_error,
                "created_at": _iso(row.created_at),
                "delivered_at": _iso(row.delivered_at),
            }
            for row in self._read("listing deliveries", query)
        ]

    def summary(self, now: float | None = None) -> list[dict[str, Any]]:
        """Per plug-in with undelivered events: pending and dead counts, the oldest
        pending delivery's age in seconds, and ``lagging`` when that age is over
        ``warn_lag_s``."""
        now = time.time() if now is None else now
        found = []
        for name, pending, dead, oldest in self._read("summarising deliveries", self._summary):
            if not pending and not dead:
                continue
            # No oldest with pending rows: their events are gone (a foreign key SQLite
            # does not enforce); counted, but of no known age.
            age = round(max(0.0, now - oldest), 3) if pending and oldest is not None else 0.0
            found.append(
                {
                    "plugin": name,
                    "pending": int(pending),
                    "dead": int(dead),
                    "oldest_pending_age_s": age,
                    "lagging": age > self.warn_lag_s,
                }
            )
        return sorted(found, key=lambda entry: str(entry["plugin"]))

    def recent_summary(self, max_age_s: float = SUMMARY_MAX_AGE_S) -> list[dict[str, Any]]:
        """``summary()``, or the one read less than ``max_age_s`` ago: a scrape and
        a console poll at once, or many consoles, read the database once."""
        moment = time.monotonic()
        read_at, found = self._summary_cache
        if found is not None and moment - read_at < max_age_s:
            return found
        # No lock: with the database away, each caller fails on its own guard's terms
        # rather than queueing behind the others' timeouts.
        found = self.summary()
        self._summary_cache = (moment, found)
        return found

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
        with self.storage.guard("pruning old deliveries"), self.engine.begin() as conn:
            count = conn.execute(
                delete(deliveries).where(
                    deliveries.c.state == "delivered", deliveries.c.delivered_at < cutoff
                )
            ).rowcount
            conn.execute(
                delete(events).where(~exists().where(deliveries.c.event_seq == events.c.seq))
            )
        return int(count)

    def replay(self, event_id: str, plugin: str | None = None) -> int:
        """Send a dead (or delivered) event again; returns how many deliveries were reset."""
        statement = (
            update(deliveries)
            .where(
                deliveries.c.event_seq
                == select(events.c.seq).where(events.c.id == event_id).scalar_subquery(),
                deliveries.c.state != "pending",
            )
            .values(
                state="pending",
                attempts=0,
                next_attempt_at=time.time(),
                last_error=None,
                delivered_at=None,
                **_UNCLAIMED,
            )
        )
        if plugin is not None:
            statement = statement.where(deliveries.c.plugin == plugin)
        with self.storage.guard("replaying an event"), self.engine.begin() as conn:
            count = int(conn.execute(statement).rowcount)
            notify_in(conn)
        self.storage.ok()
        self.notify()
        return count


def _event_row(
    payload: dict[str, Any], event_id: str, event_type: str, subject: str, now: float
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": event_type,
        "subject": subject,
        "payload": encode_event(payload).decode(),
        "chain": json.dumps(list(CHAIN.get())),
        "created_at": now,
    }


_SQLITE_EVENT = (
    f"INSERT INTO {events.name} (id, type, subject, payload, chain, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_SQLITE_DELIVERY = (
    f"INSERT INTO {deliveries.name} (event_seq, plugin, export, subject, next_attempt_at)"
    " VALUES (?, ?, ?, ?, ?)"
)


def _add_sqlite(
    connection: Connection,
    row: dict[str, Any],
    subject: str,
    targets: list[tuple[str, str]],
    now: float,
) -> int | None:
    """``add`` on SQLite (sqlite3): the same rows, in the same transaction, through the
    driver's cached statements: one INSERT for the event, one for all its deliveries."""
    if not connection.in_transaction():
        connection.begin()  # as SQLAlchemy's own first statement would (autobegin)
    driver = cast(sqlite3.Connection, connection.connection.driver_connection)
    values = (row["id"], row["type"], row["subject"], row["payload"], row["chain"], now)
    statement = _SQLITE_EVENT
    try:
        seq = driver.execute(statement, values).lastrowid
        if targets:
            statement = _SQLITE_DELIVERY
            driver.executemany(
                statement, [(seq, plugin, export, subject, now) for plugin, export in targets]
            )
    except sqlite3.Error as exc:  # as SQLAlchemy would raise it
        raise DBAPIError.instance(statement, values, exc, sqlite3.Error) from exc
    return int(seq) if seq is not None else None


def _add_deliveries(
    connection: Connection,
    seq: int | None,
    subject: str,
    targets: Iterable[tuple[str, str]],
    now: float,
) -> None:
    rows = [
        {
            "event_seq": seq,
            "plugin": plugin,
            "export": export,
            "subject": subject,
            "next_attempt_at": now,
        }
        for plugin, export in targets
    ]
    if rows:
        connection.execute(_INSERT_DELIVERIES, rows)


class _Lane:
    """One plug-in's workers, their claims and the deliveries queued for them."""

    def __init__(self, outbox: Outbox, plugin: Plugin) -> None:
        self.outbox = outbox
        self.plugin = plugin
        self.stopping = threading.Event()
        self.abandoned = threading.Event()  # stop() gave up waiting: record no outcome
        self._lock = threading.Lock()
        self._claim_lock = threading.Lock()  # one batch query at a time
        self.claims: Claims
        if outbox.leased:
            self.claims = LeasedClaims(
                outbox.engine,
                outbox.storage,
                plugin.name,
                owner=outbox.owner,
                lease_s=outbox.lease_s,
            )
        else:
            self.claims = LocalClaims(outbox.engine, outbox.storage, plugin.name)
        self._ready: collections.deque[Due] = collections.deque()
        self._idle: list[_Worker] = []
        self._generation = 0  # bumped by every notify, so a worker never sleeps through one
        # Hand-offs (SQLite): ``_exact`` while every pending delivery of the plug-in in
        # the database is in this lane's hands (queued, held or in flight), so one
        # handed over in memory cannot overtake an older one of its subject.
        # ``_unknown`` is bumped whenever pending rows this lane does not hold may exist.
        self._exact = False
        self._unknown = 0
        self._notified_at = -float("inf")  # the last notify for rows maybe not committed yet
        self._inflight = 0
        self._held: dict[str, collections.deque[Due]] = {}
        self.workers = [_Worker(self, n) for n in range(outbox.concurrency)]

    def start(self) -> None:
        storage = self.outbox.storage
        try:
            # A restart often follows a fix (a grant added, a plug-in updated): retry
            # this plug-in's pending deliveries now rather than after their backoff.
            with (
                storage.guard(f'scheduling deliveries to "{self.plugin.name}"'),
                self.outbox.engine.begin() as conn,
            ):
                conn.execute(
                    update(deliveries)
                    .where(deliveries.c.plugin == self.plugin.name, deliveries.c.state == "pending")
                    .values(next_attempt_at=time.time())
                )
            if isinstance(self.claims, LeasedClaims):
                self.claims.recover()
        except StorageError:
            pass  # logged once by the guard; the workers retry when storage is back
        for worker in self.workers:
            worker.start()

    def notify(self, *, committed: bool = False) -> None:
        """Wake a worker: new rows. ``committed`` when they surely committed already;
        else they may commit a moment later (an app may notify from SQLAlchemy's
        ``commit`` event, which comes first), and hand-offs wait for a quiet
        ``poll_s``, since a count of pending rows made meanwhile could miss them."""
        with self._lock:
            self._generation += 1
            self._forget()
            if not committed:
                self._notified_at = time.monotonic()
            worker = self._idle.pop() if self._idle else None
        if worker is not None:
            worker.wake.set()

    def _forget(self) -> None:
        # Under _lock: pending rows this lane does not hold may exist now.
        self._exact = False
        self._unknown += 1

    def hand(self, due: Due) -> bool:
        """Take ``due``, just committed, in memory; False when the lane cannot be sure
        it is first in line for its subject (then it is read from the database)."""
        claims = self.claims
        if not isinstance(claims, LocalClaims):
            return False  # other processes claim too: only the database knows
        with self._lock:
            if not self._exact or self.stopping.is_set():
                return False
            if claims.reserve(due.subject):
                self._ready.append(due)
            else:  # one of its subject is queued or in flight: it goes next
                self._held.setdefault(due.subject, collections.deque()).append(due)
            self._generation += 1
            worker = self._idle.pop() if self._idle else None
        if worker is not None:
            worker.wake.set()
        return True

    def recover(self) -> None:
        """Idle and unsure: count the plug-in's pending deliveries; none means the lane
        holds them all (none) again, and hand-offs may resume."""
        if not isinstance(self.claims, LocalClaims):
            return
        with self._lock:
            if self._exact or self._busy() or self.stopping.is_set():
                return
            if time.monotonic() - self._notified_at < self.outbox.poll_s:
                return
            seen = self._unknown
        rows = self.outbox._read(
            "counting pending deliveries", _PENDING_COUNT, {"plugin": self.plugin.name}
        )
        with self._lock:
            if rows[0][0] == 0 and seen == self._unknown and not self._busy():
                self._exact = True

    def _busy(self) -> bool:
        return bool(self._ready or self._held or self._inflight)

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

    def claim(self) -> Due | None:
        """The next delivery to make, now this lane's; None when nothing is due.

        One query fetches a batch (one delivery per subject), so a backlog
        costs a query per batch, not per event. The query runs outside
        ``_lock``: commits notify through that lock and must never wait for a
        query.
        """
        with self._claim_lock:
            with self._lock:
                due = self._take()
                if due is not None or self.stopping.is_set() or self._exact:
                    return due  # exact: every pending delivery is in hand, none to read
            fresh = self.claims.fetch(self.outbox.claim_batch)
            with self._lock:
                self._ready.extend(fresh)
                return self._take()

    def _take(self) -> Due | None:
        # Under _lock. Brings one more worker in while more is queued.
        if not self._ready:
            return None
        due = self._ready.popleft()
        self._inflight += 1
        if self._ready and self._idle:
            self._idle.pop().wake.set()
        return due

    def release(self, due: Due, *, settled: bool = False) -> None:
        """``due`` ran; ``settled`` when it was recorded delivered or dead (else its row
        stays pending, and what waited behind it in memory is read again later)."""
        worker = None
        with self._lock:
            self._inflight -= 1
            held = self._held.get(due.subject)
            if held and settled:
                self._ready.append(held.popleft())  # its subject stays reserved
                if not held:
                    del self._held[due.subject]
                self._generation += 1
                worker = self._idle.pop() if self._idle else None
            else:
                if held is not None:
                    del self._held[due.subject]  # pending rows: the database orders them
                if not settled:
                    self._forget()
                self.claims.done(due)
        if worker is not None:
            worker.wake.set()

    def release_queued(self) -> None:
        """Give back what was claimed and never started (the lane has stopped)."""
        with self._lock:
            queued, self._ready = list(self._ready), collections.deque()
            self._held.clear()
            self._forget()
        self.claims.release(queued)

    def sleep(self, worker: _Worker, seen: int, pause: float) -> None:
        """Wait for a notify (or ``pause``), unless one came since ``seen``."""
        with self._lock:
            if self._generation != seen or self.stopping.is_set():
                return
            self._idle.append(worker)
        woken = worker.wake.wait(pause)
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
            if not woken:
                # A quiet spell: read the database again, for what came from
                # elsewhere (another process's rows) before handing over more.
                self._forget()

    def until_next_due(self) -> float:
        with self._lock:
            if self._exact:
                return self.outbox.poll_s  # nothing pending that the lane does not hold
        now = time.time()
        args = {"plugin": self.plugin.name, "now": now}
        query = _NEXT_CLAIMABLE if self.outbox.leased else _NEXT_ATTEMPT
        rows = self.outbox._read("fetching the next attempt", query, args)
        next_at = rows[0][0] if rows else None
        if next_at is None:
            return self.outbox.poll_s
        return max(0.0, min(self.outbox.poll_s, float(next_at) - now))


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
        self.settled = False  # the last delivery was recorded delivered or dead

    def _should_run(self) -> bool:
        return not self.lane.stopping.is_set() and threading.main_thread().is_alive()

    def run(self) -> None:
        while self._should_run():
            self.wake.clear()
            seen = self.lane.generation()
            try:
                if self.index == 0:  # time-gated: cheap when not due, and runs under load
                    self.outbox.check_lag()
                due = self.lane.claim()
                if due is not None:
                    self.settled = False
                    try:
                        self._deliver(due)
                    finally:
                        self.lane.release(due, settled=self.settled)
                    continue
                if self.index == 0:
                    self.outbox.prune_if_due()
                self.lane.recover()
                pause = self.lane.until_next_due()
            except StorageError:
                pause = self.outbox.poll_s  # logged once per kind by the guard
            except SQLAlchemyError:
                # Storage failures are StorageErrors (above); anything else is a bug.
                log.exception('delivery worker for "%s" hit a database error', self.plugin.name)
                pause = self.outbox.poll_s
            self.lane.sleep(self, seen, pause)

    def _deliver(self, due: Due) -> None:
        self.delivering = True
        try:
            error, final = self._call(due.export, due.payload.encode(), json.loads(due.chain))
        finally:
            self.delivering = False
        if self.lane.abandoned.is_set():
            return  # stop() gave up on this delivery: it stays pending, attempts untouched
        if self.outbox.leased:
            self._record(due, error, final=final)  # PostgreSQL's row locks order concurrent marks
        else:
            with self.outbox.mark_lock:
                self._record(due, error, final=final)

    def _record(self, due: Due, error: str | None, *, final: bool = False) -> None:
        attempts = due.attempts + 1
        args: dict[str, Any] = {
            "key_seq": due.event_seq,
            "key_plugin": self.plugin.name,
            "owner": self.lane.claims.owner,
            "attempts": attempts,
        }
        settles = True
        if error is None:
            mark, args["now"] = _MARK_DELIVERED, time.time()
        elif self.lane.stopping.is_set():
            # Likely the app going away under it: not the handler's failure.
            log.info(
                "event %s for %s was interrupted by the shutdown and stays pending: %s",
                due.id,
                self.plugin.name,
                log_safe(error),
                extra=self._fields(due, "interrupted"),
            )
            self.lane.claims.release([due])  # it no longer runs: others may take it now
            return
        elif final:
            log.error(
                "event %s is dead for %s at once: %s",
                due.id,
                self.plugin.name,
                log_safe(error),
                extra=self._fields(due, "dead"),
            )
            mark, args["error"] = _MARK_DEAD, error
        elif attempts >= self.outbox.max_attempts:
            log.error(
                "event %s is dead for %s after %d attempts: %s",
                due.id,
                self.plugin.name,
                attempts,
                log_safe(error),
                extra=self._fields(due, "dead"),
            )
            mark, args["error"] = _MARK_DEAD, error
        else:
            delay = self.outbox.backoff(attempts)
            log.warning(
                "event %s failed for %s (attempt %d, retry in %.1f s): %s",
                due.id,
                self.plugin.name,
                attempts,
                delay,
                log_safe(error),
                extra=self._fields(due, "retry"),
            )
            mark, args["error"], args["retry_at"] = _MARK_RETRY, error, time.time() + delay
            settles = False
        recorded = self.outbox._write("recording a delivery", mark, args)
        self.settled = settles and recorded > 0
        if recorded == 0 and self.outbox.leased:
            log.warning(
                "event %s for %s ran longer than its lease and was claimed by another worker, "
                "which delivers it again; this outcome is not recorded (raise lease_s?).",
                due.id,
                self.plugin.name,
                extra=self._fields(due, "lease_lost"),
            )

    def _fields(self, due: Due, outcome: str) -> dict[str, str]:
        """A delivery's log fields (``--log-format json``)."""
        return {
            "plugin": self.plugin.name,
            "export": due.export,
            "outcome": outcome,
            "event_id": due.id,
        }

    def _call(self, export: str, payload: bytes, chain: list[str]) -> tuple[str | None, bool]:
        """The delivery's error (None when it succeeded), and whether retrying is useless."""
        token = CHAIN.set(tuple(chain))  # host calls from the handler extend the chain
        try:
            self.plugin.call(export, payload)
        except PluginError as exc:
            never = _never_succeeds(exc)
            return never or str(exc), never is not None
        except Exception as exc:  # a bug must not kill the worker; the event stays pending
            log.exception("delivering to %s failed", self.plugin.name)
            return f"{type(exc).__name__}: {exc}", False
        finally:
            CHAIN.reset(token)
        return None, False


def _never_succeeds(exc: PluginError) -> str | None:
    """Why a failed delivery can never succeed as configured, or None if a retry may.

    The handler is missing (the plug-in was replaced), or it failed (an error
    of its own or a trap) after a host call was answered 403 not_granted: the
    grants are fixed until the configuration changes, and so is the outcome.
    """
    reason = str(exc).rstrip(".")
    if isinstance(exc, PluginExportError):
        return f"{reason}; it can never succeed: replay the event once the plug-in exports it"
    if exc.refused and isinstance(exc, PluginCallError | PluginTrapError):
        ops = ", ".join(dict.fromkeys(exc.refused))
        return (
            f"{reason}; it failed after a host call was refused as not granted ({ops}): "
            "grant it, then replay the event"
        )
    return None
