"""Who delivers what: claiming due deliveries for a plug-in's lane of workers.

Two kinds, one per database:

- ``LocalClaims`` (SQLite, one process): the due deliveries first in line for
  their subject are read, and the subjects in flight are reserved in memory;
- ``LeasedClaims`` (PostgreSQL, any number of processes): one statement
  claims a batch, ``UPDATE ... WHERE event_seq IN (SELECT ... FOR UPDATE SKIP
  LOCKED) RETURNING ...``, writing the Outbox's ``owner`` id and a lease into
  the rows. A delivery is claimable when it is due, nobody holds a live lease
  on it, no earlier delivery of its (plug-in, subject) is pending and no
  delivery of that subject holds a live lease (a replayed older event waits
  for the one in flight). ``Renewer`` extends the leases of deliveries that
  run for more than a third of the lease; a process that dies (SIGKILL) stops
  renewing, and its claims become claimable by others once they expire.

Leases are compared with ``time.time()`` of the processes: their clocks must
agree to well within the lease (NTP does). An owner id names the host, the
PID namespace and the process: a lane starting on the same machine takes back
at once the claims of a process there that no longer runs (a restart after
``kill -9``), rather than waiting for their leases.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import (
    Engine,
    Integer,
    Text,
    bindparam,
    exists,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.expression import ColumnClause

from hostwire._errors import StorageError
from hostwire._events.storage import StorageGuard
from hostwire._events.tables import deliveries, events

log = logging.getLogger("hostwire.outbox")


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery to make: its row and its event's."""

    event_seq: int
    export: str
    subject: str
    attempts: int
    id: str
    payload: str
    chain: str


class Claims(Protocol):
    """How a lane gets its deliveries, and gives them back."""

    @property
    def owner(self) -> str | None:
        """The id written into claimed rows; None when rows are not claimed."""

    def fetch(self, limit: int) -> list[Due]:
        """Up to ``limit`` deliveries, each of another subject, now this lane's."""

    def done(self, due: Due) -> None:
        """``due`` was recorded (or given up on): the lane holds it no more."""

    def release(self, dues: list[Due]) -> None:
        """Give back deliveries fetched but never started (stopping)."""


def _machine() -> str:
    """This host and PID namespace: PIDs mean the same process only within both."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""  # no way to tell namespaces apart: never judge others' PIDs
    return f"{socket.gethostname()}/{namespace}"


def new_owner() -> str:
    """An id for the claims of one Outbox: machine, process, and a random part."""
    return f"{_machine()}/{os.getpid()}/{secrets.token_hex(4)}"


def gone(owner: str) -> bool:
    """``owner`` was a process of this machine that no longer runs."""
    machine, _, rest = owner.rpartition("/")[0].rpartition("/")
    here = _machine()
    if not here or machine != here or not rest.isdigit():
        return False
    try:
        os.kill(int(rest), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it runs, as another user
    return False


_d = deliveries.alias("d")
_e = events.alias("e")
_earlier = deliveries.alias("p")
_joined = _d.join(_e, _e.c.seq == _d.c.event_seq)
_ROW = (_d.c.event_seq, _d.c.export, _d.c.subject, _d.c.attempts, _e.c.id, _e.c.payload, _e.c.chain)

# SQLite: the oldest due deliveries of a plug-in that are first in line for
# their subject, so each has another subject. A subject with a delivery in
# flight or queued is first in line with that one: the caller drops those
# rows, and asks for as many more.
_NEXT_DUE = (
    select(*_ROW)
    .select_from(_joined)
    .where(
        _d.c.plugin == bindparam("plugin"),
        _d.c.state == "pending",
        _d.c.next_attempt_at <= bindparam("now"),
        ~exists().where(
            _earlier.c.plugin == _d.c.plugin,
            _earlier.c.subject == _d.c.subject,
            _earlier.c.state == "pending",
            _earlier.c.event_seq < _d.c.event_seq,
        ),
    )
    .order_by(_d.c.event_seq)
    .limit(bindparam("limit", type_=Integer))
)


class LocalClaims:
    """SQLite's claims: rows are read, and subjects in flight reserved in this process."""

    owner = None

    def __init__(self, engine: Engine, storage: StorageGuard, plugin: str) -> None:
        self.engine = engine
        self.storage = storage
        self.plugin = plugin
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # subjects in flight or queued in the lane

    def fetch(self, limit: int) -> list[Due]:
        with self._lock:
            # Busy when the query starts: a row of such a subject may be read
            # before its delivery in flight is marked. Each subject comes at
            # most once, so asking for that many more rows makes up for them.
            busy = set(self._busy)
        args = {"plugin": self.plugin, "now": time.time(), "limit": limit + len(busy)}
        with self.storage.guard("fetching due deliveries"), self.engine.connect() as conn:
            rows = conn.execute(_NEXT_DUE, args).all()
        with self._lock:
            taken = busy | self._busy
            fresh = [Due(*row) for row in rows if row.subject not in taken]
            self._busy.update(d.subject for d in fresh)
        return fresh

    def done(self, due: Due) -> None:
        with self._lock:
            self._busy.discard(due.subject)

    def reserve(self, subject: str) -> bool:
        """Take ``subject`` for a delivery handed over in memory; False when it is busy."""
        with self._lock:
            if subject in self._busy:
                return False
            self._busy.add(subject)
            return True

    def release(self, dues: list[Due]) -> None:
        for due in dues:
            self.done(due)


