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
from hostwire._events import ModelTracker
from lightcontrol.app import Settings, create_app
from lightcontrol.store import Change, Light, LightStore
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
        assert dead["attempts"] == 1  # not granted: dead at once, not retried
        assert "403" in dead["last_error"]
        assert "not_granted" in dead["last_error"]
        replay = client.post(f"/events/{dead['event_id']}/replay")
        assert replay.json() == {"replayed": 1}
        wait_for(
            lambda: (
                deliveries(client)[0]["attempts"] == 1 and deliveries(client)[0]["state"] == "dead"
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
        outbox = Outbox(store.engine)
        tracker = ModelTracker()
        tracker.track(Light, name="light")
        tracker.bind(EventBus([Subscriber(p)]), outbox)

        def explode(change: Change) -> None:
            if change.step == "after_save" and change.record["brightness"] == 13:
                raise RuntimeError("the after step failed")

        store.observers.append(explode)
        store.update("default", {"brightness": 12})
        with pytest.raises(RuntimeError):
            store.update("default", {"brightness": 13})
        tracker.close()
        store.close()
    # The rolled-back write left no event behind, and the light its committed value.
    assert [d["type"] for d in outbox.deliveries()] == ["light.after_update"]
    reopened = LightStore(tmp_path / "lights.db")
    assert reopened.get("default")["brightness"] == 12
    reopened.close()


# -- hardening (issue 11) -----------------------------------------------------------

# A before/after handler without imports: light_after_* answer nothing;
# light_before_save answers config "answer", or two bytes of invalid UTF-8 when
# config "bad_utf8" is set.
ANSWERING = """(module
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "config_get" (func $config_get (param i64) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "answer")
  (data (i32.const 16) "bad_utf8")
  (func $key (param $ptr i32) (param $len i32) (result i64) (local $b i64) (local $i i32)
    (local.set $b (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done (loop $copy
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $b) (i64.extend_i32_u (local.get $i)))
        (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $copy)))
    (local.get $b))
  (func (export "light_before_save") (result i32) (local $v i64) (local $b i64)
    (if (i64.ne (call $config_get (call $key (i32.const 16) (i32.const 8))) (i64.const 0))
      (then
        (local.set $b (call $alloc (i64.const 2)))
        (call $store_u8 (local.get $b) (i32.const 0xff))
        (call $store_u8 (i64.add (local.get $b) (i64.const 1)) (i32.const 0xfe))
        (call $output_set (local.get $b) (i64.const 2))
        (return (i32.const 0))))
    (local.set $v (call $config_get (call $key (i32.const 0) (i32.const 6))))
    (if (i64.eqz (local.get $v)) (then (return (i32.const 0))))
    (call $output_set (local.get $v) (call $length (local.get $v)))
    (i32.const 0))
  (func (export "light_after_validation") (result i32) (i32.const 0))
  (func (export "light_after_update") (result i32) (i32.const 0))
)"""


@pytest.fixture
def answering_plugin(tmp_path: Path) -> str:
    path = tmp_path / "answering.wat"
    path.write_text(ANSWERING)
    return str(path)


def test_after_validation_is_delivered_first_from_the_outbox(
    tmp_path: Path, answering_plugin: str
) -> None:
    plugin = {"name": "watcher", "path": answering_plugin}
    with lightcontrol(tmp_path, [plugin], **FAST_EVENTS) as client:
        assert client.patch("/lights/default", json={"brightness": 40}).status_code == 200
        wait_for(
            lambda: (
                len(deliveries(client)) == 2
                and {d["state"] for d in deliveries(client)} == {"delivered"}
            ),
            "both deliveries",
        )
        oldest_first = list(reversed(deliveries(client, plugin="watcher")))
        # A refused change raises no after-event at all, after_validation included.
        assert client.patch("/lights/default", json={"brightness": 400}).status_code == 422
        assert len(deliveries(client)) == 2
    assert [d["type"] for d in oldest_first] == ["light.after_validation", "light.after_update"]
    assert {d["subject"] for d in oldest_first} == {"light/default"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param({"bad_utf8": "yes"}, "returned invalid JSON: it is not UTF-8", id="bad-utf8"),
        pytest.param({"answer": "[" * 100_000}, "is JSON nested too deeply", id="deep-json"),
        pytest.param({"answer": "{not json"}, "returned invalid JSON", id="garbage"),
    ],
)
def test_unreadable_before_answers_are_502_and_logged_once(
    tmp_path: Path,
    answering_plugin: str,
    caplog: pytest.LogCaptureFixture,
    config: dict[str, str],
    message: str,
) -> None:
    plugin = {"name": "odd", "path": answering_plugin, "config": config}
    with lightcontrol(tmp_path, [plugin]) as client, caplog.at_level("ERROR", "lightcontrol"):
        response = client.patch(
            "/lights/default", json={"brightness": 7}, headers={"X-Request-ID": "req-42"}
        )
        assert client.get("/lights/default").json()["brightness"] == 100
    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["code"], error["plugin"]) == ("plugin_failed", "odd")
    assert message in error["message"]
    assert "codec" not in error["message"]
    (line,) = [r.getMessage() for r in caplog.records if r.name == "lightcontrol"]
    assert line.startswith(
        'before-event handler failed: plug-in "odd" export "light_before_save" (fail_closed): '
    )
    assert message in line
    assert line.endswith("request_id=req-42")


