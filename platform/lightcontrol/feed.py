"""A live feed of committed light changes, for ``GET /events/stream`` (SSE).

An observer sees the last after-step of each change in the writing thread,
inside the write's transaction. Listeners only see what was committed, in
the order it was:

- on SQLite (one process), the entries are kept until the write commits,
  then published to every listener's queue on its event loop; a rollback
  drops them;
- on PostgreSQL (one process or several, ``hostwire serve --workers``), the
  entry goes out with ``pg_notify`` on the write's own connection: the server
  delivers it when the transaction commits, to every process LISTENing on
  ``lightcontrol_changes``, in commit order (never on a rollback). Each
  process has one listening connection (a thread, ``_Listener``) that
  publishes what arrives to its own listeners, so a stream shows the changes
  made by every worker. When that connection is lost (the database restarts)
  it connects again on its own; changes committed while it was away are not
  in the streams that were open (a stream is live, not a log: the outbox is
  the durable record).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy import Engine, func, select

from lightcontrol.store import Change, LightStore

# The last after-step of each action: one feed entry per change.
FINAL_STEPS = {"create": "after_create", "update": "after_update", "destroy": "after_destroy"}
QUEUE_SIZE = 1000
CHANNEL = "lightcontrol_changes"
LISTEN_WAIT_S = 5.0  # at start, for the listening connection
_RECONNECT_MAX_S = 1.0  # a connection attempt a second: cheap, and a short gap
log = logging.getLogger("lightcontrol.feed")


class ChangeFeed:
    def __init__(self) -> None:
        self._pending = threading.local()
        self._listeners: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = (
            set()
        )
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._listener: _Listener | None = None

    @property
    def listening(self) -> int:
        """How many streams are open."""
        with self._lock:
            return len(self._listeners)

    def attach(self, store: LightStore) -> None:
        store.observers.append(self._observe)
        store.after_commit.append(self._publish)
        store.after_rollback.append(self._drop)
        if store.engine.dialect.name == "postgresql":
            self._listener = _Listener(store.engine, self._send)
            self._listener.start()
            if not self._listener.listening.wait(LISTEN_WAIT_S):
                log.warning(
                    "the change feed is not listening yet (%s): streams show changes once it is.",
                    store.path,
                )

    def detach(self, store: LightStore) -> None:
        store.observers.remove(self._observe)
        store.after_commit.remove(self._publish)
        store.after_rollback.remove(self._drop)
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    def _observe(self, change: Change) -> None:
        if FINAL_STEPS.get(change.action) != change.step:
            return
        entry = {
            "type": f"{change.model}.{change.step}",
            "record": change.record,
            "changes": change.changes,
        }
        if self._listener is not None and change.connection is not None:
            # A light's entry is well under NOTIFY's 8000 bytes (its fields are bounded).
            text = json.dumps(entry, separators=(",", ":"))
            change.connection.execute(select(func.pg_notify(CHANNEL, text)))
        else:
            self._queue().append(entry)

    def _queue(self) -> list[dict[str, Any]]:
        if not hasattr(self._pending, "entries"):
            self._pending.entries = []
        entries: list[dict[str, Any]] = self._pending.entries
        return entries

    def _drop(self) -> None:
        self._queue().clear()

    def _publish(self) -> None:
        entries, self._pending.entries = self._queue(), []
        for pending in entries:
            self._send(pending)

    def _send(self, pending: dict[str, Any]) -> None:
        """One committed change to every listener of this process."""
        with self._lock:
            listeners = list(self._listeners)
            entry = {"id": next(self._ids), **pending}
        for loop, queue in listeners:
            try:
                loop.call_soon_threadsafe(_offer, queue, entry)
            except RuntimeError:  # its loop has closed: the listener is gone
                with self._lock:
                    self._listeners.discard((loop, queue))

    async def listen(self, limit: int | None, keepalive_s: float = 15.0) -> AsyncIterator[str]:
        """Server-sent events, one per committed change, until ``limit`` or disconnect."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        listener = (asyncio.get_running_loop(), queue)
        with self._lock:
            self._listeners.add(listener)
        try:
            yield ": listening for light changes\n\n"
            sent = 0
            while limit is None or sent < limit:
                try:
                    entry = await asyncio.wait_for(queue.get(), keepalive_s)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                data = json.dumps(entry, separators=(",", ":"))
                yield f"id: {entry['id']}\nevent: {entry['type']}\ndata: {data}\n\n"
                sent += 1
        finally:
            with self._lock:
                self._listeners.discard(listener)


def _offer(queue: asyncio.Queue[dict[str, Any]], entry: dict[str, Any]) -> None:
    if queue.full():  # a listener that does not read loses its oldest entries
        queue.get_nowait()
    queue.put_nowait(entry)


class _Listener(threading.Thread):
    """This process's LISTEN connection to the feed's channel; reconnects on its own."""

    def __init__(self, engine: Engine, deliver: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(name="lightcontrol-feed", daemon=True)
        # What SQLAlchemy gives psycopg for the engine's own connections.
        self._args, self._params = engine.dialect.create_connect_args(engine.url)
        self._where = engine.url.render_as_string(hide_password=True)
        self._deliver = deliver
        self._stopping = threading.Event()
        self.listening = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=LISTEN_WAIT_S)

    def run(self) -> None:
        import psycopg  # noqa: PLC0415 (only PostgreSQL needs it)

        pause, failed = 0.25, False
        while not self._stopping.is_set():
            try:
                with psycopg.connect(*self._args, **self._params, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    if failed:
                        log.warning("the change feed listens again (%s).", self._where)
                    pause, failed = 0.25, False
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._deliver(json.loads(note.payload))
            except psycopg.Error as exc:
                self.listening.clear()
                if not failed:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    log.error(
                        "the change feed lost its database connection (%s: %s); it connects "
                        "again once the database is back.",
                        self._where,
                        first,
                    )
                failed = True
                self._stopping.wait(pause)
                pause = min(pause * 2, _RECONNECT_MAX_S)
