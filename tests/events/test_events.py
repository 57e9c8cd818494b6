"""Lifecycle events (Contract 2): the generic bus's before-events, with test plug-ins.

The outbox's after-events are tested in ``test_outbox.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

import wat
from conftest import compile_wat
from event_plugins import LIGHT, Recorder, handler
from hostwire import (
    EventBus,
    EventHandlerError,
    EventRejected,
    Limits,
    Plugin,
    Subscriber,
    load_openapi,
)


@pytest.fixture(scope="module")
def light_spec() -> Any:
    return load_openapi("openapi/light.yaml")


def before_save(bus: EventBus, record: dict[str, Any] | None = None) -> dict[str, Any]:
    return bus.before("light", "before_save", record or dict(LIGHT), dict(LIGHT), {})


# -- before-events --------------------------------------------------------------


def test_only_plugins_that_export_the_event_are_called(light_spec: Any) -> None:
    recorder = Recorder()
    with (
        handler("saver", recorder) as saver,
        handler("other", recorder, exports=("light_after_update",)) as other,
    ):
        bus = EventBus([Subscriber(saver), Subscriber(other)], spec=light_spec)
        assert bus.handlers("light", "before_save") == [Subscriber(saver)]
        assert bus.handlers("light", "before_destroy") == []
        assert before_save(bus) == LIGHT
    ((plugin, envelope),) = recorder.seen
    assert plugin == "saver"
    assert envelope["type"] == "light.before_save"
    assert envelope["id"].startswith("evt_")
    assert envelope["data"] == {"record": LIGHT, "previous": LIGHT, "changes": {}}
    assert bus.problems(envelope) == []  # it matches the webhook declared in light.yaml


def test_handlers_run_in_order_and_see_replaced_records(light_spec: Any) -> None:
    recorder = Recorder()
    red = {**LIGHT, "color": "red"}
    dim = {**LIGHT, "color": "red", "brightness": 10}
    with (
        handler("first", recorder, answer={"record": red}) as first,
        handler("second", recorder, answer={}) as second,
        handler("third", recorder, answer={"record": dim}) as third,
    ):
        bus = EventBus([Subscriber(p) for p in (first, second, third)], spec=light_spec)
        assert before_save(bus) == dim
    assert [p for p, _ in recorder.seen] == ["first", "second", "third"]
    assert [e["data"]["record"]["color"] for _, e in recorder.seen] == ["white", "red", "red"]
    # One event: every handler got the same id.
    assert len({e["id"] for _, e in recorder.seen}) == 1


def test_a_rejection_stops_the_chain_and_names_the_plugin(light_spec: Any) -> None:
    recorder = Recorder()
    with (
        handler("guard", recorder, answer={"reject": {"reason": "too bright at night"}}) as guard,
        handler("after-guard", recorder) as later,
    ):
        bus = EventBus([Subscriber(guard), Subscriber(later)], spec=light_spec)
        with pytest.raises(EventRejected) as caught:
            before_save(bus)
    assert str(caught.value) == 'Plug-in "guard" rejected the change: too bright at night'
    assert (caught.value.plugin, caught.value.reason) == ("guard", "too bright at night")
    assert [p for p, _ in recorder.seen] == ["guard"]


@pytest.mark.parametrize(
    ("answer", "trap", "message"),
    [
        pytest.param(None, True, "trapped", id="trap"),
        pytest.param("not json", False, "returned invalid JSON", id="garbage"),
        pytest.param({"ok": True}, False, "must answer {}", id="unknown-answer"),
        pytest.param(
            {"record": [1]}, False, "replaced the record with list", id="record-not-object"
        ),
        pytest.param(
            {"record": {**LIGHT, "color": "purple"}},
            False,
            "returned an invalid record: /data/record/color",
            id="invalid-record",
        ),
    ],
)
def test_failing_handlers_follow_their_policy(
    light_spec: Any, answer: Any, trap: bool, message: str
) -> None:
    recorder = Recorder()
    with handler("flaky", recorder, answer=answer, trap=trap) as flaky:
        closed = EventBus([Subscriber(flaky, "fail_closed")], spec=light_spec)
        with pytest.raises(EventHandlerError) as caught:
            before_save(closed)
        assert message in str(caught.value)
        assert 'plug-in "flaky" is fail_closed' in str(caught.value)
        assert caught.value.plugin == "flaky"
        opened = EventBus([Subscriber(flaky, "fail_open")], spec=light_spec)
        assert before_save(opened) == LIGHT  # the change goes on, unchanged


def test_a_timeout_follows_the_policy(light_spec: Any) -> None:
    slow = Plugin(
        "slow",
        compile_wat(
            '(module (memory (export "memory") 1)'
            ' (func (export "light_before_save") (result i32) (loop $l (br $l)) (i32.const 0)))'
        ),
        limits=Limits(timeout_ms=50),
    )
    with slow:
        with pytest.raises(EventHandlerError, match="timed out after 50 ms"):
            before_save(EventBus([Subscriber(slow)], spec=light_spec))
        assert before_save(EventBus([Subscriber(slow, "fail_open")], spec=light_spec)) == LIGHT


# -- hardening (issue 11) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "message"),
    [
        pytest.param(b"\xff\xfe", "returned invalid JSON: it is not UTF-8", id="bad-utf8"),
        pytest.param(b"[" * 100_000, "is JSON nested too deeply", id="deep-json"),
    ],
)
def test_unreadable_before_answers_are_plugin_errors(
    light_spec: Any, output: bytes, message: str
) -> None:
    class Answers(Plugin):
        def call(self, export: str, data: bytes | str = b"", **extra: Any) -> bytes:
            return output

    recorder = Recorder()
    with handler("odd", recorder) as plugin:
        plugin.__class__ = Answers
        with pytest.raises(EventHandlerError, match=message) as caught:
            before_save(EventBus([Subscriber(plugin)], spec=light_spec))
    assert caught.value.plugin == "odd"
    assert "codec" not in str(caught.value)


def test_a_fail_open_failure_is_logged_on_one_escaped_line(
    light_spec: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The export fails with error_set(config "message"): its own words reach the log.
    module = f"""(module
{wat.KERNEL}
  (memory (export "memory") 1)
  (data (i32.const 0) "message")
{wat.TO_BLOCK}
  (func (export "light_before_save") (result i32)
    (call $error_set (call $config_get (call $to_block (i32.const 0) (i32.const 7))))
    (i32.const 1)))"""
    words = "no \x1b[31mred\x1b[0m today \u202eeulb"
    failing = Plugin("flaky", compile_wat(module), config={"message": words})
    with failing, caplog.at_level("WARNING", logger="hostwire"):
        assert before_save(EventBus([Subscriber(failing, "fail_open")], spec=light_spec)) == LIGHT
    (line,) = [r.getMessage() for r in caplog.records if "fail_open" in r.getMessage()]
    assert line.isprintable()
    assert "no \\x1b[31mred\\x1b[0m today \\u202eeulb" in line
