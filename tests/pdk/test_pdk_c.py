"""The C PDK: generated from OpenAPI, compiled for wasm32 with zig's clang, run under hostwire."""

from __future__ import annotations

import base64
import json
import logging
import math
import random
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from c_build import build, cc
from conftest import ROOT
from hostwire import Limits, PluginError, PluginMemoryError
from hostwire._pdk.c import BUILD, SOURCES, c_ident, c_string, runtime_names, upper_snake
from hostwire._pdk.generate import generate
from hostwire.testing import MockReply, PluginHarness
from pdk_documents import FASTAPI, write_clash_document
from pdk_documents import document as pdk_document

LIGHT_SPEC = ROOT / "openapi" / "light.yaml"
AWKWARD_SPEC = ROOT / "tests" / "pdk" / "awkward.yaml"


def light(light_id: str = "lamp-1", **fields: object) -> dict[str, object]:
    record = {
        "id": light_id,
        "name": "Desk",
        "status": "on",
        "color": "blue",
        "brightness": 50,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "revision": 3,
    }
    return {**record, **fields}


@pytest.fixture(scope="module")
def light_pdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("light-pdk")
    generate(LIGHT_SPEC, "c", out)
    return out


@pytest.fixture(scope="module")
def awkward_pdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("awkward-pdk")
    generate(AWKWARD_SPEC, "c", out)
    return out


# -- the generated code ---------------------------------------------------------


@pytest.mark.parametrize("document", ["light", "awkward"])
def test_each_generated_source_compiles_as_strict_c99(
    document: str, light_pdk: Path, awkward_pdk: Path, tmp_path: Path
) -> None:
    pdk = light_pdk if document == "light" else awkward_pdk
    assert sorted(p.name for p in pdk.glob("*.c")) == sorted(SOURCES)
    for source in SOURCES:
        cc(f"-I{pdk}", "-c", str(pdk / source), "-o", str(tmp_path / f"{source}.o"))


@pytest.mark.parametrize("document", ["light", "awkward"])
def test_the_readme_example_builds(
    document: str, light_pdk: Path, awkward_pdk: Path, tmp_path: Path
) -> None:
    pdk = light_pdk if document == "light" else awkward_pdk
    readme = (pdk / "README.md").read_text(encoding="utf-8")
    example = readme.split("```c\n", 1)[1].split("```", 1)[0]
    assert "HW_ON_" in example
    assert "HW_EXPORT(run)" in example
    build(pdk, example, tmp_path / "plugin.wasm")


def test_names_are_mangled_into_c_identifiers() -> None:
    assert [c_ident(n) for n in ("part-no", "default", "9lives", "class", "NULL", "hw_x")] == [
        "part_no",
        "default_",
        "_9lives",
        "class_",
        "NULL_",
        "xhw_x",
    ]
    assert [upper_snake(v) for v in ("two words", "with-dash", "TurnOn", "9lives", "")] == [
        "TWO_WORDS",
        "WITH_DASH",
        "TURN_ON",
        "9LIVES",
        "EMPTY",
    ]
    assert c_string('a"b\\c?é\n') == '"a\\"b\\\\c\\?\\303\\251\\012"'


def test_awkward_names_become_usable_c(awkward_pdk: Path) -> None:
    models = (awkward_pdk / "hw_models.h").read_text()
    for declaration in (
        "Kind_TWO_WORDS",
        "Kind_NULL",
        "Kind_9LIVES",
        "int64_t default_;",
        "double for_;",
        "hw_str class_;",
        "bool class__null;",
        "hw_str owner_name;",
        "hw_str ownerName;",
        "hw_int_array_array matrix;",
        "ThingOwnerAddress *address;",
    ):
        assert declaration in models, declaration
    api = (awkward_pdk / "hw_api.h").read_text()
    assert (
        "api_delete_things_id_parts_part_no(hw_str id, int64_t part_no, "
        "const api_delete_things_id_parts_part_no_options *options)" in api
    )
    assert "hw_str If_Match;" in api
    assert "Thing_array body;" in api  # an array answer is held inline


# -- a plug-in on the light PDK -------------------------------------------------

