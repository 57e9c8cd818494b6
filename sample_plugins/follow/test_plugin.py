"""follow: after the source light changes, the target light copies its colour and status."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostwire import PluginError
from hostwire.testing import PluginHarness

WASM = Path(__file__).parent / "build" / "plugin.wasm"
SPEC = Path(__file__).parents[2] / "openapi" / "light.yaml"
DEFAULT = {
    "id": "default",
    "name": "Default light",
    "status": "on",
    "color": "blue",
    "brightness": 100,
    "created_at": "2026-11-21T22:00:00Z",
    "updated_at": "2026-11-21T23:15:02Z",
    "revision": 3,
}


def harness(config: dict[str, str], grants: tuple[str, ...] = ("updateLight",)) -> PluginHarness:
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: build it with `make plugins`.")
    return PluginHarness(WASM, spec=SPEC, name="follow", config=config, grants=grants)


def test_the_target_copies_the_source() -> None:
    with harness({"target": "lamp"}) as h:
        h.mock("updateLight", {**DEFAULT, "id": "lamp", "name": "Lamp"})
        answer = h.fire("light.after_update", record=DEFAULT, previous={**DEFAULT, "color": "red"})
        assert answer == {"followed": "default", "target": "lamp", "status": 200}
        (call,) = h.calls
        assert (call.operation, call.method, call.path) == ("updateLight", "PATCH", "/lights/lamp")
        assert call.body == {"status": "on", "color": "blue"}


def test_other_lights_are_ignored() -> None:
    with harness({"source": "hall", "target": "lamp"}) as h:
        assert h.fire("light.after_update", record=DEFAULT) == {"ignored": "default"}
        assert h.calls == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            {},
            'config "target" is missing: the id of the light that follows "default"',
            id="no-target",
        ),
        pytest.param({"target": ""}, 'config "target" is missing', id="empty-target"),
        pytest.param(
            {"source": "lamp", "target": "lamp"},
            'config "target" is "lamp", the source itself',
            id="loop",
        ),
    ],
)
def test_bad_config_fails_every_event(config: dict[str, str], message: str) -> None:
    with harness(config) as h, pytest.raises(PluginError, match=message):
        h.fire("light.after_update", record=DEFAULT)


def test_a_failed_update_fails_the_delivery_so_it_is_retried() -> None:
    with harness({"target": "gone"}) as h:
        h.mock(
            "updateLight",
            {"error": {"code": "not_found", "message": 'No light has the id "gone".'}},
            status=404,
        )
        with pytest.raises(PluginError) as failure:
            h.fire("light.after_update", record=DEFAULT)
    assert (
        'update_light on "gone" failed with status 404: not_found: No light has the id "gone".'
        in str(failure.value)
    )


def test_without_the_grant_the_app_is_never_reached() -> None:
    with harness({"target": "lamp"}, grants=()) as h:
        with pytest.raises(PluginError, match="status 403: not_granted"):
            h.fire("light.after_update", record=DEFAULT)
        assert h.calls == []


def test_a_malformed_event_names_the_field() -> None:
    with harness({"target": "lamp"}) as h, pytest.raises(PluginError) as failure:
        h.call(
            "light_after_update",
            {"id": "evt_1", "type": "light.after_update", "timestamp": "x", "data": {}},
        )
    message = str(failure.value)
    assert "the light.after_update event does not match its schema: " in message
    assert "data.record: is required but missing" in message
