"""The scene sample plug-in (Rust), run with the plug-in harness."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostwire import PluginError
from hostwire.testing import PluginHarness

WASM = Path(__file__).parent / "build" / "plugin.wasm"
SPEC = Path(__file__).parents[2] / "openapi" / "light.yaml"


def light(light_id: str, **fields: object) -> dict[str, object]:
    record = {
        "id": light_id,
        "name": light_id.title(),
        "status": "off",
        "color": "white",
        "brightness": 100,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "revision": 1,
    }
    return {**record, **fields}


@pytest.fixture(scope="module")
def wasm() -> Path:
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: run the tests with `make test`, which builds it.")
    return WASM


@pytest.mark.parametrize(
    ("scene", "expected"),
    [
        pytest.param("movie", {"status": "on", "color": "blue", "brightness": 20}, id="movie"),
        pytest.param(
            "reading", {"status": "on", "color": "white", "brightness": 100}, id="reading"
        ),
    ],
)
def test_apply_scene_updates_every_light(
    wasm: Path, scene: str, expected: dict[str, object]
) -> None:
    with PluginHarness(wasm, spec=SPEC, config={"scene": scene}) as harness:
        harness.mock("listLights", {"lights": [light("desk"), light("hall", status="on")]})
        harness.mock("updateLight", light("any"))
        assert harness.call("apply_scene") == {"scene": scene, "updated": 2}
        assert [c.operation for c in harness.calls] == ["listLights", "updateLight", "updateLight"]
        updates = harness.calls_to("updateLight")
        assert [(c.method, c.path) for c in updates] == [
            ("PATCH", "/lights/desk"),
            ("PATCH", "/lights/hall"),
        ]
        assert all(c.body == expected for c in updates)


def test_no_lights_no_updates(wasm: Path) -> None:
    with PluginHarness(wasm, spec=SPEC, config={"scene": "movie"}) as harness:
        harness.mock("listLights", {"lights": []})
        assert harness.call("apply_scene") == {"scene": "movie", "updated": 0}
        assert harness.calls_to("updateLight") == []


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        pytest.param({"scene": "disco"}, 'unknown scene "disco"', id="unknown"),
        pytest.param({}, 'config "scene" is not set', id="missing"),
    ],
)
def test_a_bad_scene_is_an_error_and_changes_nothing(
    wasm: Path, config: dict[str, str], reason: str
) -> None:
    with PluginHarness(wasm, spec=SPEC, config=config) as harness:
        harness.mock("listLights", {"lights": [light("desk")]})
        with pytest.raises(PluginError, match=reason):
            harness.call("apply_scene")
        assert harness.calls == []


def test_an_api_error_stops_the_scene(wasm: Path) -> None:
    with PluginHarness(wasm, spec=SPEC, config={"scene": "movie"}) as harness:
        harness.mock("listLights", {"lights": [light("desk"), light("hall")]})
        harness.mock(
            "updateLight", {"error": {"code": "not_found", "message": "Gone."}}, status=404
        )
        with pytest.raises(PluginError, match="update_light answered 404 not_found: Gone"):
            harness.call("apply_scene")
        assert len(harness.calls_to("updateLight")) == 1


def test_a_new_light_gets_the_scene(wasm: Path) -> None:
    with PluginHarness(
        wasm, spec=SPEC, config={"scene": "movie"}, grants=["updateLight"]
    ) as harness:
        harness.mock("updateLight", light("porch", status="on", color="blue", brightness=20))
        assert harness.fire("light.after_create", record=light("porch")) is None
        (call,) = harness.calls
        assert (call.operation, call.path) == ("updateLight", "/lights/porch")
        assert call.body == {"status": "on", "color": "blue", "brightness": 20}


def test_without_the_grant_the_scene_fails(wasm: Path) -> None:
    with PluginHarness(
        wasm, spec=SPEC, config={"scene": "movie"}, grants=["listLights"]
    ) as harness:
        harness.mock("listLights", {"lights": [light("desk")]})
        with pytest.raises(PluginError, match="403 not_granted"):
            harness.call("apply_scene")
