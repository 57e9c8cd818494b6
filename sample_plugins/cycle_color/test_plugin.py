"""cycle_color: reads the default light's colour and sets the next one of the cycle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hostwire import PluginError
from hostwire.testing import PluginHarness

WASM = Path(__file__).parent / "build" / "plugin.wasm"
SPEC = Path(__file__).parents[2] / "openapi" / "light.yaml"


def harness(
    config: dict[str, str] | None = None, grants: tuple[str, ...] = ("getStates", "setLightColor")
) -> PluginHarness:
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: build it with `make plugins`.")
    return PluginHarness(WASM, spec=SPEC, name="cycle-color", config=config, grants=grants)


@pytest.fixture
def lights() -> Iterator[PluginHarness]:
    with harness() as h:
        h.mock("setLightColor", {"status": "on", "color": "red"})
        yield h


def test_white_goes_to_red_first(lights: PluginHarness) -> None:
    lights.mock("getStates", {"status": "on", "color": "white"})
    assert lights.call("run") == {"from": "white", "to": "red", "status": 200}
    assert [c.operation for c in lights.calls] == ["getStates", "setLightColor"]
    assert lights.calls_to("setLightColor")[0].body == {"action": "ToRed"}


@pytest.mark.parametrize(
    ("order", "now", "to", "action"),
    [
        pytest.param("blue,green", "green", "blue", "ToBlue", id="wraps-around"),
        pytest.param("blue,green", "red", "blue", "ToBlue", id="outside-the-cycle"),
        pytest.param(" Blue , GREEN ", "blue", "green", "ToGreen", id="spaces-and-case"),
        pytest.param("", "blue", "white", "ToWhite", id="empty-is-the-default"),
    ],
)
def test_the_order_config_sets_the_cycle(order: str, now: str, to: str, action: str) -> None:
    with harness({"order": order}) as h:
        h.mock("getStates", {"status": "off", "color": now})
        h.mock("setLightColor", {"status": "off", "color": to})
        assert h.call("run") == {"from": now, "to": to, "status": 200}
        assert h.calls_to("setLightColor")[0].body == {"action": action}


def test_an_unknown_colour_in_the_order_is_refused_before_any_call() -> None:
    with harness({"order": "red,purple"}) as h, pytest.raises(PluginError) as failure:
        h.call("run")
    assert 'config "order": unknown colour "purple" (use red, green, blue, white)' in str(
        failure.value
    )
    assert h.calls == []


def test_a_missing_grant_fails_with_the_status_and_code() -> None:
    with harness(grants=("getStates",)) as h:
        h.mock("getStates", {"status": "on", "color": "white"})
        with pytest.raises(PluginError) as failure:
            h.call("run")
    message = str(failure.value)
    assert "set_light_color failed with status 403: not_granted:" in message
    assert 'not granted operation "setLightColor"' in message


def test_an_app_error_is_quoted(lights: PluginHarness) -> None:
    error = {"error": {"code": "conflict", "message": "The light kept changing."}}
    lights.mock("getStates", error, status=409)
    with pytest.raises(PluginError) as failure:
        lights.call("run")
    assert "get_states failed with status 409: conflict: The light kept changing." in str(
        failure.value
    )


def test_an_answer_without_a_body_is_an_error(lights: PluginHarness) -> None:
    lights.mock("getStates", None, status=204)
    with pytest.raises(PluginError, match="get_states answered status 204 without a body"):
        lights.call("run")
    assert lights.calls_to("setLightColor") == []
