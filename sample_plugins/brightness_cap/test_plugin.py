"""The brightness_cap sample plug-in (C, on the generated C PDK), run with the harness."""

from __future__ import annotations

import logging
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
        "status": "on",
        "color": "white",
        "brightness": 50,
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
    ("config", "brightness", "expected"),
    [
        pytest.param({}, 95, {"record": light("desk", brightness=80)}, id="default-max-80"),
        pytest.param({}, 80, {}, id="at-the-cap"),
        pytest.param({}, 10, {}, id="below"),
        pytest.param({"max": 30}, 31, {"record": light("desk", brightness=30)}, id="max-30"),
        pytest.param({"max": "not a number"}, 81, {"record": light("desk", brightness=80)},
                     id="bad-max-uses-80"),
    ],
)  # fmt: skip
def test_before_save_caps_the_brightness(
    wasm: Path, config: dict[str, object], brightness: int, expected: dict[str, object]
) -> None:
    with PluginHarness(wasm, spec=SPEC, config=config) as harness:
        answer = harness.fire(
            "light.before_save",
            record=light("desk", brightness=brightness),
            previous=light("desk"),
        )
        assert answer == expected
        assert harness.calls == []


def test_capping_is_logged(wasm: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hostwire.plugin")
    with PluginHarness(wasm, spec=SPEC, name="brightness-cap", config={"max": 60}) as harness:
        harness.fire("light.before_save", record=light("hall", brightness=99), previous=None)
    assert "capped hall from 99 to 60" in caplog.text


def test_report_reads_the_default_light_and_counts_lights_over_the_cap(wasm: Path) -> None:
    lights = [light("a", brightness=10), light("b", brightness=81), light("c", brightness=100)]
    with PluginHarness(wasm, spec=SPEC, grants=["getStates", "listLights"]) as harness:
        harness.mock("getStates", {"status": "off", "color": "red"})
        harness.mock("listLights", {"lights": lights})
        assert harness.call("report") == {
            "default": {"status": "off", "color": "red"},
            "lights": 3,
            "over_cap": 2,
        }
        assert [c.operation for c in harness.calls] == ["getStates", "listLights"]
        assert [(c.method, c.path) for c in harness.calls] == [
            ("GET", "/states"),
            ("GET", "/lights"),
        ]


def test_report_uses_the_configured_cap(wasm: Path) -> None:
    lights = [light("a", brightness=10), light("b", brightness=81)]
    with PluginHarness(wasm, spec=SPEC, config={"max": 5}) as harness:
        harness.mock("getStates", {"status": "on", "color": "white"})
        harness.mock("listLights", {"lights": lights})
        assert harness.call("report")["over_cap"] == 2


def test_report_fails_clearly_without_its_grants(wasm: Path) -> None:
    with PluginHarness(wasm, spec=SPEC, grants=["getStates"]) as harness:
        harness.mock("getStates", {"status": "on", "color": "white"})
        with pytest.raises(PluginError, match=r"list_lights: .*\(not_granted\)"):
            harness.call("report")
        assert harness.calls_to("listLights") == []
