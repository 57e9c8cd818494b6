"""Host-side rate limits for the HTTP hooks, counted in the app's database.

A plug-in's ``rate_limit`` lets at most ``requests`` requests per key reach
its ``http_pre_hook`` in each fixed window of ``per_s`` seconds. Windows are
aligned to the epoch (``floor(now / per_s) * per_s``), so every process on the
database counts in the same windows (their clocks should agree, as NTP keeps
them). Each request is one statement on ``hostwire_rate_limits``:
``INSERT ... ON CONFLICT (plugin, key, window_start) DO UPDATE SET count =
count + 1 RETURNING count``; a count over ``requests`` is refused, and so
is every later request of that key to this process in the window, without
counting again (the count only climbs): a flood from one key costs no
writes. Each process deletes a plug-in's ended windows once per window.

Without a database the counters live in the process (``MemoryCounter``): the
limit then holds per process, which ``RateLimiter`` says at start.

A storage failure follows the limit's ``on_storage_error``: ``allow`` (the
default) lets the request pass, ``deny`` refuses it with 503. Either way the
outage is logged once (``StorageGuard``), not once per request.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import (
    BigInteger,
    Double,
    Engine,
    Text,
    bindparam,
    delete,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.schema import CreateTable

from hostwire._errors import StorageError
from hostwire._events.database import describe
from hostwire._events.storage import StorageGuard
from hostwire._events.tables import rate_limits

log = logging.getLogger("hostwire.ratelimit")

OnStorageError = Literal["allow", "deny"]
HEADER_PREFIX = "header:"
MAX_KEY_CHARS = 64
"""A longer client address is stored as ``sha256:<hex digest>``, as every header value is."""
GLOBAL_KEY = "*"
MISSING_KEY = ""
"""The one key of every request without the header (or the client address)."""
_TABLE_LOCK = 0x68777274_6C6D  # "hwrtlm": processes creating the table take turns
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name
_c = rate_limits.c


def check_rate_limit_key(key: str) -> str:
    """``key`` if it is ``client``, ``global`` or ``header:<name>``; else ``ValueError``."""
    if key in ("client", "global") or (
        key.startswith(HEADER_PREFIX) and _TOKEN.match(key.removeprefix(HEADER_PREFIX))
    ):
        return key
    raise ValueError(
        f'must be "client", "global" or "header:<name>" (e.g. header:x-api-key), not {key!r}'
    )


def stored_key(value: str, *, secret: bool = False) -> str:
    """The key as stored: as given, or hashed when longer than ``MAX_KEY_CHARS`` or
    ``secret`` (a header's value may be a credential: it never reaches the table)."""
    if value == MISSING_KEY or (len(value) <= MAX_KEY_CHARS and not secret):
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``requests`` per ``key`` in each window of ``per_s`` seconds."""

    requests: int
    per_s: float
    key: str = "client"
    on_storage_error: OnStorageError = "allow"

    def __post_init__(self) -> None:
        check_rate_limit_key(self.key)
        if self.requests < 1 or not self.per_s > 0:
            raise ValueError(
                f"A rate limit needs requests >= 1 and per_s > 0, not {self.requests} per "
                f"{self.per_s} s."
            )

    def key_of(self, headers: Mapping[str, str], client: str | None) -> str:
        """This request's key: its client address, one shared key, or a header's value
        (its name in any case); a request without it counts under ``MISSING_KEY``."""
        if self.key == "global":
            return GLOBAL_KEY
        if self.key == "client":
            return stored_key(client or MISSING_KEY)
        wanted = self.key.removeprefix(HEADER_PREFIX).lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), "").strip()
        return stored_key(value, secret=True)

    def window(self, now: float) -> tuple[float, float]:
        """The start and end of the window ``now`` falls in."""
        index = math.floor(now / self.per_s)
        return index * self.per_s, (index + 1) * self.per_s

    def describe(self) -> str:
        """``10 requests per 60 s for each client address`` and the like."""
        if self.key == "global":
            per = "in all"
        elif self.key == "client":
            per = "for each client address"
        else:
            per = f"for each value of header {self.key.removeprefix(HEADER_PREFIX)}"
        return f"{self.requests} requests per {self.per_s:g} s {per}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request may not reach a plug-in: the answer's status, code and message."""

    status: int
    code: str
    message: str
    retry_after_s: int


class Counter(Protocol):
    """Where the windows' counts are kept."""

    @property
    def blocking(self) -> bool:
        """True when counting does I/O: then it runs off the event loop."""

    def hit(self, plugin: str, key: str, window_start: float, *, action: str) -> int:
        """Count one request; the window's count with it. ``action`` says what failed in
        the log line of a storage failure (``StorageError``)."""

    def prune(self, plugin: str, before: float) -> None:
        """Forget the plug-in's windows that start before ``before``."""


class MemoryCounter:
    """Counts in this process only."""

    blocking = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, float], int] = {}

    def hit(self, plugin: str, key: str, window_start: float, *, action: str) -> int:
        with self._lock:
            count = self._counts.get((plugin, key, window_start), 0) + 1
            self._counts[(plugin, key, window_start)] = count
        return count

    def prune(self, plugin: str, before: float) -> None:
        with self._lock:
            for slot in [s for s in self._counts if s[0] == plugin and s[2] < before]:
                del self._counts[slot]


