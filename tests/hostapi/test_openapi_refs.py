"""Path items and webhooks written as $refs are followed the same way everywhere:
host functions, validation, event payloads and the three PDKs."""

from __future__ import annotations

from pathlib import Path

import pytest

from c_build import build
from conftest import ROOT
from hostwire import PluginError, load_openapi
from hostwire._events.bus import EventBus
from hostwire._pdk.generate import LANGUAGES, generate, render
from hostwire.testing import PluginHarness

REFS = ROOT / "tests" / "pdk" / "refs.yaml"
NOTE = {"id": "n1", "text": "hello"}

PLUGIN = r"""
#include "hostwire.h"

HW_EXPORT(edit) {
    api_get_note_response got = api_get_note(HW_STR("n1"));
    if (!got.ok) return hw_fail("get_note: %S", got.error.message);
    Note changed = *got.body;
    changed.text = hw_str_c(hw_config("text").ptr != NULL ? hw_config("text").ptr : "edited");
    api_put_note_response put = api_put_note(HW_STR("n1"), &changed);
    hw_output(hw_format("{\"status\":%d,\"code\":%j}", put.status, hw_json_string(put.error.code)));
    return 0;
}

static int before_save(const NoteEvent *event, NoteVerdict *verdict) {
    if (hw_str_eq_c(event->data->record->text, "no")) {
        verdict->reject = hw_new(NoteVerdictReject);
        verdict->reject->reason = HW_STR("no");
    }
    return 0;
}
HW_ON_NOTE_BEFORE_SAVE(before_save)

static int after_save(const NoteEvent *event) {
    hw_log_info("saved %S", event->data->record->id);
    return 0;
}
HW_ON_NOTE_AFTER_SAVE(after_save)
"""


def test_operations_and_webhooks_behind_refs_are_resolved() -> None:
    spec = load_openapi(REFS)
    assert sorted(spec.operations) == ["get_note", "list_tags", "put_note"]
    get_note = spec.operations["get_note"]
    assert [p.name for p in get_note.parameters] == ["id"]  # the path item's parameters
    assert "responses" in get_note.node.value  # the operation itself, not the $ref
    assert sorted(spec.webhooks) == ["note.after_save", "note.before_save"]
    for name, webhook in spec.webhooks.items():
        assert webhook.body is not None, name
        assert spec.webhook_body(name) == webhook.body
    assert spec.webhooks["note.after_save"].summary == "After a note was saved."


@pytest.mark.parametrize("lang", LANGUAGES)
def test_pdk_generate_follows_refs(lang: str, tmp_path: Path) -> None:
    written = generate(REFS, lang, tmp_path)
    text = "\n".join(path.read_text(encoding="utf-8") for path in written)
    for name in ("get_note", "put_note", "list_tags", "note_before_save", "note_after_save"):
        assert name in text, name
    assert render(load_openapi(REFS), lang) == render(load_openapi(REFS), lang)


def test_the_webhook_payloads_are_validated_at_run_time() -> None:
    bus = EventBus([], spec=load_openapi(REFS))
    for step in ("before_save", "after_save"):
        assert bus.envelope("note", step, NOTE, None, {})["data"]["record"] == NOTE
        with pytest.raises(ValueError, match="does not match its webhook"):
            bus.envelope("note", step, {**NOTE, "text": "x" * 21}, None, {})


@pytest.fixture(scope="module")
def refs_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pdk = tmp_path_factory.mktemp("refs-pdk")
    generate(REFS, "c", pdk)
    return build(pdk, PLUGIN, tmp_path_factory.mktemp("refs-plugin") / "plugin.wasm")


def test_a_c_plugin_calls_the_host_functions_behind_refs_and_they_validate(
    refs_wasm: Path,
) -> None:
    with PluginHarness(refs_wasm, spec=REFS) as h:
        h.mock("getNote", NOTE)
        h.mock("putNote", {**NOTE, "text": "edited"})
        assert h.call("edit") == {"status": 200, "code": None}
        assert [(c.operation, c.path, c.body) for c in h.calls] == [
            ("getNote", "/notes/n1", None),
            ("putNote", "/notes/n1", {"id": "n1", "text": "edited"}),
        ]
    with PluginHarness(refs_wasm, spec=REFS, config={"text": "much too long for a note"}) as h:
        h.mock("getNote", NOTE)
        assert h.call("edit") == {"status": 400, "code": "invalid_request"}
        assert [c.operation for c in h.calls] == ["getNote"]  # the bad call reached nothing


def test_a_c_plugin_handles_the_events_behind_refs(refs_wasm: Path) -> None:
    with PluginHarness(refs_wasm, spec=REFS) as h:
        assert h.fire("note.before_save", record={**NOTE, "text": "no"}) == {
            "reject": {"reason": "no"}
        }
        assert h.fire("note.after_save", record=NOTE) is None
        with pytest.raises(ValueError, match="does not match its webhook"):
            h.fire("note.after_save", record={"id": 1})
        with pytest.raises(PluginError, match="not a NoteEvent"):
            h.call("note_after_save", {"id": "e", "type": "t", "timestamp": "t", "data": {}})
