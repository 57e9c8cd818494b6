"""A live feed of committed light changes, for ``GET /events/stream`` (SSE).

An observer collects the after-steps of a change in the writing thread; when
the write commits they are published to every listener's queue on its event
loop; when it rolls back they are dropped, so listeners only see what happened.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from lightcontrol.store import Change, LightStore

# The last after-step of each action: one feed entry per change.
FINAL_STEPS = {"create": "after_create", "update": "after_update", "destroy": "after_destroy"}
QUEUE_SIZE = 1000


class ChangeFeed:
    def __init__(self) -> None:
        self._pending = threading.local()
        self._listeners: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = (
            set()
        )
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    @property
    def listening(self) -> int:
        """How many streams are open."""
        with self._lock:
            return len(self._listeners)

    def attach(self, store: LightStore) -> None:
        store.observers.append(self._observe)
        store.after_commit.append(self._publish)
        store.after_rollback.append(self._drop)

    def detach(self, store: LightStore) -> None:
        store.observers.remove(self._observe)
        store.after_commit.remove(self._publish)
        store.after_rollback.remove(self._drop)

    def _observe(self, change: Change) -> None:
        if FINAL_STEPS.get(change.action) == change.step:
            entry = {
                "type": f"{change.model}.{change.step}",
                "record": change.record,
                "changes": change.changes,
            }
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
        if not entries:
            return
        with self._lock:
            listeners = list(self._listeners)
        for pending in entries:
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
