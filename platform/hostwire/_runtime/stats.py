"""Counters of one plug-in's calls: what ``/metrics`` and the console show.

Each ``Plugin`` owns a ``PluginStats`` (``plugin.stats``); a reloaded plug-in is
handed its predecessor's, so counters carry on across versions. Recording a
good call is plain Python arithmetic on a preallocated list (no locks, no
allocation beyond the numbers themselves): ``Plugin.call`` resolves an
export's ``ExportStats`` once, at load, and adds the call's latency to its
``slots`` inline. Concurrent calls may, rarely, lose an increment to a thread
switch between a read and a write: counters are for operators, and a lock
would cost more than the whole recording. ``snapshot()`` turns the counters
into JSON-able data, and ``hostwire._admin`` exports them for Prometheus.

Failure kinds: ``timeout``, ``trap``, ``memory``, ``output``,
``host_function``, ``rejected`` (input refused before the call) and ``error``
(the export reported one itself). Hook decisions: ``pass``, ``rewrite``,
``short_circuit``.
"""

from __future__ import annotations

import bisect
import time
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
# The bucket of a latency in seconds: ``slots[bucket_of(LATENCY_BUCKETS_S, s)]``.
bucket_of = bisect.bisect_left


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

    ``slots`` holds the histogram's buckets (``BUCKETS`` of them, the last one
    +Inf) and, at ``SUM``, the sum of the latencies in seconds: the one list a
    call writes to. A call refused before it ran (``rejected``) has no latency:
    it counts in ``calls`` and ``failures`` but not in the histogram.
    """

    __slots__ = ("failures", "slots")

    def __init__(self) -> None:
        self.slots: list[float] = [0] * BUCKETS + [0.0]
        self.failures: dict[str, int] = dict.fromkeys(FAILURE_KINDS, 0)

    @property
    def buckets(self) -> list[int]:
        """Calls per latency bucket (not cumulative), the last one +Inf."""
        return [int(n) for n in self.slots[:BUCKETS]]

    @property
    def sum_s(self) -> float:
        return float(self.slots[SUM])

    @property
    def timed(self) -> int:
        """Calls that ran (the histogram's count)."""
        return int(sum(self.slots[:BUCKETS]))

    @property
    def calls(self) -> int:
        return self.timed + self.failures["rejected"]

    def record(self, seconds: float) -> None:
        """Count one call that ran for ``seconds`` (``Plugin.call`` inlines this)."""
        slots = self.slots
        slots[SUM] += seconds
        slots[bucket_of(LATENCY_BUCKETS_S, seconds)] += 1

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
