"""night_mode: no white light during quiet hours (refused, or turned red)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hostwire import PluginError
from hostwire.testing import PluginHarness

WASM = Path(__file__).parent / "build" / "plugin.wasm"
SPEC = Path(__file__).parents[2] / "openapi" / "light.yaml"
WHITE_ON = {
    "id": "default",
    "name": "Default light",
    "status": "on",
    "color": "white",
    "brightness": 100,
    "created_at": "2026-11-21T22:00:00Z",
    "updated_at": "2026-11-21T23:15:02Z",
    "revision": 3,
}


def event(timestamp: str, **record: Any) -> dict[str, Any]:
    """A light.before_save envelope at a fixed time (the plug-in's only clock)."""
    return {
        "id": "evt_0001",
        "type": "light.before_save",
        "timestamp": timestamp,
        "data": {"record": {**WHITE_ON, **record}, "previous": None, "changes": {}},
    }


def harness(config: dict[str, str] | None = None) -> PluginHarness:
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: build it with `make plugins`.")
    return PluginHarness(WASM, spec=SPEC, name="night-mode", config=config, grants=())


@pytest.mark.parametrize(
    "timestamp",
    [
        pytest.param("2026-11-21T23:15:02.123Z", id="late"),
        pytest.param("2026-11-22T06:59:59Z", id="early"),
        pytest.param("2026-11-22T00:15:02+01:00", id="offset"),
        pytest.param("2026-11-21 22:00:00z", id="at-quiet-from"),
    ],
)
def test_white_light_is_refused_at_night(timestamp: str) -> None:
    with harness() as h:
        assert h.call("light_before_save", event(timestamp)) == {
            "reject": {"reason": "night mode: white light is not allowed between 22:00 and 07:00"}
        }


@pytest.mark.parametrize(
    ("timestamp", "record"),
    [
        pytest.param("2026-11-22T07:00:00Z", {}, id="at-quiet-to"),
        pytest.param("2026-11-22T12:00:00Z", {}, id="noon"),
        pytest.param("2026-11-21T23:15:02Z", {"color": "blue"}, id="not-white"),
        pytest.param("2026-11-21T23:15:02Z", {"status": "off"}, id="off"),
    ],
)
def test_anything_else_goes_on_unchanged(timestamp: str, record: dict[str, str]) -> None:
    with harness() as h:
        assert h.call("light_before_save", event(timestamp, **record)) == {}


def test_mode_red_rewrites_the_record() -> None:
    with harness({"mode": "red", "quiet_from": "23:00", "quiet_to": "23:30"}) as h:
        answer = h.call("light_before_save", event("2026-11-21T23:15:02Z"))
    assert answer == {"record": {**WHITE_ON, "color": "red"}}


def test_a_window_of_equal_times_is_never_quiet() -> None:
    with harness({"quiet_from": "10:00", "quiet_to": "10:00"}) as h:
        assert h.call("light_before_save", event("2026-11-21T10:00:00Z")) == {}


def test_fire_stamps_the_event_with_the_current_time() -> None:
    now = datetime.now(UTC)
    around_now = {
        "quiet_from": (now - timedelta(hours=1)).strftime("%H:%M"),
        "quiet_to": (now + timedelta(hours=1)).strftime("%H:%M"),
    }
    with harness(around_now) as h:
        assert "reject" in h.fire("light.before_save", record=WHITE_ON)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            {"quiet_from": "25:00"},
            'config "quiet_from": "25:00" is not a time of day as HH:MM (00:00 to 23:59, UTC)',
            id="bad-time",
        ),
        pytest.param({"quiet_to": "7:00"}, 'config "quiet_to": "7:00" is not a time', id="short"),
        pytest.param(
            {"mode": "blue"}, 'config "mode": "blue" is neither "reject" nor "red"', id="mode"
        ),
    ],
)
def test_bad_config_is_reported_with_the_first_event(config: dict[str, str], message: str) -> None:
    with harness(config) as h, pytest.raises(PluginError) as failure:
        h.call("light_before_save", event("2026-11-21T12:00:00Z"))
    assert message in str(failure.value)


def test_bad_events_are_reported() -> None:
    with harness() as h:
        with pytest.raises(PluginError, match='timestamp "yesterday" is not an RFC 3339 time'):
            h.call("light_before_save", event("yesterday"))
        with pytest.raises(PluginError, match=r'data\.record\.color: "purple" is not one of'):
            h.call("light_before_save", event("2026-11-21T23:15:02Z", color="purple"))
        with pytest.raises(PluginError, match="not valid JSON: invalid JSON at byte 1"):
            h.call_raw("light_before_save", b"{,}")
        # A bad event leaves nothing behind: the next one is handled as usual.
        assert "reject" in h.call("light_before_save", event("2026-11-21T23:15:02Z"))
