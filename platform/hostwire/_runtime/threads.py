"""Blocking plug-in calls on threads of AnyIO's default pool.

Starlette and FastAPI run ``def`` routes (and sync dependencies) in AnyIO's
default thread pool, 40 threads by default. A plug-in called from such a
route blocks its thread; when the plug-in calls the same app in process and
the inner route is ``def`` too, the inner route needs a thread of the same
pool. With 40 such requests in flight, every pool thread waits for a pool
thread: nothing moves until the calls time out.

``run_blocking`` runs a blocking call on the current thread and, when that
thread is an AnyIO worker thread, lends the default pool one more thread for
as long as the call lasts: a thread that waits for a plug-in holds no slot.
The pool still bounds the threads that do work; the threads that wait are
bounded by the requests in flight (and by each plug-in's ``max_instances``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio import CapacityLimiter

T = TypeVar("T")

_lent = threading.local()  # .limiter: the pool this thread lent a slot to, while it waits


def run_blocking(fn: Callable[..., T], *args: object) -> T:
    """Call blocking ``fn(*args)`` here; meanwhile this thread holds no slot of AnyIO's
    default thread pool (the pool gets one more token until ``fn`` returns).

    Use it for every plug-in call made from app code that may run on a worker
    thread (a ``def`` route, ``run_in_threadpool``). Off AnyIO's worker
    threads it just calls ``fn``. Nested calls on one thread lend one slot.
    """
    if getattr(_lent, "limiter", None) is not None:
        return fn(*args)
    limiter = _lend()
    if limiter is None:
        return fn(*args)
    _lent.limiter = limiter
    try:
        return fn(*args)
    finally:
        _lent.limiter = None
        _give_back(limiter)


def _lend() -> CapacityLimiter | None:
    try:
        return anyio.from_thread.run_sync(_grow)
    except (anyio.NoEventLoopError, anyio.RunFinishedError):
        return None  # not an AnyIO worker thread, or its loop is gone: nothing to lend


def _give_back(limiter: CapacityLimiter) -> None:
    # If the loop has ended, its pool went with it: nothing to give back.
    with contextlib.suppress(anyio.NoEventLoopError, anyio.RunFinishedError):
        anyio.from_thread.run_sync(_shrink, limiter)


def _grow() -> CapacityLimiter:
    limiter = anyio.to_thread.current_default_thread_limiter()
    limiter.total_tokens += 1
    return limiter


def _shrink(limiter: CapacityLimiter) -> None:
    # The app may have lowered the pool meanwhile; never down to no thread at all.
    limiter.total_tokens = max(limiter.total_tokens - 1, 1)