class DatabaseCounter:
    """Counts in ``hostwire_rate_limits`` of ``engine`` (SQLite or PostgreSQL), which it
    creates if missing. On SQLite, ``lock`` is held around each write: the one the
    outbox's workers write under, so the two never busy-wait for each other (SQLite's
    wait sleeps); PostgreSQL locks the row itself."""

    blocking = True

    def __init__(
        self,
        engine: Engine,
        *,
        storage: StorageGuard | None = None,
        lock: threading.Lock | None = None,
    ) -> None:
        dialect = engine.dialect.name
        if dialect not in ("postgresql", "sqlite"):
            raise ValueError(f"Rate limits count in SQLite or PostgreSQL, not {dialect}.")
        self.engine = engine
        # On PostgreSQL the one statement is its own transaction: no BEGIN and COMMIT
        # round trips. (SQLite's autocommit is no faster, and switching a pooled
        # connection to it and back costs a PRAGMA each way.)
        self._connect = (
            engine.execution_options(isolation_level="AUTOCOMMIT").connect
            if dialect == "postgresql"
            else engine.begin
        )
        self.storage = storage or StorageGuard(describe(engine))
        self._lock: AbstractContextManager[Any] = (
            lock if lock is not None and dialect == "sqlite" else nullcontext()
        )
        self._hit = _postgresql_count() if dialect == "postgresql" else _sqlite_count()
        self._prune = delete(rate_limits).where(
            _c.plugin == bindparam("p"), _c.window_start < bindparam("w")
        )
        with self.storage.guard("creating the rate limits' table"), engine.begin() as conn:
            if dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _TABLE_LOCK})
            conn.execute(CreateTable(rate_limits, if_not_exists=True))

    def hit(self, plugin: str, key: str, window_start: float, *, action: str) -> int:
        args = {"p": plugin, "k": key, "w": window_start}
        with self.storage.guard(action), self._lock, self._connect() as conn:
            count = int(conn.execute(self._hit, args).scalar_one())
        self.storage.ok()
        return count

    def prune(self, plugin: str, before: float) -> None:
        action = f'deleting ended windows of the rate limit of plug-in "{plugin}"'
        with self.storage.guard(action), self._lock, self.engine.begin() as conn:
            conn.execute(self._prune, {"p": plugin, "w": before})


def _sqlite_count() -> Any:
    values = sqlite_insert(rate_limits).values(
        plugin=bindparam("p"), key=bindparam("k"), window_start=bindparam("w"), count=1
    )
    return values.on_conflict_do_update(
        index_elements=[_c.plugin, _c.key, _c.window_start], set_={"count": _c.count + 1}
    ).returning(_c.count)


def _postgresql_count() -> Any:
    # A count lost to a server crash lets a few more requests through; waiting for
    # its WAL to reach the disk (milliseconds) would slow every request. The
    # statement turns synchronous_commit off for its own transaction only.
    quick = select(func.set_config("synchronous_commit", "off", True)).subquery("quick")
    row = select(
        bindparam("p", type_=Text),
        bindparam("k", type_=Text),
        bindparam("w", type_=Double),
        literal(1, BigInteger),
    ).select_from(quick)
    upsert = postgresql_insert(rate_limits).from_select(
        [_c.plugin, _c.key, _c.window_start, _c.count], row
    )
    return upsert.on_conflict_do_update(
        index_elements=[_c.plugin, _c.key, _c.window_start], set_={"count": _c.count + 1}
    ).returning(_c.count)