_c = deliveries.alias("c")
_l = deliveries.alias("l")
# A literal, not a parameter: PostgreSQL then uses the partial indexes on
# pending and on leased rows (tables.POSTGRESQL_INDEXES) in every plan.
_PENDING: ColumnClause[str] = literal_column("'pending'", Text())
# Correlated scalar subqueries, which the planner always runs per candidate on
# the (plugin, subject, state, event_seq) index, whatever its statistics say.
_FIRST_IN_LINE = (
    select(func.min(_earlier.c.event_seq))
    .where(
        _earlier.c.plugin == bindparam("lane"),
        _earlier.c.subject == _c.c.subject,
        _earlier.c.state == _PENDING,
    )
    .scalar_subquery()
)
_CLAIMABLE = (
    select(_c.c.event_seq)
    .where(
        _c.c.plugin == bindparam("lane"),
        _c.c.state == _PENDING,
        _c.c.next_attempt_at <= bindparam("now"),
        or_(_c.c.lease_until.is_(None), _c.c.lease_until < bindparam("now")),
        # Our own claim whose lease ran out is still ours: never run it twice here.
        _c.c.claimed_by.is_distinct_from(bindparam("claimant")),
        _c.c.event_seq == _FIRST_IN_LINE,
        ~exists().where(
            _l.c.plugin == bindparam("lane"),
            _l.c.subject == _c.c.subject,
            _l.c.lease_until.is_not(None),
            _l.c.lease_until >= bindparam("now"),
            _l.c.state == _PENDING,
            _l.c.event_seq != _c.c.event_seq,
        ),
    )
    .order_by(_c.c.event_seq)
    .limit(bindparam("limit", type_=Integer))
    .with_for_update(skip_locked=True)
)
_CLAIM = (
    update(deliveries)
    .where(
        deliveries.c.plugin == bindparam("lane"),
        deliveries.c.event_seq.in_(_CLAIMABLE.scalar_subquery()),
        events.c.seq == deliveries.c.event_seq,
    )
    .values(claimed_by=bindparam("claimant"), lease_until=bindparam("until"))
    .returning(
        deliveries.c.event_seq,
        deliveries.c.export,
        deliveries.c.subject,
        deliveries.c.attempts,
        events.c.id,
        events.c.payload,
        events.c.chain,
    )
)
_HELD = (
    deliveries.c.plugin == bindparam("lane"),
    deliveries.c.event_seq.in_(bindparam("seqs", expanding=True)),
    deliveries.c.claimed_by == bindparam("claimant"),
)
_RENEW = (
    update(deliveries)
    .where(*_HELD, deliveries.c.lease_until < bindparam("renew_before"))
    .values(lease_until=bindparam("until"))
)
_RELEASE = update(deliveries).where(*_HELD).values(claimed_by=None, lease_until=None)
_OWNERS = (
    select(deliveries.c.claimed_by)
    .distinct()
    .where(
        deliveries.c.plugin == bindparam("lane"),
        deliveries.c.state == "pending",
        deliveries.c.lease_until >= bindparam("now"),
    )
)
_RELEASE_OWNERS = (
    update(deliveries)
    .where(
        deliveries.c.plugin == bindparam("lane"),
        deliveries.c.state == "pending",
        deliveries.c.claimed_by.in_(bindparam("owners", expanding=True)),
    )
    .values(claimed_by=None, lease_until=None)
)


