"""Worker threads and the chain of nested plug-in calls.

A plug-in call blocks, so async code runs it in a worker thread. When that
plug-in calls the app in process, the app may itself need a worker thread
(and may run another plug-in, which calls the app again...). If every level
shared one thread pool, a burst of outer calls could hold every thread while
waiting for inner ones: a deadlock. ``to_thread`` gives each nesting depth
its own capacity limiter, so inner calls never wait for outer ones.

A request that ``AsgiTarget`` runs on the plug-in's own thread (operations
the app lets run there: ``caller_thread``) is already off the app's event
loop, on a thread that may block: there ``to_thread`` just calls ``fn``
(``ON_CALLER_THREAD``).

``CHAIN`` holds the nested calls that led here (``plugin.export → operation``);
it travels through worker threads and in-process requests as a context
variable, and bounds how deep re-entrant calls may go.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar

T = TypeVar("T")

CHAIN: ContextVar[tuple[str, ...]] = ContextVar("hostwire_chain", default=())
# True in a request that runs on the calling plug-in's thread, in a loop of its own.
ON_CALLER_THREAD: ContextVar[bool] = ContextVar("hostwire_on_caller_thread", default=False)
THREADS_PER_DEPTH = 40
_LIMITERS: RunVar[dict[int, CapacityLimiter]] = RunVar("hostwire_limiters")


def _limiter(depth: int) -> CapacityLimiter:
    try:
        limiters = _LIMITERS.get()
    except LookupError:
        limiters = {}
        _LIMITERS.set(limiters)
    if depth not in limiters:
        limiters[depth] = CapacityLimiter(THREADS_PER_DEPTH)
    return limiters[depth]


async def to_thread(fn: Callable[..., T], *args: object) -> T:
    """Run blocking ``fn`` in a worker thread from the pool of the current nesting depth.

    Apps that host plug-ins use this instead of ``anyio.to_thread.run_sync``
    for work that may run plug-ins, so re-entrant calls cannot exhaust the pool.
    In a request running on a plug-in's own thread it calls ``fn`` there: that
    thread serves only this request, and one more hop would only cost time.
    """
    if ON_CALLER_THREAD.get():
        return fn(*args)
    return await anyio.to_thread.run_sync(fn, *args, limiter=_limiter(len(CHAIN.get())))


def describe(chain: tuple[str, ...]) -> str:
    return " → ".join(chain) if chain else "(top level)"
