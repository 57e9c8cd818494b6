"""Log lines: escaping of values clients and plug-ins control, plug-in log routing."""

from __future__ import annotations

import pytest

from hostwire import Plugin, log_safe


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        pytest.param("GET /lights/desk", "GET /lights/desk", id="plain"),
        pytest.param("Küche 💡", "Küche 💡", id="printable-unicode-kept"),
        pytest.param("a\nb\rc\td", "a\\nb\\rc\\td", id="line-breaks"),
        pytest.param("nul\x00esc\x1b[2J", "nul\\x00esc\\x1b[2J", id="controls"),
        pytest.param("next\x85line\u2028para\u2029", "next\\x85line\\u2028para\\u2029", id="c1"),
        pytest.param("admin\u202etxt.exe", "admin\\u202etxt.exe", id="bidi-override"),
        pytest.param("zero\u200bwidth", "zero\\u200bwidth", id="format-character"),
        pytest.param('say "hi" \\ bye', 'say \\"hi\\" \\\\ bye', id="quotes-and-backslash"),
        pytest.param("\ud800", "\\ud800", id="lone-surrogate"),
    ],
)
def test_log_safe_escapes_what_could_forge_or_disguise_a_line(text: str, logged: str) -> None:
    assert log_safe(text) == logged
    assert len(log_safe(text).splitlines()) == 1  # splitlines knows every line break


def test_an_escaped_value_cannot_be_confused_with_an_escape() -> None:
    # A backslash is escaped too: "\\n" written by a client is not a line break.
    assert log_safe("\\n") != log_safe("\n")


def test_a_plugins_multi_line_log_message_is_one_escaped_line(
    hostile: Plugin, caplog: pytest.LogCaptureFixture
) -> None:
    forged = 'a\nb\n2026-01-01T00:00:00Z ERROR hostwire.hooks: forged "line" \u202eend'
    with caplog.at_level("INFO", logger="hostwire.plugin.hostile"):
        hostile.call("log", forged.encode())
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        'a\\nb\\n2026-01-01T00:00:00Z ERROR hostwire.hooks: forged \\"line\\" \\u202eend'
    ]
    assert [r.name for r in caplog.records] == ["hostwire.plugin.hostile"] * 2
