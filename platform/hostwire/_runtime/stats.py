"""Counters of one plug-in's calls: what ``/metrics`` and the console show.

Each ``Plugin`` owns a ``PluginStats`` (``plugin.stats``); a reloaded plug-in is
handed its predecessor's, so counters carry on across versions. Recording a
good call is one clock reading and one ``list.append`` (no lock, no branch):
``Plugin.call`` resolves an export's ``ExportStats`` once, at load, and appends
the call's latency to its ``pending`` list inline. The histogram is built from
those latencies when someone reads it and, every ``FOLD_EVERY_S``, by one
thread for every plug-in (a sort and a bisect per bucket, in bulk), so the
call itself never buckets. Failure counters are plain dict arithmetic on the
failure path: concurrent failures may, rarely, lose an increment to a thread
switch. ``snapshot()`` turns the counters into JSON-able data, and
``hostwire._admin`` exports them for Prometheus.

Failure kinds: ``timeout``, ``trap``, ``memory``, ``output``,
``host_function``, ``rejected`` (input refused before the call) and ``error``
(the export reported one itself). Hook decisions: ``pass``, ``rewrite``,
``short_circuit``.
"""

from __future__ import annotations

import bisect
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hostwire._errors import (
    HostFunctionError,
    PluginBusyError,
    PluginCallError,
    PluginError,
    PluginExportError,
    PluginInputError,
    PluginMemoryError,
    PluginOutputError,
    PluginTimeoutError,
    PluginTrapError,
)
from hostwire._text import one_line

FAILURE_KINDS = ("timeout", "trap", "memory", "output", "host_function", "rejected", "error")
HOOK_DECISIONS = ("pass", "rewrite", "short_circuit")
# Upper bounds in seconds (Prometheus ``le``); calls span microseconds to seconds.
LATENCY_BUCKETS_S = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
)  # fmt: skip
RECENT_FAILURES = 50
# ExportStats.slots: the latency buckets (the last one is +Inf), then the sum of seconds.
BUCKETS = len(LATENCY_BUCKETS_S) + 1
SUM = BUCKETS
# Most specific first: HostCallLimitError is a HostFunctionError, and so on.
_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (PluginTimeoutError, "timeout"),
    (PluginMemoryError, "memory"),
    (PluginTrapError, "trap"),
    (PluginOutputError, "output"),
    (HostFunctionError, "host_function"),
    (PluginInputError, "rejected"),
    (PluginExportError, "rejected"),
    (PluginBusyError, "rejected"),
    (PluginCallError, "error"),
)
# How often the folder thread counts pending latencies into the histograms, and
# how many it sorts at once.
FOLD_EVERY_S = 0.2
_FOLD_CHUNK = 1024


def failure_kind(exc: BaseException) -> str:
    """The failure kind of an exception a plug-in call raised."""
    for cls, kind in _KINDS:
        if isinstance(exc, cls):
            return kind
    return "error"


@dataclass(frozen=True)
class Failure:
    """One failed call, for the console's list of recent failures."""

    at: float  # Unix time
    plugin: str
    export: str
    kind: str
    reason: str  # one line


class ExportStats:
    """Calls of one export: count, failures by kind, latency histogram.

    A call appends its latency in seconds to ``pending`` (``Plugin.call`` does
    it inline: one ``list.append``, atomic under the GIL, so no call is lost to
    a thread switch, and no check of the list's length). ``fold()`` moves what
    is pending into ``slots``: the histogram's buckets (``BUCKETS`` of them, the
    last one +Inf) and, at ``SUM``, the sum of the latencies, in one sort and a
    bisect per bucket. Every reader folds first, and a thread folds every
    export's latencies each ``FOLD_EVERY_S`` so that memory stays bounded
    without a scrape. A call refused before it ran (``rejected``) has no
    latency: it counts in ``calls`` and ``failures`` but not in the histogram.
    """

    __slots__ = ("__weakref__", "_lock", "failures", "pending", "slots")

    def __init__(self) -> None:
        self.slots: list[float] = [0] * BUCKETS + [0.0]
        self.pending: list[float] = []
        self.failures: dict[str, int] = dict.fromkeys(FAILURE_KINDS, 0)
        self._lock = threading.Lock()
        _FOLDER.watch(self)

    def fold(self) -> None:
        """Count the pending latencies into the buckets and the sum."""
        pending = self.pending
        if not pending:
            return
        with self._lock:  # two folds must not both count the same latencies
            taken = pending[:]  # one atomic copy: appends after it stay pending
            del pending[: len(taken)]
            slots = self.slots
            for at in range(0, len(taken), _FOLD_CHUNK):  # the GIL may switch between chunks
                chunk = sorted(taken[at : at + _FOLD_CHUNK])
                slots[SUM] += math.fsum(chunk)
                below = 0
                for i, bound in enumerate(LATENCY_BUCKETS_S):
                    upto = bisect.bisect_right(chunk, bound, below)  # le: at or under
                    slots[i] += upto - below
                    below = upto
                slots[BUCKETS - 1] += len(chunk) - below

    @property
    def buckets(self) -> list[int]:
        """Calls per latency bucket (not cumulative), the last one +Inf."""
        self.fold()
        return [int(n) for n in self.slots[:BUCKETS]]

    @property
    def sum_s(self) -> float:
        self.fold()
        return float(self.slots[SUM])

    @property
    def timed(self) -> int:
        """Calls that ran (the histogram's count)."""
        self.fold()
        return int(sum(self.slots[:BUCKETS]))

    @property
    def calls(self) -> int:
        return self.timed + self.failures["rejected"]

    def record(self, seconds: float) -> None:
        """Count one call that ran for ``seconds`` (``Plugin.call`` inlines this)."""
        self.pending.append(seconds)

    def cumulative(self) -> Iterator[tuple[float, int]]:
        """(upper bound, calls at or under it) per bucket, ending with +Inf: Prometheus's."""
        seen = 0
        for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), self.buckets, strict=True):
            seen += count
            yield bound, seen

    def quantile(self, q: float) -> float | None:
        """An upper bound of the ``q`` quantile of latency, in seconds (None: no calls)."""
        total = self.timed
        if total == 0:
            return None
        wanted = q * total
        for bound, seen in self.cumulative():
            if seen >= wanted:
                return bound
        return float("inf")


