"""Hot reload: replacing, enabling and disabling a plug-in and reloading the
configuration while the app serves, through Hostwire's methods and the admin API."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

import wat
from conftest import compile_wat
from hostwire import ConfigError, Hostwire, HostwireConfig, PluginError, parse_config
from reload_kit import ADMIN, Notes, make_app, module


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)  # polling a condition, not timing anything


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, Hostwire, Notes]]:
    app, notes = make_app(tmp_path)
    with TestClient(app) as client:
        yield client, app.state.hostwire, notes
    notes.gate.set()


def version_of(client: TestClient) -> str | None:
    response = client.get("/hello")
    assert response.status_code == 200
    found: str | None = response.headers.get("x-version")
    return found


def state(hw: Hostwire) -> dict[str, Any]:
    found = hw.plugin_state("ver")
    assert found is not None
    return found


BAD_MODULES = [
    pytest.param(b"not a module at all", "not WebAssembly", id="not-wasm"),
    pytest.param(compile_wat(wat.caller("unknown_op")), "unknown_op", id="unknown-import"),
    pytest.param(b"\0asm\x01\0\0\0\x01\xff", "not a valid WebAssembly module", id="truncated"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_MODULES)
def test_a_bad_module_is_refused_and_the_old_one_keeps_serving(
    served: tuple[TestClient, Hostwire, Notes], bad: bytes, reason: str
) -> None:
    client, hw, _ = served
    assert version_of(client) == "v1"
    with pytest.raises(ConfigError, match=reason) as refused:
        hw.replace_plugin("ver", bad)
    assert "\n" not in str(refused.value)
    assert version_of(client) == "v1"
    assert state(hw)["version"] == 1


def test_a_sha256_mismatch_is_refused(served: tuple[TestClient, Hostwire, Notes]) -> None:
    client, hw, _ = served
    new = module("v2")
    with pytest.raises(ConfigError, match=r"sha256 is .* not the 0{64}"):
        hw.replace_plugin("ver", new, sha256="0" * 64)
    assert version_of(client) == "v1"
    hw.replace_plugin("ver", new, sha256=hashlib.sha256(new).hexdigest().upper())
    assert version_of(client) == "v2"
    assert state(hw)["version"] == 2
    assert state(hw)["sha256"] == hashlib.sha256(new).hexdigest()


def test_unknown_plugins_and_calls_before_start_are_refused(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    hw: Hostwire = app.state.hostwire
    with pytest.raises(RuntimeError, match="before Hostwire started"):
        hw.set_enabled("ver", False)
    with (
        TestClient(app),
        pytest.raises(ConfigError, match=r'no plug-in is named "nope" \(plug-ins: ver'),
    ):
        hw.replace_plugin("nope", module("v2"))


def test_a_call_in_flight_finishes_on_the_old_version_and_new_calls_get_the_new(
    served: tuple[TestClient, Hostwire, Notes],
) -> None:
    client, hw, notes = served
    hw.replace_plugin("ver", module("v1-gated", gated=True))
    old = hw.loaded_plugins()[0]
    answers: list[str | None] = []
    first = threading.Thread(target=lambda: answers.append(version_of(client)))
    first.start()
    try:
        wait_for(notes.held.is_set, "the first request to be held inside its hook")
        hw.replace_plugin("ver", module("v2"))
        # New calls get the new version at once, while the old one still runs a call.
        assert version_of(client) == "v2"
        assert hw.plugins is not None
        assert hw.plugins.leased() >= 1
        assert first.is_alive()
    finally:
        notes.gate.set()
        first.join(20)
    assert answers == ["v1-gated"]
    # Its last call over, the old version is closed: its instances are freed.
    wait_for(lambda: hw.plugins is not None and hw.plugins.leased() == 0, "the lease to end")
    with pytest.raises(PluginError, match="closed"):
        old.call("http_pre_hook", b"{}")
    assert state(hw)["version"] == 3


def test_disable_and_enable(served: tuple[TestClient, Hostwire, Notes]) -> None:
    client, hw, notes = served
    hw.emit("ping", {"n": 1})
    wait_for(lambda: notes.pings() == ["v1"], "the first ping's delivery")
    hw.set_enabled("ver", False)
    assert state(hw)["state"] == "disabled"
    assert client.get("/hello").json() == {"from": "app"}  # no hook runs
    hw.set_enabled("ver", False)  # already so: nothing happens
    # A new module for a disabled plug-in is checked and kept for its enable.
    hw.replace_plugin("ver", module("v2"))
    assert state(hw)["state"] == "disabled"
    hw.set_enabled("ver", True)
    assert version_of(client) == "v2"
    assert state(hw)["state"] == "enabled"
    assert state(hw)["version"] == 2
    hw.emit("ping", {"n": 2})
    wait_for(lambda: notes.pings() == ["v1", "v2"], "the second ping, by the new version")


def test_an_after_event_lane_moves_to_the_new_version(
    served: tuple[TestClient, Hostwire, Notes],
) -> None:
    _, hw, notes = served
    assert hw.outbox is not None
    for n in range(3):
        hw.emit("ping", {"n": n})
        hw.replace_plugin("ver", module(f"v{n + 2}"))
        assert hw.outbox.lane_plugin("ver") is hw.loaded_plugins()[0]
    wait_for(lambda: len(notes.pings()) == 3, "every ping's delivery")
    delivered = hw.outbox.deliveries(plugin="ver")
    assert [d["state"] for d in delivered] == ["delivered"] * 3
    assert all(d["attempts"] == 1 for d in delivered)


def test_reload_config(served: tuple[TestClient, Hostwire, Notes], tmp_path: Path) -> None:
    client, hw, _ = served
    (tmp_path / "v2.wasm").write_bytes(module("v2"))
    config = json.loads((tmp_path / "plugins.yaml").read_text())
    config["plugins"][0]["path"] = "v2.wasm"
    (tmp_path / "plugins.yaml").write_text(json.dumps(config))
    hw.reload_config()
    assert version_of(client) == "v2"
    config["plugins"][0]["path"] = "missing.wasm"
    (tmp_path / "plugins.yaml").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"missing\.wasm"):
        hw.reload_config()
    assert version_of(client) == "v2"
    config["plugins"][0].update(path="v2.wasm", enabled=False)
    (tmp_path / "plugins.yaml").write_text(json.dumps(config))
    hw.reload_config()
    assert state(hw)["state"] == "disabled"


def test_reload_config_needs_a_file() -> None:
    hw = Hostwire(Starlette(), config=HostwireConfig(), spec={**_tiny()}, hooks=True)
    with hw, pytest.raises(ConfigError, match="given its configuration as an object"):
        hw.reload_config()


def _tiny() -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}}


def test_watch_reloads_a_changed_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app, _ = make_app(tmp_path, {"watch": True})
    with TestClient(app) as client:
        hw: Hostwire = app.state.hostwire
        assert version_of(client) == "v1"
        (tmp_path / "ver.wasm").write_bytes(module("v2"))
        wait_for(lambda: version_of(client) == "v2", "the watched file's reload")
        with caplog.at_level("WARNING", logger="hostwire.reload"):
            (tmp_path / "ver.wasm").write_bytes(b"half a module")
            wait_for(lambda: "keeps serving its version 2" in caplog.text, "the warning")
        assert version_of(client) == "v2"
        assert state(hw)["watch"] is True


def test_watch_needs_a_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="watch needs a path"):
        parse_config(
            {"plugins": [{"name": "u", "url": "https://x/p.wasm", "sha256": "a" * 64, "watch": 1}]},
            path=tmp_path / "p.yaml",
        )


# -- the admin API ---------------------------------------------------------------------


def test_the_routes_need_the_admin_token(served: tuple[TestClient, Hostwire, Notes]) -> None:
    client, _, _ = served
    for method, path in [
        ("PUT", "/hostwire/plugins/ver"),
        ("POST", "/hostwire/plugins/ver/disable"),
        ("POST", "/hostwire/plugins/ver/enable"),
        ("POST", "/hostwire/reload"),
    ]:
        response = client.request(method, path, headers={"Authorization": "Bearer wrong"})
        assert response.status_code == 401, path
    assert version_of(client) == "v1"


def test_put_a_module(served: tuple[TestClient, Hostwire, Notes]) -> None:
    client, _, _ = served
    new = module("v2")
    digest = hashlib.sha256(new).hexdigest()
    wasm = {**ADMIN, "Content-Type": "application/wasm"}
    cases = [
        (b"junk", wasm, "", 422, "plugin_refused"),
        (new, {**wasm, "X-Hostwire-Sha256": "f" * 64}, "", 422, "plugin_refused"),
        (new, {**wasm, "X-Hostwire-Sha256": "xyz"}, "", 400, "invalid_sha256"),
        (new, {**ADMIN, "Content-Type": "text/plain"}, "", 415, "unsupported_media_type"),
        (b"", wasm, "", 400, "empty_module"),
    ]
    for body, headers, query, status, code in cases:
        response = client.put(f"/hostwire/plugins/ver{query}", content=body, headers=headers)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code
        assert "\n" not in error["message"]
    assert version_of(client) == "v1"
    missing = client.put("/hostwire/plugins/nope", content=new, headers=wasm)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    octet = {**ADMIN, "Content-Type": "application/octet-stream"}
    response = client.put(f"/hostwire/plugins/ver?sha256={digest}", content=new, headers=octet)
    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == digest
    assert response.json()["version"] == 2
    assert response.json()["loaded_at"].endswith("Z")
    assert version_of(client) == "v2"


def test_enable_disable_and_reload_routes(served: tuple[TestClient, Hostwire, Notes]) -> None:
    client, _, _ = served
    off = client.post("/hostwire/plugins/ver/disable", headers=ADMIN)
    assert off.status_code == 200
    assert off.json()["state"] == "disabled"
    assert client.get("/hello").json() == {"from": "app"}
    listed = client.get("/hostwire/plugins", headers=ADMIN).json()["plugins"]
    assert [(p["name"], p["state"]) for p in listed] == [("ver", "disabled")]
    on = client.post("/hostwire/plugins/ver/enable", headers=ADMIN)
    assert on.json()["state"] == "enabled"
    assert on.json()["version"] == 2
    assert client.post("/hostwire/plugins/nope/enable", headers=ADMIN).status_code == 404
    reloaded = client.post("/hostwire/reload", headers=ADMIN)
    assert reloaded.status_code == 200
    assert reloaded.json()["plugins"][0]["version"] == 3
    assert version_of(client) == "v1"
