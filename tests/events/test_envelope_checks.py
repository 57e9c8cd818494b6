"""The bus checks a lifecycle envelope part by part (verdicts kept by the part's
JSON): it accepts and refuses exactly what checking the whole envelope does."""

from __future__ import annotations

import re
from typing import Any

import pytest

from conftest import ROOT
from hostwire import EventBus, load_openapi, new_envelope
from hostwire._events import new_event_id

RECORD = {
    "id": "default",
    "name": "Default light",
    "status": "off",
    "color": "white",
    "brightness": 42,
    "created_at": "2026-12-02T15:00:00.000Z",
    "updated_at": "2026-12-02T15:00:01.000Z",
    "revision": 7,
}
PREVIOUS = {**RECORD, "brightness": 41, "revision": 6}
CHANGES = {"brightness": {"from": 41, "to": 42}, "revision": {"from": 6, "to": 7}}


@pytest.fixture(scope="module")
def bus() -> EventBus:
    return EventBus([], spec=load_openapi(ROOT / "openapi" / "light.yaml"))


def whole(bus: EventBus, *parts: Any) -> str | None:
    """What checking the whole envelope says about these parts (None: it passes)."""
    try:
        bus.checked(new_envelope("light", "before_save", *parts))
    except ValueError as exc:
        return str(exc)
    return None


def by_parts(bus: EventBus, *parts: Any) -> str | None:
    try:
        bus.envelope("light", "before_save", *parts)
    except ValueError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(
    "parts",
    [
        (RECORD, PREVIOUS, CHANGES),
        (RECORD, None, CHANGES),
        ({**RECORD, "brightness": 500}, PREVIOUS, CHANGES),
        (RECORD, {**PREVIOUS, "color": "pink"}, CHANGES),
        (RECORD, {**PREVIOUS, "color": None}, CHANGES),
        (RECORD, PREVIOUS, {"brightness": 5}),
        (RECORD, PREVIOUS, {"brightness": {"from": 1}}),
        ({**RECORD, "extra": 1}, PREVIOUS, CHANGES),
    ],
)
def test_the_bus_says_what_checking_the_whole_envelope_says(
    bus: EventBus, parts: tuple[Any, ...]
) -> None:
    for _ in range(2):  # the second time from the kept verdicts
        assert by_parts(bus, *parts) == whole(bus, *parts)


def test_a_record_changed_since_it_passed_is_checked_again(bus: EventBus) -> None:
    record = dict(RECORD)
    assert by_parts(bus, record, PREVIOUS, CHANGES) is None
    record["brightness"] = 500
    assert by_parts(bus, record, PREVIOUS, CHANGES) == (
        "light.before_save event does not match its webhook: /data/record/brightness: "
        "500 is greater than the maximum of 100"
    )
    # The same values as a previous that passed as a record: refused the same way.
    assert by_parts(bus, RECORD, record, CHANGES) == whole(bus, RECORD, record, CHANGES)


def test_event_ids_are_unique_and_shaped_like_uuid_hex() -> None:
    ids = [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"evt_[0-9a-f]{32}", i) for i in ids)


def test_timestamps_are_rfc3339_utc_milliseconds(bus: EventBus) -> None:
    stamp = new_envelope("light", "before_save", RECORD, None, {})["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)


def test_a_record_vouched_for_by_another_schema_is_still_checked(bus: EventBus) -> None:
    bad = {**RECORD, "brightness": 500}
    assert bus.spec is not None
    other = bus.spec.component_schema("LightUpdate").uri
    bus.record_passed(other, bad)
    assert by_parts(bus, bad, PREVIOUS, CHANGES) == whole(bus, bad, PREVIOUS, CHANGES)
    assert by_parts(bus, bad, PREVIOUS, CHANGES) is not None


def test_a_record_the_tracker_checked_is_not_checked_again(bus: EventBus) -> None:
    assert by_parts(bus, RECORD, PREVIOUS, CHANGES) is None  # the webhook's plan, made once
    record = {**RECORD, "name": "vouched"}
    assert bus.spec is not None
    bus.record_passed(bus.spec.component_schema("Light").uri, record)
    calls = []
    plan = bus._plans["light.before_save"]
    assert plan is not None
    schema = plan.data["record"]
    original = schema.problems

    class Counting:
        def problems(self, *args: Any) -> list[dict[str, str]]:
            calls.append(args)
            result: list[dict[str, str]] = original(*args)
            return result

    plan.data["record"] = Counting()
    try:
        assert by_parts(bus, record, PREVIOUS, CHANGES) is None
        assert by_parts(bus, {**record, "name": "not vouched"}, PREVIOUS, CHANGES) is None
    finally:
        plan.data["record"] = schema
    assert len(calls) == 1  # only the record nobody vouched for
