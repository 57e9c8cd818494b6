"""Counters of one plug-in's calls: what ``/metrics`` and the console show.

Each ``Plugin`` owns a ``PluginStats`` (``plugin.stats``); a reloaded plug-in is
handed its predecessor's, so counters carry on across versions. Recording is
plain Python arithmetic on preallocated slots (no locks, no allocation on
the common path): it runs on every call. ``snapshot()`` turns the counters
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
from dataclasses import dataclass
from typing import Any

FAILURE_KINDS = ("timeout", "trap", "memory", "output", "host_function", "rejected", "error")
HOOK_DECISIONS = ("pass", "rewrite", "short_circuit")
# Upper bounds in seconds (Prometheus ``le``); calls span microseconds to seconds.
LATENCY_BUCKETS_S = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
)  # fmt: skip
RECENT_FAILURES = 50


@dataclass(frozen=True)
class Failure:
    """One failed call, for the console's list of recent failures."""

    at: float  # Unix time
    plugin: str
    export: str
    kind: str
    reason: str  # one line


class ExportStats:
    """Calls of one export: count, failures by kind, latency histogram."""

    __slots__ = ("buckets", "calls", "failures", "sum_s")

    def __init__(self) -> None:
        self.calls = 0
        self.failures: dict[str, int] = dict.fromkeys(FAILURE_KINDS, 0)
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # the last one is +Inf
        self.sum_s = 0.0

    def quantile(self, q: float) -> float | None:
        """An upper bound of the ``q`` quantile of latency, in seconds (None: no calls)."""
        total = sum(self.buckets)
        if total == 0:
            return None
        wanted, seen = q * total, 0
        for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), self.buckets, strict=True):
            seen += count
            if seen >= wanted:
                return bound
        return float("inf")


class PluginStats:
    """The counters of one plug-in (all its versions)."""

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin
        self.exports: dict[str, ExportStats] = {}
        self.host_calls: dict[tuple[str, int], int] = {}  # (operationId, status) -> calls
        self.hooks: dict[str, int] = dict.fromkeys(HOOK_DECISIONS, 0)
        self.recent: deque[Failure] = deque(maxlen=RECENT_FAILURES)

    def export(self, name: str) -> ExportStats:
        found = self.exports.get(name)
        if found is None:
            found = self.exports.setdefault(name, ExportStats())
        return found

    def call(self, export: str, seconds: float, kind: str | None = None, reason: str = "") -> None:
        """Count one call of ``export`` that took ``seconds``; ``kind`` if it failed."""
        stats = self.export(export)
        stats.calls += 1
        stats.sum_s += seconds
        stats.buckets[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        if kind is not None:
            stats.failures[kind] = stats.failures.get(kind, 0) + 1
            self.recent.append(Failure(time.time(), self.plugin, export, kind, reason))

    def host_call(self, operation: str, status: int) -> None:
        key = (operation, status)
        self.host_calls[key] = self.host_calls.get(key, 0) + 1

    def hook(self, decision: str) -> None:
        self.hooks[decision] = self.hooks.get(decision, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-able data (latencies in milliseconds)."""
        exports = {}
        for name, stats in sorted(self.exports.items()):
            p50, p99 = stats.quantile(0.5), stats.quantile(0.99)
            exports[name] = {
                "calls": stats.calls,
                "failures": {k: n for k, n in stats.failures.items() if n},
                "mean_ms": stats.sum_s / stats.calls * 1000 if stats.calls else None,
                "p50_ms": p50 * 1000 if p50 is not None else None,
                "p99_ms": p99 * 1000 if p99 is not None else None,
            }
        return {
            "calls": sum(s.calls for s in self.exports.values()),
            "failures": sum(sum(s.failures.values()) for s in self.exports.values()),
            "exports": exports,
            "host_calls": [
                {"operation": op, "status": status, "calls": n}
                for (op, status), n in sorted(self.host_calls.items())
            ],
            "hooks": dict(self.hooks),
            "recent_failures": [f.__dict__ for f in reversed(self.recent)],
        }
