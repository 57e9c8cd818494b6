"""``GET /metrics``: the plug-ins' counters in the Prometheus text format.

A collector of its own per host (never prometheus-client's global registry)
reads ``PluginStats`` and the outbox at scrape time: nothing is copied on the
plug-ins' call path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hostwire._admin.host import AdminHost
from hostwire._errors import HostwireError

log = logging.getLogger("hostwire.admin")


class HostCollector(Collector):
    """The metric families of one host's loaded plug-ins and outbox."""

    def __init__(self, host: AdminHost) -> None:
        self.host = host

    def collect(self) -> Iterator[Metric]:
        plugins = list(self.host.loaded_plugins())
        loaded = GaugeMetricFamily("hostwire_plugins_loaded", "Plug-ins serving now.")
        loaded.add_metric([], len(plugins))
        yield loaded
        calls = CounterMetricFamily(
            "hostwire_plugin_calls", "Calls of a plug-in's export.", labels=["plugin", "export"]
        )
        failures = CounterMetricFamily(
            "hostwire_plugin_failures",
            "Failed calls of a plug-in's export, by kind.",
            labels=["plugin", "export", "kind"],
        )
        duration = HistogramMetricFamily(
            "hostwire_plugin_call_duration_seconds",
            "How long a plug-in's export ran.",
            labels=["plugin", "export"],
        )
        host_calls = CounterMetricFamily(
            "hostwire_host_calls",
            "Host-function calls of a plug-in, by operation and the status it was answered.",
            labels=["plugin", "operation", "status"],
        )
        hooks = CounterMetricFamily(
            "hostwire_hook_decisions",
            "What a plug-in's HTTP hooks decided: pass, rewrite or short_circuit.",
            labels=["plugin", "decision"],
        )
        for plugin in plugins:
            stats = plugin.stats
            for export, counters in sorted(stats.exports.items()):
                calls.add_metric([plugin.name, export], counters.calls)
                for kind, count in counters.failures.items():
                    failures.add_metric([plugin.name, export, kind], count)
                buckets = [(_bound(bound), float(seen)) for bound, seen in counters.cumulative()]
                duration.add_metric([plugin.name, export], buckets, counters.sum_s)
            for (operation, status), count in sorted(stats.host_calls.items()):
                host_calls.add_metric([plugin.name, operation, str(status)], count)
            for decision, count in stats.hooks.items():
                hooks.add_metric([plugin.name, decision], count)
        yield from (calls, failures, duration, host_calls, hooks)
        yield from self._outbox([p.name for p in plugins])

    def _outbox(self, names: list[str]) -> Iterator[Metric]:
        outbox = self.host.outbox
        if outbox is None:
            return
        pending = GaugeMetricFamily(
            "hostwire_outbox_pending_deliveries",
            "Event deliveries waiting for a plug-in.",
            labels=["plugin"],
        )
        oldest = GaugeMetricFamily(
            "hostwire_outbox_oldest_pending_age_seconds",
            "Age of a plug-in's oldest pending event delivery (0: none pending).",
            labels=["plugin"],
        )
        dead = GaugeMetricFamily(
            "hostwire_outbox_dead_letters",
            "Event deliveries that gave up for a plug-in (replay brings them back).",
            labels=["plugin"],
        )
        try:
            summary = {entry["plugin"]: entry for entry in outbox.recent_summary()}
        except HostwireError as exc:  # the database is away: the rest still answers
            log.warning("metrics: the outbox could not be read: %s", exc)
            return
        for name in sorted(set(names) | set(summary)):
            entry = summary.get(name, {})
            pending.add_metric([name], entry.get("pending", 0))
            oldest.add_metric([name], entry.get("oldest_pending_age_s", 0.0))
            dead.add_metric([name], entry.get("dead", 0))
        yield from (pending, oldest, dead)


def _bound(seconds: float) -> str:
    return "+Inf" if seconds == float("inf") else repr(seconds)


def registry(host: AdminHost) -> CollectorRegistry:
    """A registry of the host's metrics alone (not prometheus-client's global one)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(HostCollector(host))
    return found


def routes(hostwire: AdminHost) -> list[BaseRoute]:
    metrics = registry(hostwire)

    async def scrape(request: Request) -> Response:
        # The outbox's query blocks: off the event loop.
        body = await run_in_threadpool(generate_latest, metrics)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", scrape, methods=["GET"])]