class _Folder:
    """The one thread that folds every live export's pending latencies, started with
    the first ``ExportStats`` (and again in a forked child, which has no threads)."""

    def __init__(self) -> None:
        self._watched: weakref.WeakSet[ExportStats] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, stats: ExportStats) -> None:
        with self._lock:
            self._watched.add(stats)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="hostwire-stats", daemon=True
                )
                self._thread.start()

    def fold_all(self) -> None:
        with self._lock:
            watched = list(self._watched)
        for stats in watched:
            stats.fold()

    def _run(self) -> None:
        tick = threading.Event()  # never set: a wait that cannot be woken early
        while True:
            tick.wait(FOLD_EVERY_S)
            self.fold_all()

    def forked(self) -> None:
        self._lock = threading.Lock()
        self._thread = None
        if self._watched:
            with self._lock:
                self._thread = threading.Thread(
                    target=self._run, name="hostwire-stats", daemon=True
                )
                self._thread.start()


_FOLDER = _Folder()
os.register_at_fork(after_in_child=_FOLDER.forked)


class PluginStats:
    """The counters of one plug-in (all its versions)."""

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin
        self.exports: dict[str, ExportStats] = {}
        # operationId -> status -> calls: a host call allocates no key.
        self.host_call_counts: dict[str, dict[int, int]] = {}
        self.hooks: dict[str, int] = dict.fromkeys(HOOK_DECISIONS, 0)
        self.recent: deque[Failure] = deque(maxlen=RECENT_FAILURES)

    def export(self, name: str) -> ExportStats:
        found = self.exports.get(name)
        if found is None:
            found = self.exports.setdefault(name, ExportStats())
        return found

    def call(self, export: str, seconds: float, kind: str | None = None, reason: str = "") -> None:
        """Count one call of ``export`` that took ``seconds``; ``kind`` if it failed."""
        self.export(export).record(seconds)
        if kind is not None:
            self.failure(export, kind, reason)

    def failure(self, export: str, kind: str, reason: str) -> None:
        """Count a failure of ``export`` (its call is counted apart, unless ``rejected``)."""
        failures = self.export(export).failures
        failures[kind] = failures.get(kind, 0) + 1
        self.recent.append(Failure(time.time(), self.plugin, export, kind, reason))

    def failed(self, export: str, exc: BaseException, seconds: float | None) -> None:
        """Count a call that raised ``exc`` after ``seconds`` (None: refused before it
        ran, so ``rejected`` whatever the exception)."""
        if seconds is None:
            kind = "rejected"
        else:
            kind = failure_kind(exc)
            self.export(export).record(seconds)
        self.failure(export, kind, _reason(exc))

    def host_call(self, operation: str, status: int) -> None:
        by_status = self.host_call_counts.get(operation)
        if by_status is None:
            by_status = self.host_call_counts.setdefault(operation, {})
        by_status[status] = by_status.get(status, 0) + 1

    @property
    def host_calls(self) -> dict[tuple[str, int], int]:
        """(operationId, status) -> calls."""
        return {
            (op, status): n
            for op, by_status in list(self.host_call_counts.items())
            for status, n in list(by_status.items())
        }

    def hook(self, decision: str) -> None:
        self.hooks[decision] = self.hooks.get(decision, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-able data (latencies in milliseconds)."""
        exports = {}
        calls = failures = 0
        for name, stats in sorted(self.exports.items()):
            p50, p99 = stats.quantile(0.5), stats.quantile(0.99)
            timed, count = stats.timed, stats.calls
            failed = {k: n for k, n in stats.failures.items() if n}
            calls += count
            failures += sum(failed.values())
            exports[name] = {
                "calls": count,
                "failures": failed,
                "mean_ms": stats.sum_s / timed * 1000 if timed else None,
                "p50_ms": p50 * 1000 if p50 is not None else None,
                "p99_ms": p99 * 1000 if p99 is not None else None,
            }
        return {
            "calls": calls,
            "failures": failures,
            "exports": exports,
            "host_calls": [
                {"operation": op, "status": status, "calls": n}
                for (op, status), n in sorted(self.host_calls.items())
            ],
            "hooks": dict(self.hooks),
            "recent_failures": [f.__dict__ for f in reversed(self.recent)],
        }


def _reason(exc: BaseException) -> str:
    """The exception's message as one line (its type's name when it has none)."""
    text = one_line(str(exc)) if str(exc).strip() else ""
    if isinstance(exc, PluginError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