class RateLimiter:
    """The rate limits of the plug-ins named in ``limits``, counted by ``counter``.

    ``clock`` gives seconds since the epoch (tests move it).
    """

    def __init__(
        self,
        limits: Mapping[str, RateLimit],
        counter: Counter,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = dict(limits)
        self.counter = counter
        self.clock = clock
        self._pruned: dict[str, float] = {}
        # Keys this process refused, with their window: until it ends they are
        # refused again without a count (a flood from one key costs no writes).
        self._refused: dict[tuple[str, str], float] = {}
        # What a storage failure's one log line says was failing, and what follows.
        self._actions = {
            name: f'counting a request for the rate_limit of plug-in "{name}" (requests '
            + ("pass" if limit.on_storage_error == "allow" else "get 503")
            + " until it works again)"
            for name, limit in self.limits.items()
        }

    @classmethod
    def for_database(
        cls,
        limits: Mapping[str, RateLimit],
        engine: Engine | None,
        *,
        lock: threading.Lock | None = None,
        clock: Callable[[], float] = time.time,
    ) -> RateLimiter:
        """Counting in ``engine``'s database, shared by every process on it; without one
        (None) in this process only, which a warning says once, here."""
        if engine is not None:
            counter: Counter = DatabaseCounter(engine, lock=lock) if limits else MemoryCounter()
            return cls(limits, counter, clock=clock)
        for name, limit in limits.items():
            log.warning(
                'Plug-in "%s": its rate_limit (%s) counts in this process only, as there is no '
                "database; with several processes a key gets that many in each.",
                name,
                limit.describe(),
            )
        return cls(limits, MemoryCounter(), clock=clock)

    @property
    def blocking(self) -> bool:
        return self.counter.blocking

    def applies(self, plugin: str) -> bool:
        return plugin in self.limits

    def check(self, plugin: str, headers: Mapping[str, str], client: str | None) -> Refusal | None:
        """Count one request to ``plugin``'s pre-hook; a ``Refusal`` when it may not pass.

        Blocking when ``blocking``: call it off the event loop.
        """
        limit = self.limits.get(plugin)
        if limit is None:
            return None
        now = self.clock()
        start, end = limit.window(now)
        retry_after_s = max(1, math.ceil(end - now))
        key = limit.key_of(headers, client)
        if self._refused.get((plugin, key)) == start:
            return self._refusal(plugin, limit, retry_after_s)  # the count only climbs
        try:
            count = self.counter.hit(plugin, key, start, action=self._actions[plugin])
        except StorageError as exc:
            if limit.on_storage_error == "allow":
                return None  # the storage guard logged the outage, once
            return Refusal(503, "storage_unavailable", str(exc), exc.retry_after_s)
        if self._pruned.get(plugin) != start:
            self._prune(plugin, start)
        if count <= limit.requests:
            return None
        self._refused[(plugin, key)] = start
        return self._refusal(plugin, limit, retry_after_s)

    @staticmethod
    def _refusal(plugin: str, limit: RateLimit, retry_after_s: int) -> Refusal:
        return Refusal(
            429,
            "rate_limited",
            f'Too many requests: plug-in "{plugin}" allows {limit.describe()}; retry in '
            f"{retry_after_s} s.",
            retry_after_s,
        )

    def _prune(self, plugin: str, start: float) -> None:
        """The plug-in's ended windows go, once per window in this process."""
        self._pruned[plugin] = start
        self._refused = {
            slot: window
            for slot, window in list(self._refused.items())
            if slot[0] != plugin or window >= start
        }
        with contextlib.suppress(StorageError):  # logged by the guard; tried next window
            self.counter.prune(plugin, start)


def limiter_for(
    limits: Mapping[str, RateLimit],
    engine: Engine | None,
    *,
    lock: threading.Lock | None = None,
    current: RateLimiter | None = None,
) -> RateLimiter | None:
    """The limiter of ``limits`` counted in ``engine``'s database (None: no limits);
    ``current`` itself when it counts exactly these (a hot reload that kept them)."""
    wanted = dict(limits)
    if wanted == (current.limits if current is not None else {}):
        return current
    return RateLimiter.for_database(wanted, engine, lock=lock) if wanted else None
