"""``--log-format json``: one JSON object per line, with the request's and plug-in's fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from hostwire import current_request_id
from hostwire._logformat import FORMAT_ENV, JsonFormatter
from hostwire.cli import main


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    root.handlers[:] = saved
    root.setLevel(level)


def lines(emit) -> list[dict[str, object]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("hostwire.test_logformat")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_line_is_json_with_the_fields_given() -> None:
    def emit(logger: logging.Logger) -> None:
        logger.warning(
            'Plug-in "%s" failed', "night-mode",
            extra={"plugin": "night-mode", "export": "light_after_update", "outcome": "timeout",
                   "request_id": "req-1"},
        )  # fmt: skip
        token = current_request_id.set("req-2")
        try:
            logger.info("plain\nwith a newline")
        finally:
            current_request_id.reset(token)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("it broke")

    first, second, third = lines(emit)
    assert first["message"] == 'Plug-in "night-mode" failed'
    assert first["level"] == "warning"
    assert first["logger"] == "hostwire.test_logformat"
    assert str(first["time"]).endswith("+00:00")
    assert (first["plugin"], first["export"], first["outcome"], first["request_id"]) == (
        "night-mode", "light_after_update", "timeout", "req-1",
    )  # fmt: skip
    assert "plugin" not in second
    assert second["message"] == "plain\nwith a newline"
    assert second["request_id"] == "req-2"  # from the context, as lightcontrol sets it
    assert "request_id" not in third
    assert "RuntimeError: boom" in str(third["exc"])


def test_the_cli_option_and_the_environment_choose_the_format(
    root_handlers: None, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv(FORMAT_ENV, "text")  # undone after the test, as main sets it too
    missing = str(tmp_path / "gateway.yaml")
    assert main(["gateway", "--config", missing, "--log-format", "json"]) == 2
    formatters = [h.formatter for h in logging.getLogger().handlers]
    assert any(isinstance(f, JsonFormatter) for f in formatters)
    monkeypatch.setenv(FORMAT_ENV, "xml")
    assert main(["gateway", "--config", missing]) == 64
    assert "HOSTWIRE_LOG_FORMAT='xml'" in capsys.readouterr().err


def test_a_deliverys_lines_name_its_plugin_export_event_and_outcome(tmp_path) -> None:
    # An operator filters the JSON log by plug-in, event id or outcome, not by message text.
    from event_plugins import Recorder, handler, states, wait_for, write_event
    from hostwire import Outbox

    stream = io.StringIO()
    capture = logging.StreamHandler(stream)
    capture.setFormatter(JsonFormatter())
    logger = logging.getLogger("hostwire.outbox")
    logger.addHandler(capture)
    outbox = Outbox(tmp_path / "app.db", max_attempts=3, backoff_s=0.01, max_backoff_s=0.02)
    try:
        with handler("broken", Recorder(fail_first=5), exports=("light_after_update",)) as broken:
            event = write_event(outbox, "light/default", [("broken", "light_after_update")])
            outbox.start([broken])
            wait_for(lambda: states(outbox, "broken") == ["dead"], "the dead letter")
            outbox.stop()
    finally:
        logger.removeHandler(capture)
        outbox.close()
    found = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [line for line in found if line.get("event_id") == event]
    assert [line["outcome"] for line in mine] == ["retry", "retry", "dead"]
    assert {(line["plugin"], line["export"]) for line in mine} == {("broken", "light_after_update")}
    assert [line["level"] for line in mine] == ["warning", "warning", "error"]
