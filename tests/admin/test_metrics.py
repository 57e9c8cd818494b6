"""``GET /metrics``: the plug-ins' counters in the Prometheus text format, behind the
admin token."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient

from hostwire import PluginError
from hostwire._admin import AdminEntry
from hostwire._runtime import Plugin

TOKEN = "metrics-admin-token"


class Host:
    """The little of a host the admin routes need: a token and some plug-ins."""

    def __init__(self, plugins: list[Plugin], token: str | None = TOKEN) -> None:
        self.admin_token = token
        self.outbox = None
        self._plugins = plugins

    def loaded_plugins(self) -> Iterable[Plugin]:
        return self._plugins

    def plugin_states(self) -> list[dict[str, Any]]:
        return []

    # The rest of AdminHost: nothing these tests reach.
    console_pages: tuple[Any, ...] = ()

    def plugin_state(self, name: str) -> dict[str, Any] | None:
        return None

    def replace_plugin(self, name: str, module: bytes, *, sha256: str | None = None) -> None:
        raise NotImplementedError

    def set_enabled(self, name: str, enabled: bool) -> None:
        raise NotImplementedError

    def reload_config(self) -> None:
        raise NotImplementedError


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await PlainTextResponse("the app's own", status_code=404)(scope, receive, send)


@pytest.fixture
def client(hostile: Plugin) -> Iterator[TestClient]:
    with TestClient(AdminEntry(app, Host([hostile]))) as test_client:
        yield test_client


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str):
    return samples[name, tuple(sorted(labels.items()))]


def test_calls_failures_and_latency_show_exact_counts(hostile: Plugin, client: TestClient) -> None:
    for _ in range(3):
        assert hostile.call("echo", b"hi") == b"hi"
    for export in ("infinite_loop", "unreachable_trap", "memory_grow_bomb", "fail"):
        with pytest.raises(PluginError):
            hostile.call(export)
    with pytest.raises(PluginError):
        hostile.call("echo", b"x" * (hostile.limits.max_input_bytes + 1))
    with pytest.raises(PluginError):
        hostile.call("no_such_export")

    samples = scrape(client)
    assert value(samples, "hostwire_plugins_loaded") == 1
    calls = "hostwire_plugin_calls_total"
    assert value(samples, calls, plugin="hostile", export="echo") == 4
    assert value(samples, calls, plugin="hostile", export="infinite_loop") == 1
    assert value(samples, calls, plugin="hostile", export="no_such_export") == 1
    failures = "hostwire_plugin_failures_total"
    expected = {
        ("infinite_loop", "timeout"): 1,
        ("unreachable_trap", "trap"): 1,
        ("memory_grow_bomb", "memory"): 1,
        ("fail", "error"): 1,
        ("echo", "rejected"): 1,
        ("no_such_export", "rejected"): 1,
        ("echo", "timeout"): 0,
    }
    for (export, kind), count in expected.items():
        assert value(samples, failures, plugin="hostile", export=export, kind=kind) == count
    duration = "hostwire_plugin_call_duration_seconds"
    assert value(samples, duration + "_count", plugin="hostile", export="echo") == 3
    assert value(samples, duration + "_bucket", plugin="hostile", export="echo", le="+Inf") == 3
    assert 0 < value(samples, duration + "_sum", plugin="hostile", export="echo") < 1
    # The timeout ran for about its 250 ms limit.
    assert value(samples, duration + "_sum", plugin="hostile", export="infinite_loop") >= 0.2

    reasons = {f["export"]: f["reason"] for f in hostile.stats.snapshot()["recent_failures"]}
    assert "timed out after 250 ms" in reasons["infinite_loop"]
    assert "\n" not in "".join(reasons.values())


def test_host_calls_and_hook_decisions_are_exported(hostile: Plugin, client: TestClient) -> None:
    hostile.stats.host_call("getStates", 200)
    hostile.stats.host_call("getStates", 200)
    hostile.stats.host_call("setLightColor", 403)
    hostile.stats.hook("short_circuit")
    samples = scrape(client)
    host_calls = "hostwire_host_calls_total"
    ops = {"plugin": "hostile"}
    assert value(samples, host_calls, **ops, operation="getStates", status="200") == 2
    assert value(samples, host_calls, **ops, operation="setLightColor", status="403") == 1
    decisions = "hostwire_hook_decisions_total"
    assert value(samples, decisions, plugin="hostile", decision="short_circuit") == 1
    assert value(samples, decisions, plugin="hostile", decision="pass") == 0


def test_stats_false_records_nothing(hostile_wasm: bytes) -> None:
    from conftest import echo_host_function

    with Plugin(
        "quiet", hostile_wasm, host_functions=[echo_host_function()], stats=False
    ) as plugin:
        plugin.call("echo", b"hi")
        assert plugin.stats.snapshot()["calls"] == 0


def test_without_the_token_401_and_without_a_configured_token_the_apps(
    hostile: Plugin, client: TestClient
) -> None:
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    with TestClient(AdminEntry(app, Host([hostile], token=None))) as open_client:
        answer = open_client.get("/metrics")
    assert answer.status_code == 404
    assert answer.text == "the app's own"