class LeasedClaims:
    """PostgreSQL's claims: rows carry this Outbox's ``owner`` id and a lease."""

    def __init__(
        self, engine: Engine, storage: StorageGuard, plugin: str, *, owner: str, lease_s: float
    ) -> None:
        self.engine = engine
        self.storage = storage
        self.plugin = plugin
        self.owner = owner
        self.lease_s = lease_s
        self._lock = threading.Lock()
        self._held: set[int] = set()  # event seqs claimed, queued or in flight

    def fetch(self, limit: int) -> list[Due]:
        now = time.time()
        args = {
            "lane": self.plugin,
            "claimant": self.owner,
            "now": now,
            "until": now + self.lease_s,
            "limit": limit,
        }
        with self.storage.guard("claiming due deliveries"), self.engine.begin() as conn:
            rows = conn.execute(_CLAIM, args).all()
        self.storage.ok()
        fresh = sorted((Due(*row) for row in rows), key=lambda d: d.event_seq)
        with self._lock:
            self._held.update(d.event_seq for d in fresh)
        return fresh

    def done(self, due: Due) -> None:
        with self._lock:
            self._held.discard(due.event_seq)

    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._held)

    def renew(self) -> int:
        """Extend the leases that have less than two thirds left; how many were."""
        seqs = self.held()
        if not seqs:
            return 0
        now = time.time()
        args = {
            "lane": self.plugin,
            "claimant": self.owner,
            "seqs": seqs,
            "until": now + self.lease_s,
            "renew_before": now + self.lease_s * 2 / 3,
        }
        with self.storage.guard("renewing delivery leases"), self.engine.begin() as conn:
            return int(conn.execute(_RENEW, args).rowcount)

    def recover(self) -> int:
        """Release the live claims of this machine's processes that are gone; how many."""
        args = {"lane": self.plugin, "now": time.time()}
        with self.storage.guard("recovering claims"), self.engine.begin() as conn:
            owners = [o for o in conn.execute(_OWNERS, args).scalars() if o and gone(o)]
            if not owners:
                return 0
            count = conn.execute(_RELEASE_OWNERS, {**args, "owners": owners}).rowcount
        log.info(
            'took back %d deliveries to "%s" claimed by processes that are gone (%s)',
            count,
            self.plugin,
            ", ".join(sorted(owners)),
        )
        return int(count)

    def release(self, dues: list[Due]) -> None:
        seqs = [d.event_seq for d in dues]
        if seqs:
            args = {"lane": self.plugin, "claimant": self.owner, "seqs": seqs}
            with self.storage.guard("releasing claims"), self.engine.begin() as conn:
                conn.execute(_RELEASE, args)
        for due in dues:
            self.done(due)


class Renewer(threading.Thread):
    """Renews the leases of an Outbox's lanes every ``lease_s / 6`` until ``stop()``."""

    def __init__(self, claims: Callable[[], list[LeasedClaims]], lease_s: float) -> None:
        # A daemon: it never runs plug-in code, and must not keep a program alive.
        super().__init__(name="hostwire-outbox-leases", daemon=True)
        self.claims = claims
        self.every_s = lease_s / 6
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.every_s):
            for claims in self.claims():
                try:
                    claims.renew()
                except StorageError:
                    pass  # logged once by the guard; the next round tries again
                except SQLAlchemyError:
                    log.exception('renewing the leases of "%s" hit a database error', claims.plugin)

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout_s)