LIGHT_PLUGIN = r"""
#include "hostwire.h"

/* config "blocked": refuse that name; config "force_color": rewrite the colour. */
static int on_save(const LightEvent *event, BeforeEventResult *result) {
    const Light *record = event->data->record;
    hw_str blocked = hw_config("blocked");
    if (blocked.ptr != NULL && hw_str_eq(record->name, blocked)) {
        result->reject = hw_new(BeforeEventResultReject);
        result->reject->reason = hw_format("the name %S is blocked", record->name);
        return 0;
    }
    hw_str force = hw_config("force_color");
    Color color;
    if (force.ptr != NULL && Color_from_string(force, &color) && color != record->color) {
        Light *changed = hw_new(Light);
        *changed = *record;
        changed->color = color;
        result->record = changed;
    }
    return 0;
}
HW_ON_LIGHT_BEFORE_SAVE(on_save)

static int after_update(const LightEvent *event) {
    if (event->data->previous == NULL) return hw_fail("an update without a previous light");
    hw_log_info("updated %S from %s to %s", event->data->record->id,
                Color_to_string(event->data->previous->color),
                Color_to_string(event->data->record->color));
    return 0;
}
HW_ON_LIGHT_AFTER_UPDATE(after_update)

/* Reads the default light, turns it red, renames and dims light input.id. */
HW_EXPORT(sync) {
    hw_str id;
    if (!hw_read_str(hw_json_get(hw_input_json(), "id"), &id)) {
        return hw_fail("sync: id: %s", hw_error());
    }
    api_get_states_response states = api_get_states();
    if (!states.ok) return hw_fail("get_states: %S", states.error.message);
    SetLightColorRequest red = {0};
    red.action = SetLightColorRequestAction_TO_RED;
    api_set_light_color_response set = api_set_light_color(&red);
    if (!set.ok) return hw_fail("set_light_color: %S", set.error.message);
    LightUpdate change = {0};
    change.name = HW_STR("Desk \"lamp\" \xe2\x98\x80");
    change.brightness = hw_config_int("brightness", 10);
    change.has_brightness = true;
    api_update_light_response updated = api_update_light(id, &change);
    if (!updated.ok) {
        return hw_fail("update_light: %S (%S)", updated.error.message, updated.error.code);
    }
    hw_output(hw_format("{\"before\":\"%s\",\"after\":\"%s\",\"name\":%j,\"brightness\":%lld}",
                        Color_to_string(states.body->color), Color_to_string(set.body->color),
                        hw_json_string(updated.body->name), (long long)updated.body->brightness));
    return 0;
}

/* How a call of get_states went. */
HW_EXPORT(states) {
    api_get_states_response r = api_get_states();
    hw_output(hw_format("{\"ok\":%s,\"status\":%d,\"code\":%j,\"message\":%j,\"details\":%j,\"body\":%S}",
                        r.ok ? "true" : "false", r.status, hw_json_string(r.error.code),
                        hw_json_string(r.error.message), r.error.details, States_to_json(r.body)));
    return 0;
}

HW_EXPORT(deliveries) {
    api_list_event_deliveries_options options = {0};
    options.plugin = HW_STR("night-mode");
    options.state = DeliveryState_DEAD;
    options.has_state = true;
    options.limit = 5;
    options.has_limit = true;
    api_list_event_deliveries_response r = api_list_event_deliveries(&options);
    if (!r.ok) return hw_fail("list_event_deliveries: %S", r.error.message);
    hw_output(DeliveryList_to_json(r.body));
    return 0;
}

/* Any JSON through the reader and writer; numbers keep their text. */
HW_EXPORT(echo) {
    const hw_json *value = hw_input_json();
    if (value == NULL) return hw_fail("echo: %s", hw_error());
    hw_output_json(value);
    return 0;
}

/* Any JSON rebuilt with the builders: numbers are printed afresh. */
static hw_json *rebuild(const hw_json *v) {
    switch (v->kind) {
    case HW_JSON_NULL: return hw_json_null();
    case HW_JSON_BOOL: return hw_json_bool(v->boolean);
    case HW_JSON_INT: return hw_json_int(v->integer);
    case HW_JSON_FLOAT: return hw_json_number(v->number);
    case HW_JSON_STRING: return hw_json_string(hw_str_copy(v->string.ptr, v->string.len));
    case HW_JSON_ARRAY: {
        hw_json *array = hw_json_array();
        HW_JSON_EACH(item, v) hw_json_push(array, rebuild(item));
        return array;
    }
    case HW_JSON_OBJECT: {
        hw_json *object = hw_json_object();
        HW_JSON_EACH(member, v) hw_json_set(object, member->key.ptr, rebuild(member));
        return object;
    }
    }
    return NULL;
}

HW_EXPORT(rebuild) {
    const hw_json *value = hw_input_json();
    if (value == NULL) return hw_fail("rebuild: %s", hw_error());
    hw_output_json(rebuild(value));
    return 0;
}

HW_EXPORT(light) {
    Light light;
    if (!Light_parse(hw_input(), &light)) return hw_fail("light: %s", hw_error());
    hw_output(Light_to_json(&light));
    return 0;
}

HW_EXPORT(event) {
    LightEvent event;
    if (!LightEvent_parse(hw_input(), &event)) return hw_fail("event: %s", hw_error());
    hw_output(LightEvent_to_json(&event));
    return 0;
}

/* An HTTP pre-hook: answers /teapot itself, marks the context for the post-hook. */
static int pre_hook(const HttpPreHookInput *input, HttpPreHookOutput *output) {
    hw_json_set(output->context, "seen", hw_json_string(input->request->method));
    if (hw_str_eq_c(input->request->path, "/teapot")) {
        output->response = hw_new(HttpResponse);
        output->response->status_code = 418;
        output->response->headers = hw_json_object();
        hw_json_set(output->response->headers, "x-tea", hw_json_string(HW_STR("yes")));
        output->response->body = HW_STR("");
        output->has_response = true;
        output->has_has_response = true;
    }
    return 0;
}
HW_ON_HTTP_PRE_HOOK(pre_hook)

HW_EXPORT(usage) {
    hw_output(hw_format("{\"peak\":%zu,\"pages\":%zu}", hw_arena_peak(), hw_memory_size() / 65536));
    return 0;
}
"""