# light_before_save calls update_light with config "call" as its input, ignores
# the reply and goes on.
REENTRANT = """(module
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "config_get" (func $config_get (param i64) (result i64)))
  (import "extism:host/user" "update_light" (func $update_light (param i64) (result i64)))
  (memory (export "memory") 1)
  (func (export "light_before_save") (result i32) (local $b i64)
    (local.set $b (call $alloc (i64.const 4)))
    (call $store_u8 (local.get $b) (i32.const 99))
    (call $store_u8 (i64.add (local.get $b) (i64.const 1)) (i32.const 97))
    (call $store_u8 (i64.add (local.get $b) (i64.const 2)) (i32.const 108))
    (call $store_u8 (i64.add (local.get $b) (i64.const 3)) (i32.const 108))
    (drop (call $update_light (call $config_get (local.get $b))))
    (i32.const 0))
)"""


def test_a_handler_changing_its_own_light_gets_409_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "reentrant.wat"
    path.write_text(REENTRANT)
    call = '{"path": {"id": "default"}, "body": {"color": "red"}}'
    plugin = {
        "name": "selfish",
        "path": str(path),
        "config": {"call": call},
        "grants": ["updateLight"],
        "limits": {"timeout_ms": 1000},
    }
    with lightcontrol(tmp_path, [plugin]) as client, caplog.at_level("INFO", "lightcontrol.access"):
        # Waiting for the light's lock would outlast the handler's 1 s: a 502 timeout.
        response = client.patch("/lights/default", json={"brightness": 9})
        assert response.status_code == 200
        light = client.get("/lights/default").json()
    assert (light["brightness"], light["color"]) == (9, "white")
    inner = [
        r.getMessage()
        for r in caplog.records
        if "PATCH /lights/default" in r.getMessage()
        and "principal=plugin:selfish" in r.getMessage()
    ]
    assert len(inner) == 1
    assert '" 409 ' in inner[0]


def test_a_full_disk_or_a_read_only_database_answers_503_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with lightcontrol(tmp_path, []) as client, caplog.at_level("INFO", "hostwire.storage"):
        store: LightStore = client.app.state.store  # type: ignore[attr-defined]
        kept = client.post("/lights", json={"name": "Kept"}).json()
        # SQLite's own limits stand in for the failures (chmod does not stop root).
        store._db.execute("PRAGMA query_only = ON")
        refused = [client.patch(f"/lights/{kept['id']}", json={"brightness": 5}) for _ in range(3)]
        store._db.execute("PRAGMA query_only = OFF")
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")
        full = [client.post("/lights", json={"name": "x" * 100}) for _ in range(200)]
        store._db.execute("PRAGMA max_page_count = 1073741823")
        assert client.patch(f"/lights/{kept['id']}", json={"brightness": 6}).status_code == 200
        lights = client.get("/lights").json()["lights"]
    for response in refused:
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.json()["error"]["code"] == "storage_unavailable"
        assert "read-only" in response.json()["error"]["message"]
    full_ones = [r for r in full if r.status_code == 503]
    assert full_ones, "the database never filled up"
    assert all(r.status_code in (201, 503) for r in full)
    assert "full" in full_ones[0].json()["error"]["message"]
    created = {r.json()["id"] for r in full if r.status_code == 201}
    assert {light["id"] for light in lights} == {"default", kept["id"], *created}
    assert next(light for light in lights if light["id"] == kept["id"])["brightness"] == 6
    # One line per kind of failure (not one per request), and one when it is over.
    messages = [r.getMessage() for r in caplog.records if r.name == "hostwire.storage"]
    assert [m.split(" while ")[0] for m in messages] == [
        "storage unavailable (read_only)",
        f"storage works again in {store.path} (it failed with: read_only).",
        "storage unavailable (disk_full)",
        f"storage works again in {store.path} (it failed with: disk_full).",
    ]
