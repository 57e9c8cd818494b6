"""lightcontrol's lifecycle events with the sample plug-ins night_mode and follow."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import wat
from conftest import ROOT, compile_wat
from hostwire import EventBus, HostFunction, Outbox, Plugin, Subscriber, parse_config
from lightcontrol.app import Settings, create_app
from lightcontrol.events import LightEvents
from lightcontrol.store import Change, LightStore
from openapi_check import SpecChecker

TOKEN = "events-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NIGHT_MODE = str(ROOT / "sample_plugins/night_mode/build/plugin.wasm")
FOLLOW = str(ROOT / "sample_plugins/follow/build/plugin.wasm")
FAST_EVENTS = {"max_attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05, "poll_s": 0.05}


def hhmm(delta_minutes: int) -> str:
    return (datetime.now(UTC) + timedelta(minutes=delta_minutes)).strftime("%H:%M")


QUIET_NOW = {"quiet_from": hhmm(-60), "quiet_to": hhmm(60)}
QUIET_LATER = {"quiet_from": hhmm(120), "quiet_to": hhmm(180)}


@contextmanager
def lightcontrol(
    tmp_path: Path, plugins: list[dict[str, Any]], **events: Any
) -> Iterator[TestClient]:
    config = parse_config(
        {"openapi": str(ROOT / "openapi/light.yaml"), "plugins": plugins, "events": events},
        path=tmp_path / "plugins.yaml",
    )
    settings = Settings(db_path=str(tmp_path / "lights.db"), token=TOKEN)
    with TestClient(create_app(settings, plugins=config), headers=AUTH) as client:
        client.event_hooks = {"request": [], "response": [SpecChecker()]}
        yield client


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)  # polling a condition, not timing anything


def turn_on_white(client: TestClient) -> Any:
    return client.patch("/lights/default", json={"status": "on", "color": "white"})


# -- before-events ------------------------------------------------------------------


def test_night_mode_rejects_white_light_and_nothing_is_written(tmp_path: Path) -> None:
    plugin = {"name": "night-mode", "path": NIGHT_MODE, "config": QUIET_NOW}
    with lightcontrol(tmp_path, [plugin]) as client:
        before = client.get("/lights/default").json()
        response = turn_on_white(client)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "rejected"
        assert error["plugin"] == "night-mode"
        assert error["message"].startswith('Plug-in "night-mode" rejected the change: night mode:')
        assert client.get("/lights/default").json() == before
        # The original routes go through the same model path: the default light
        # is white, so turning it on is refused until it has another colour.
        assert client.post("/light_control", json={"action": "TurnOn"}).status_code == 422
        assert client.post("/light_color", json={"action": "ToBlue"}).status_code == 200
        assert client.post("/light_control", json={"action": "TurnOn"}).status_code == 200
        assert client.post("/light_color", json={"action": "ToWhite"}).status_code == 422


def test_night_mode_lets_white_light_through_outside_quiet_hours(tmp_path: Path) -> None:
    plugin = {"name": "night-mode", "path": NIGHT_MODE, "config": QUIET_LATER}
    with lightcontrol(tmp_path, [plugin]) as client:
        assert turn_on_white(client).json()["color"] == "white"


def test_night_mode_can_rewrite_the_record_instead(tmp_path: Path) -> None:
    plugin = {"name": "night-mode", "path": NIGHT_MODE, "config": {**QUIET_NOW, "mode": "red"}}
    with lightcontrol(tmp_path, [plugin]) as client:
        response = turn_on_white(client)
        assert response.status_code == 200
        assert response.json()["color"] == "red"
        assert client.get("/states").json() == {"status": "on", "color": "red"}


@pytest.fixture
def trapping_plugin(tmp_path: Path) -> str:
    path = tmp_path / "trap.wasm"
    path.write_bytes(compile_wat(wat.event_handler("light_before_save")))
    return str(path)


@pytest.mark.parametrize(("on_error", "status"), [("fail_closed", 502), ("fail_open", 200)])
def test_a_failing_before_handler_follows_its_policy(
    tmp_path: Path, trapping_plugin: str, on_error: str, status: int
) -> None:
    # event_handler's exports call host function "note": lightcontrol has none, so
    # give the plug-in an OpenAPI document that declares it.
    spec = tmp_path / "note.yaml"
    spec.write_text(
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /note:\n    post:\n"
        "      operationId: note\n      responses: {'200': {description: ok}}\n"
    )
    config = parse_config(
        {
            "openapi": str(spec),
            "plugins": [
                {
                    "name": "crashy",
                    "path": trapping_plugin,
                    "config": {"trap": "yes"},
                    "on_error": on_error,
                    "grants": ["note"],
                }
            ],
        },
        path=tmp_path / "plugins.yaml",
    )
    settings = Settings(db_path=str(tmp_path / "lights.db"), token=TOKEN)
    with TestClient(create_app(settings, plugins=config), headers=AUTH) as client:
        response = client.patch("/lights/default", json={"brightness": 7})
        assert response.status_code == status
        brightness = client.get("/lights/default").json()["brightness"]
    if status == 502:
        error = response.json()["error"]
        assert (error["code"], error["plugin"]) == ("plugin_failed", "crashy")
        assert "trapped" in error["message"]
        assert brightness == 100
    else:
        assert brightness == 7


# -- after-events -------------------------------------------------------------------


def follow(
    name: str = "follow",
    source: str = "default",
    target: str = "lamp",
    grants: tuple[str, ...] = ("updateLight",),
) -> dict[str, Any]:
    return {
        "name": name,
        "path": FOLLOW,
        "config": {"source": source, "target": target},
        "grants": list(grants),
    }


def deliveries(client: TestClient, **query: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.get("/events/deliveries", params=query).json()[
        "deliveries"
    ]
    return found


def test_follow_copies_the_source_light_after_each_update(tmp_path: Path) -> None:
    with lightcontrol(tmp_path, [], **FAST_EVENTS) as client:
        lamp = client.post("/lights", json={"name": "Lamp"}).json()
    with lightcontrol(tmp_path, [follow(target=lamp["id"])], **FAST_EVENTS) as client:
        client.post("/light_color", json={"action": "ToBlue"})
        client.post("/light_control", json={"action": "TurnOn"})
        wait_for(
            lambda: (
                client.get(f"/lights/{lamp['id']}").json()["color"] == "blue"
                and client.get(f"/lights/{lamp['id']}").json()["status"] == "on"
            ),
            "the lamp to follow",
        )
        wait_for(lambda: {d["state"] for d in deliveries(client)} == {"delivered"}, "deliveries")
        done = deliveries(client, plugin="follow")
        assert {d["type"] for d in done} == {"light.after_update"}
        # The lamp's own updates (made by follow) raise events too; follow ignores them.
        assert {d["subject"] for d in done} == {"light/default", f"light/{lamp['id']}"}


def test_failed_deliveries_go_dead_and_can_be_replayed(tmp_path: Path) -> None:
    with lightcontrol(tmp_path, [follow(grants=())], **FAST_EVENTS) as client:
        client.post("/light_color", json={"action": "ToGreen"})
        wait_for(lambda: [d["state"] for d in deliveries(client)] == ["dead"], "a dead letter")
        (dead,) = deliveries(client, state="dead")
        assert dead["attempts"] == 2
        assert "403" in dead["last_error"]
        assert "not_granted" in dead["last_error"]
        replay = client.post(f"/events/{dead['event_id']}/replay")
        assert replay.json() == {"replayed": 1}
        wait_for(
            lambda: (
                deliveries(client)[0]["attempts"] == 2 and deliveries(client)[0]["state"] == "dead"
            ),
            "the replay to fail again",
        )
        assert client.post("/events/evt_nope/replay").status_code == 404
        assert client.get("/events/deliveries", params={"state": "lost"}).status_code == 422


def test_a_depth_limit_stops_event_loops_and_names_the_chain(tmp_path: Path) -> None:
    """follow A copies default to lamp, follow B copies lamp back to default: forever."""
    with lightcontrol(tmp_path, [], **FAST_EVENTS) as client:
        client.post("/lights", json={"name": "Lamp"})
        lamp = client.get("/lights").json()["lights"][-1]["id"]
    plugins = [follow("a", "default", lamp), follow("b", lamp, "default")]
    with lightcontrol(tmp_path, plugins, max_depth=3, **FAST_EVENTS) as client:
        client.post("/light_color", json={"action": "ToRed"})
        wait_for(lambda: any(d["state"] == "dead" for d in deliveries(client)), "the loop to stop")
        wait_for(lambda: not deliveries(client, state="pending"), "no pending deliveries")
        (dead, *_) = deliveries(client, state="dead")
        assert "depth_exceeded" in dead["last_error"]
        assert "deeper than 3" in dead["last_error"]
        assert (
            "a.light_after_update → update_light → b.light_after_update → update_light"
            in (dead["last_error"])
        )


def test_after_events_commit_with_the_write_or_not_at_all(tmp_path: Path) -> None:
    wasm = compile_wat(wat.event_handler("light_after_update"))
    with Plugin("p", wasm, host_functions=[HostFunction("note", lambda c, d: b"{}")]) as p:
        store = LightStore(tmp_path / "lights.db")
        outbox = Outbox(store.path)
        LightEvents(EventBus([Subscriber(p)]), outbox).attach(store)

        def explode(change: Change) -> None:
            if change.step == "after_save" and change.record["brightness"] == 13:
                raise RuntimeError("the after step failed")

        store.observers.append(explode)
        store.update("default", {"brightness": 12})
        with pytest.raises(RuntimeError):
            store.update("default", {"brightness": 13})
        store.close()
    # The rolled-back write left no event behind, and the light its committed value.
    assert [d["type"] for d in outbox.deliveries()] == ["light.after_update"]
    reopened = LightStore(tmp_path / "lights.db")
    assert reopened.get("default")["brightness"] == 12
    reopened.close()