@pytest.fixture(scope="module")
def light_wasm(light_pdk: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(light_pdk, LIGHT_PLUGIN, tmp_path_factory.mktemp("light-plugin") / "plugin.wasm")


def harness(wasm: Path, **options: Any) -> PluginHarness:
    return PluginHarness(wasm, spec=LIGHT_SPEC, **options)


def test_a_plugin_calls_operations_with_and_without_a_body(light_wasm: Path) -> None:
    with harness(light_wasm, config={"brightness": 7}) as h:
        h.mock("getStates", {"status": "on", "color": "blue"})
        h.mock("setLightColor", {"status": "on", "color": "red"})
        h.mock("updateLight", responder=lambda call: MockReply(200, light(**call.body)))
        assert h.call("sync", {"id": "lamp/1"}) == {
            "before": "blue",
            "after": "red",
            "name": 'Desk "lamp" ☀',
            "brightness": 7,
        }
        assert [(c.operation, c.method, c.path, c.body) for c in h.calls] == [
            ("getStates", "GET", "/states", None),
            ("setLightColor", "POST", "/light_color", {"action": "ToRed"}),
            ("updateLight", "PATCH", "/lights/lamp/1", {"name": 'Desk "lamp" ☀', "brightness": 7}),
        ]


def test_a_config_default_applies_when_the_key_is_unset(light_wasm: Path) -> None:
    with harness(light_wasm) as h:
        h.mock("getStates", {"status": "off", "color": "white"})
        h.mock("setLightColor", {"status": "off", "color": "red"})
        h.mock("updateLight", responder=lambda call: MockReply(200, light(**call.body)))
        assert h.call("sync", {"id": "x"})["brightness"] == 10


def test_optional_parameters_go_in_the_query(light_wasm: Path) -> None:
    with harness(light_wasm) as h:
        h.mock("listEventDeliveries", {"deliveries": []})
        assert h.call("deliveries") == {"deliveries": []}
        (call,) = h.calls
        assert call.query == [("plugin", "night-mode"), ("state", "dead"), ("limit", "5")]


@pytest.mark.parametrize(
    ("config", "record", "expected"),
    [
        pytest.param({}, light(), {}, id="go-on"),
        pytest.param({"force_color": "green"}, light(), {"record": light(color="green")},
                     id="replace"),
        pytest.param({"force_color": "blue"}, light(), {}, id="already-so"),
        pytest.param({"blocked": "Desk"}, light(),
                     {"reject": {"reason": "the name Desk is blocked"}}, id="reject"),
    ],
)  # fmt: skip
def test_a_before_event_handler_goes_on_replaces_or_rejects(
    light_wasm: Path, config: dict[str, str], record: dict[str, object], expected: object
) -> None:
    with harness(light_wasm, config=config) as h:
        assert h.fire("light.before_save", record=record, previous=None) == expected


def test_an_after_event_handler_runs_and_logs(
    light_wasm: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hostwire.plugin")
    with harness(light_wasm) as h:
        before, after = light(color="blue"), light(color="red")
        assert h.fire("light.after_update", record=after, previous=before) is None
        assert "updated lamp-1 from blue to red" in caplog.text
        with pytest.raises(PluginError, match="an update without a previous light"):
            h.fire("light.after_update", record=after, previous=None)


def test_an_http_pre_hook_keeps_the_context_and_may_answer(light_wasm: Path) -> None:
    request = {"method": "GET", "path": "/lights", "headers": {}, "query": {}, "body": ""}
    with harness(light_wasm) as h:
        assert h.call("http_pre_hook", {"context": {"user": 7}, "request": request}) == {
            "context": {"user": 7, "seen": "GET"}
        }
        teapot = {**request, "path": "/teapot", "method": "BREW"}
        assert h.call("http_pre_hook", {"context": {}, "request": teapot}) == {
            "context": {"seen": "BREW"},
            "response": {"status_code": 418, "headers": {"x-tea": "yes"}, "body": ""},
            "has_response": True,
        }


def test_a_handler_given_the_wrong_payload_fails_naming_the_field(light_wasm: Path) -> None:
    with harness(light_wasm) as h, pytest.raises(PluginError) as failure:
        h.call("light_before_save", {"id": "evt_1", "type": "light.before_save",
                                     "timestamp": "t", "data": {"record": {"id": 1}}})  # fmt: skip
    assert "light_before_save: the input is not a LightEvent: data.record.id: expected a " \
        "string, got an integer" in str(failure.value)  # fmt: skip


def test_operation_errors_are_typed(light_wasm: Path) -> None:
    with harness(light_wasm, grants=["getStates"]) as h:
        h.mock("getStates", {"status": "on", "color": "green"})
        assert h.call("states") == {
            "ok": True,
            "status": 200,
            "code": None,
            "message": None,
            "details": None,
            "body": {"status": "on", "color": "green"},
        }
        details = [{"field": "/x", "message": "bad"}]
        error = {"error": {"code": "gone", "message": "No light.", "details": details}}
        h.mock("getStates", error, status=404)
        assert h.call("states") == {
            "ok": False,
            "status": 404,
            "code": "gone",
            "message": "No light.",
            "details": details,
            "body": None,
        }
        h.mock("getStates", {"status": "on", "color": "pink"}, check=False)
        answer = h.call("states")
        assert (answer["ok"], answer["status"], answer["code"]) == (False, 200, "bad_response")
        assert 'color: expected one of red, green, blue, white, got "pink"' in answer["message"]
        h.mock("getStates", None, status=500)
        answer = h.call("states")
        assert (answer["code"], answer["message"]) == ("http_error", "HTTP status 500")
    with harness(light_wasm, grants=["listLights"]) as h:
        answer = h.call("states")
        assert (answer["ok"], answer["status"], answer["code"]) == (False, 403, "not_granted")
        assert h.calls == []


def test_typed_models_round_trip_and_explain_mismatches(light_wasm: Path) -> None:
    with harness(light_wasm) as h:
        assert h.call("light", light()) == light()
        event = {
            "id": "evt_1",
            "type": "light.before_update",
            "timestamp": "2026-01-01T00:00:00Z",
            "data": {
                "record": light(color="red"),
                "previous": None,
                "changes": {"color": {"from": "blue", "to": "red"}, "n": [1.5, None, {}]},
            },
        }
        assert h.call("event", event) == event
        for bad, message in [
            (light(brightness="high"), "brightness: expected an integer, got a string"),
            (light(color="pink"), 'color: expected one of red, green, blue, white, got "pink"'),
            ({k: v for k, v in light().items() if k != "name"}, "name: required but missing"),
            (light(id=None), "id: expected a string, got null"),
            (light(brightness=2**63), "brightness: expected an integer that fits 64 bits"),
            ([], "expected an object, got an array"),
        ]:
            with pytest.raises(PluginError, match="light: " + message):
                h.call("light", bad)
        with pytest.raises(PluginError, match=r"invalid JSON at byte 9: expected ',' or '}'"):
            h.call_raw("light", b'{"id": 1 "x"}')


# -- JSON and numbers -----------------------------------------------------------

EDGE_CASES = {
    "escapes": 'tab\t nl\n cr\r "quoted" back\\slash /slash \b\f \x00 \x1f \x7f',
    "unicode": "é ☀ 😀 𝄞 中文 \u2028",
    "ints": [0, -1, 9007199254740993, 9223372036854775807, -9223372036854775808],
    "floats": [0.5, -2.5e-07, 1e300, 5e-324, 1.7976931348623157e308, -0.0],
    "nested": [[[], [[]]], [None, True, False], {"a": {"b": {"c": [None]}}}],
    "nulls": {"x": None, "y": [None, None]},
    "empty": {"": "", "s": "", "o": {}, "a": []},
}


def test_json_edge_cases_round_trip(light_wasm: Path) -> None:
    with harness(light_wasm) as h:
        assert h.call("echo", EDGE_CASES) == EDGE_CASES
        assert h.call("rebuild", EDGE_CASES) == EDGE_CASES
        # Big numbers keep their text through a JSON value; rebuilt, they become doubles.
        big = b"[123456789012345678901234567890,1E400,0.10000000000000000000001,-0]"
        assert h.call_raw("echo", big) == big
        assert json.loads(h.call_raw("rebuild", big)) == [1.2345678901234568e29, None, 0.1, 0]
        # Halfway between two doubles: ties go to the even one.
        ties = b"[9007199254740993.0,9007199254740995.0,4.9406564584124654e-324]"
        assert h.call_raw("rebuild", ties) == b"[9007199254740992.0,9007199254740996.0,5e-324]"
        # \u escapes become UTF-8 (surrogate pairs joined, lone ones replaced).
        escaped = b'["\\u00e9\\u2600\\ud83d\\ude00","\\ud800x","\\/"]'
        assert json.loads(h.call_raw("echo", escaped)) == ["é☀😀", "\ufffdx", "/"]
        # Output is valid UTF-8 even when a string is not.
        assert h.call_raw("echo", b'"a\xff\xc3(b"') == '"a\ufffd\ufffd(b"'.encode()
        for bad in (b"", b"[1,]", b'{"a" 1}', b"01", b"1.", b'"\x01"', b"[" * 200 + b"]" * 200):
            with pytest.raises(PluginError, match="invalid JSON"):
                h.call_raw("echo", bad)


def test_doubles_read_and_print_exactly(light_wasm: Path) -> None:
    rng = random.Random(2026)

    def any_double() -> float:
        while True:
            value: float = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
            if math.isfinite(value):
                return value

    typical = [round(rng.uniform(-1000, 1000), rng.randint(0, 6)) for _ in range(3000)]
    typical += [0.1, 0.2, 0.3, 1 / 3, 1e23, 1e16, 1e15, 0.0001, 1e-05, 100.0, 123456.789]
    anything = [any_double() for _ in range(3000)]
    scientific = [float(f"{rng.randint(1, 10**17)}e{rng.randint(-340, 290)}") for _ in range(3000)]
    with harness(light_wasm) as h:
        for values in (typical, anything, scientific):
            text = h.call_raw("rebuild", json.dumps(values)).decode()
            assert json.loads(text) == values  # every double reads back as itself
        # Typical values print as Python prints them (shortest, same style).
        assert h.call_raw("rebuild", json.dumps(typical)).decode() == json.dumps(
            typical, separators=(",", ":")
        )


# -- memory -----------------------------------------------------------------------


def test_5000_calls_do_not_grow_memory(light_wasm: Path) -> None:
    big = light(name="x" * 50_000)
    with harness(light_wasm, config={"force_color": "green"}, limits=Limits(memory_mib=4)) as h:
        h.mock("getStates", {"status": "on", "color": "blue"})
        h.mock("setLightColor", {"status": "on", "color": "red"})
        h.mock("updateLight", responder=lambda call: MockReply(200, light(**call.body)))
        for _ in range(10):
            h.call("light", big)
            h.call("sync", {"id": "lamp-1"})
            h.fire("light.before_save", record=light(), previous=None)
        warm = h.call("usage")
        for _ in range(5000):
            h.call("sync", {"id": "lamp-1"})
            h.fire("light.before_save", record=light(), previous=None)
            h.call("light", big)
        assert h.call("usage") == warm
        assert warm["peak"] > 100_000  # the big light was parsed and written back
        assert len(h.calls) == 3 * 5010


def test_running_out_of_memory_fails_the_call_not_the_plugin(light_wasm: Path) -> None:
    with harness(light_wasm, limits=Limits(memory_mib=3)) as h:
        with pytest.raises(PluginMemoryError, match="ran out of memory"):
            h.call("echo", [{"a": i} for i in range(40_000)])
        assert h.call("echo", {"ok": 1}) == {"ok": 1}


# -- a plug-in on the awkward PDK -------------------------------------------------

AWKWARD_PLUGIN = r"""
#include "hostwire.h"

HW_EXPORT(thing) {
    Thing thing;
    if (!Thing_parse(hw_input(), &thing)) return hw_fail("thing: %s", hw_error());
    hw_output(Thing_to_json(&thing));
    return 0;
}

static int verdict(const ThingEvent *event, Verdict *result) {
    const Thing *record = event->data->record;
    if (record->owner->address != NULL && hw_str_eq_c(record->owner->address->city, "Nowhere")) {
        result->reject = hw_new(VerdictReject);
        result->reject->reason = HW_STR("no such city");
    } else if (record->type == Kind_NULL) {
        Thing *changed = hw_new(Thing);
        *changed = *record;
        changed->type = Kind_TWO_WORDS;
        changed->class__null = true;
        changed->default_ = event->data->previous != NULL ? 1 : 0;
        changed->has_default_ = true;
        result->record = changed;
    }
    return 0;
}
HW_ON_THING_BEFORE_SAVE(verdict)

static int destroyed(const ThingEvent *event) {
    return event->data->previous == NULL ? hw_fail("no previous thing") : 0;
}
HW_ON_THING_AFTER_DESTROY(destroyed)

HW_EXPORT(calls) {
    static const hw_str tags[] = {HW_STR("a b"), HW_STR("\xc3\xa9")};
    api_list_things_options options = {0};
    options.type = Kind_WITH_DASH;
    options.has_type = true;
    options.tags.items = (hw_str *)tags;
    options.tags.count = 2;
    options.has_tags = true;
    api_list_things_response list = api_list_things(&options);
    if (!list.ok || list.body.count == 0) return hw_fail("list_things: %S", list.error.message);
    api_delete_things_id_parts_part_no_options headers = {0};
    headers.If_Match = HW_STR("v1");
    api_delete_things_id_parts_part_no_response gone =
        api_delete_things_id_parts_part_no(list.body.items[0].id, 42, &headers);
    MatchBody body = {0};
    body.self = HW_STR("me");
    body.struct_ = 2.5;
    body.has_struct_ = true;
    api_match_response matched = api_match(&body);
    NewThing fresh = {0};
    fresh.type = Kind_9LIVES;
    fresh.owner_name = HW_STR("snake");
    fresh.ownerName = HW_STR("camel");
    api_create_response created = api_create(&fresh);
    hw_output(hw_format("{\"things\":%zu,\"first\":%S,\"deleted\":%d,\"matched\":%s,\"created\":\"%s\"}",
                        list.body.count, Thing_to_json(&list.body.items[0]), gone.status,
                        matched.ok && matched.body->ok ? "true" : "false",
                        created.ok ? Kind_to_string(created.body->type) : "?"));
    return 0;
}
"""

THING = {
    "id": "t1",
    "type": "two words",
    "class": None,
    "default": 7,
    "for": 1.5,
    "parts": [{"no": 1, "label": None}, {"no": 2, "label": "x"}, {"no": 3}],
    "owner": {"name": "Ann", "address": {"city": "Oslo"}},
    "tags": ["a", "b"],
    "matrix": [[1, 2], [], [3]],
    "extra": {"any": [1, "two", None]},
}
MINIMAL_THING = {"id": "t2", "type": "9lives", "parts": [], "owner": {"name": "B"}}


@pytest.fixture(scope="module")
def awkward_wasm(awkward_pdk: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("awkward-plugin") / "plugin.wasm"
    return build(awkward_pdk, AWKWARD_PLUGIN, out)


def test_awkward_models_round_trip(awkward_wasm: Path) -> None:
    with PluginHarness(awkward_wasm, spec=AWKWARD_SPEC) as h:
        assert h.call("thing", THING) == THING
        assert h.call("thing", MINIMAL_THING) == MINIMAL_THING
        for bad, message in [
            ({**THING, "type": "nope"}, "type: expected one of plain, two words, with-dash, null"),
            ({**THING, "parts": [{"no": 1}, {"label": "x"}]}, r"parts\[1\].no: required"),
            ({**THING, "matrix": [[1], [2, "x"]]}, r"matrix\[1\]\[1\]: expected an integer"),
        ]:
            with pytest.raises(PluginError, match=message):
                h.call("thing", bad)


def test_awkward_events(awkward_wasm: Path) -> None:
    with PluginHarness(awkward_wasm, spec=AWKWARD_SPEC) as h:
        nowhere = {**THING, "owner": {"name": "C", "address": {"city": "Nowhere"}}}
        assert h.fire("thing.before_save", record=nowhere) == {"reject": {"reason": "no such city"}}
        changed = h.fire("thing.before_save", record={**THING, "type": "null"}, previous=THING)
        assert changed == {"record": {**THING, "type": "two words", "class": None, "default": 1}}
        assert h.fire("thing.before_save", record=THING) == {}
        assert h.fire("thing.after_destroy", record=THING, previous=THING) is None
        with pytest.raises(PluginError, match="no previous thing"):
            h.fire("thing.after_destroy", record=THING, previous=None)


def test_awkward_operations(awkward_wasm: Path) -> None:
    with PluginHarness(awkward_wasm, spec=AWKWARD_SPEC) as h:
        h.mock("listThings", [THING, MINIMAL_THING])
        h.mock("delete_things_id_parts_part_no", None, status=204)
        h.mock("match", {"ok": True})
        h.mock("create", {**MINIMAL_THING, "type": "class"}, status=201)
        assert h.call("calls") == {
            "things": 2,
            "first": THING,
            "deleted": 204,
            "matched": True,
            "created": "class",
        }
        assert [(c.method, c.path, c.query, c.headers, c.body) for c in h.calls] == [
            ("GET", "/things", [("type", "with-dash"), ("tags", "a b"), ("tags", "é")], {}, None),
            ("DELETE", "/things/t1/parts/42", [], {"If-Match": "v1"}, None),
            ("POST", "/match", [], {}, {"self": "me", "struct": 2.5}),
            ("POST", "/things", [], {}, {"type": "9lives", "owner_name": "snake",
                                         "ownerName": "camel"}),
        ]  # fmt: skip


# -- hostwire plugin new --lang c -------------------------------------------------


def test_a_new_c_project_builds_with_its_build_command_and_runs(tmp_path: Path) -> None:
    created = subprocess.run(
        [sys.executable, "-m", "hostwire", "plugin", "new", "demo", "--lang", "c",
         "--dir", str(tmp_path), "--spec", str(LIGHT_SPEC)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    project = tmp_path / "demo"
    assert "hostwire plugin build" in created.stdout  # its command: hostwire.toml's build
    assert (project / "main.c").is_file()
    assert (project / "pdk" / "hostwire.h").is_file()
    built = subprocess.run(
        BUILD, shell=True, cwd=project, capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    wasm = project / "build" / "plugin.wasm"
    with PluginHarness(wasm, spec=LIGHT_SPEC, grants=["getStates"]) as h:
        h.mock("getStates", {"status": "on", "color": "red"})
        assert h.call("run") == {"status": "on", "color": "red"}
        assert h.fire("light.before_create", record=light()) == {}


# -- presence flags cannot be forgotten ---------------------------------------------

PRESENCE_PLUGIN = r"""
#include "hostwire.h"

static int pre_hook(const HttpPreHookInput *input, HttpPreHookOutput *output) {
    if (hw_str_eq_c(input->request->path, "/flag-only")) {
        /* The fail-open trap: has_response set, has_has_response forgotten. */
        output->response = hw_new(HttpResponse);
        output->response->status_code = 403;
        output->response->headers = hw_json_object();
        output->response->body = HW_STR("bm8=");
        output->has_response = true;
    } else if (hw_str_eq_c(input->request->path, "/respond")) {
        hw_json *headers = hw_json_object();
        hw_json_set(headers, "retry-after", hw_json_string(HW_STR("1")));
        hw_respond(output, 429, headers, HW_STR("slow down"));
    } else if (hw_str_eq_c(input->request->path, "/no")) {
        output->has_response = false;
        output->has_has_response = true; /* an explicit false still needs its flag */
    }
    return 0;
}
HW_ON_HTTP_PRE_HOOK(pre_hook)

static int chunk(const HttpStreamChunkInput *input, HttpStreamChunkOutput *output) {
    (void)input;
    output->skip = true; /* no has_skip */
    return 0;
}
HW_ON_HTTP_STREAM_CHUNK_HOOK(chunk)

HW_EXPORT(deliveries) {
    api_list_event_deliveries_options options = {0};
    options.limit = 5; /* no has_limit */
    options.state = DeliveryState_DEAD; /* no has_state */
    api_list_event_deliveries_response r = api_list_event_deliveries(&options);
    hw_output_cstr(r.ok ? "{}" : "{\"failed\":true}");
    return 0;
}
"""


@pytest.fixture(scope="module")
def presence_wasm(light_pdk: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("presence-plugin") / "plugin.wasm"
    return build(light_pdk, PRESENCE_PLUGIN, out)


def hook_input(path: str) -> dict[str, object]:
    request = {"method": "GET", "path": path, "headers": {}, "query": {}, "body": ""}
    return {"context": {}, "request": request}


def test_setting_has_response_alone_answers_with_the_response(presence_wasm: Path) -> None:
    with harness(presence_wasm) as h:
        assert h.call("http_pre_hook", hook_input("/flag-only")) == {
            "context": {},
            "response": {"status_code": 403, "headers": {}, "body": "bm8="},
            "has_response": True,
        }
        assert h.call("http_pre_hook", hook_input("/no")) == {
            "context": {},
            "has_response": False,
        }
        assert h.call("http_pre_hook", hook_input("/other")) == {"context": {}}


def test_hw_respond_fills_the_whole_answer(presence_wasm: Path) -> None:
    with harness(presence_wasm) as h:
        answer = h.call("http_pre_hook", hook_input("/respond"))
    assert answer == {
        "context": {},
        "response": {
            "status_code": 429,
            "headers": {"retry-after": "1"},
            "body": base64.b64encode(b"slow down").decode(),
        },
        "has_response": True,
    }


def test_values_other_than_zero_are_sent_without_their_flag(presence_wasm: Path) -> None:
    chunk = {"context": {}, "request": hook_input("/")["request"], "chunk": "eA=="}
    with harness(presence_wasm) as h:
        assert h.call("http_stream_chunk_hook", chunk) == {"context": {}, "skip": True}
        h.mock("listEventDeliveries", {"deliveries": []})
        assert h.call("deliveries") == {}
        (call,) = h.calls
    assert call.query == [("state", "dead"), ("limit", "5")]


# -- generated names never take the runtime's ---------------------------------------

CLASH_PLUGIN = r"""
#include "hostwire.h"

HW_EXPORT(run) {
    hw_output_cstr("{}");
    return 0;
}
"""


@pytest.mark.parametrize("document", ["every-runtime-name", "fastapi"])
def test_documents_full_of_the_runtimes_names_compile(document: str, tmp_path: Path) -> None:
    spec = pdk_document(document, tmp_path, runtime_names())
    pdk = tmp_path / "pdk"
    generate(spec, "c", pdk)
    # Each file on its own (strict C99, warnings are errors), then all linked together.
    for source in SOURCES:
        cc(f"-I{pdk}", "-c", str(pdk / source), "-o", str(tmp_path / f"{source}.o"))
    build(pdk, CLASH_PLUGIN, tmp_path / "plugin.wasm")


def test_generated_c_names_are_never_runtime_names(tmp_path: Path) -> None:
    spec = write_clash_document(tmp_path, runtime_names())
    generate(spec, "c", tmp_path / "pdk")
    generated = "\n".join(
        (tmp_path / "pdk" / name).read_text(encoding="utf-8")
        for name in ("hw_models.h", "hw_api.h", "hw_exports.h")
    )
    declared = set(re.findall(r"\btypedef (?:struct|enum) \w+ (\w+);", generated))
    declared |= set(re.findall(r"^\S[^(\n]*?\b(\w+)\(", generated, re.M))  # functions
    declared |= set(re.findall(r"^\s+(\w+)(?: = \d+)?,?$", generated, re.M))  # enum constants
    declared |= set(re.findall(r"^#define (\w+)", generated, re.M))
    assert "hw_any_array" in declared
    assert {"HWModel_to_string", "hw_respond"} <= declared
    assert declared & runtime_names() == set()


def test_a_fastapi_validation_error_reads_and_writes(tmp_path: Path) -> None:
    models = tmp_path / "pdk" / "hw_models.h"
    generate(FASTAPI, "c", tmp_path / "pdk")
    text = models.read_text(encoding="utf-8")
    assert "hw_any_array loc;" in text
    source = (
        CLASH_PLUGIN
        + r"""
HW_EXPORT(echo_error) {
    HTTPValidationError error;
    if (!HTTPValidationError_parse(hw_input(), &error)) return hw_fail("%s", hw_error());
    hw_output(HTTPValidationError_to_json(&error));
    return 0;
}
"""
    )
    wasm = build(tmp_path / "pdk", source, tmp_path / "plugin.wasm")
    error = {"detail": [{"loc": ["body", "price", 0], "msg": "Input should be > 0",
                         "type": "greater_than", "input": -1, "ctx": {"gt": 0}}]}  # fmt: skip
    with PluginHarness(wasm, spec=FASTAPI) as h:
        assert h.call("echo_error", error) == error
