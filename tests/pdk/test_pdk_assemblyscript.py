"""The AssemblyScript PDK, compiled and run: generated for light.yaml and awkward.yaml,
plug-ins built on it run under the harness, and `hostwire plugin new` builds."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from conftest import ROOT
from hostwire import Limits, PluginError, load_openapi
from hostwire._pdk.assemblyscript import BUILD, runtime_names
from hostwire._pdk.generate import generate, scaffold
from hostwire._pdk.model import build_model
from hostwire.testing import MockReply, PluginHarness
from pdk_documents import document as pdk_document

ASC = ROOT / "node_modules" / ".bin" / "asc"
LIGHT_SPEC = ROOT / "openapi" / "light.yaml"
AWKWARD_SPEC = ROOT / "tests" / "pdk" / "awkward.yaml"
LIGHT = {
    "id": "lamp",
    "name": "Lamp",
    "status": "on",
    "color": "blue",
    "brightness": 42,
    "created_at": "2026-11-21T22:00:00Z",
    "updated_at": "2026-11-21T23:15:02Z",
    "revision": 2,
}


def compile_plugin(project: Path, source: str, spec: Path) -> Path:
    """Generate the PDK for spec into project/pdk, write the plug-in, build it with asc."""
    generate(spec, "assemblyscript", project / "pdk")
    (project / "assembly").mkdir(parents=True, exist_ok=True)
    (project / "assembly" / "index.ts").write_text(source, encoding="utf-8")
    return build_with_asc(project)


def build_with_asc(project: Path) -> Path:
    """Build project/assembly/index.ts on project/pdk, as the scaffold's build script does."""
    if not ASC.exists():
        pytest.fail(f"{ASC} is missing: run `make plugins` (it installs the npm toolchain).")
    wasm = project / "build" / "plugin.wasm"
    result = subprocess.run(
        [
            str(ASC),
            "assembly/index.ts",
            "-O3",
            "--runtime",
            "incremental",
            "--use",
            "abort=pdk/plugin/abortPlugin",
            "--outFile",
            "build/plugin.wasm",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    errors = "\n".join(line for line in result.stderr.splitlines() if "AS235" not in line)
    assert result.returncode == 0, f"asc failed:\n{errors}"
    # Warnings are errors too; AS235 only says the test's `export *` of classes exports nothing.
    assert "WARNING" not in errors, f"asc warned:\n{errors}"
    return wasm


def imports_of(wasm: Path) -> set[tuple[str, str]]:
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(wasm))
    return {(i.module, i.name or "") for i in module.imports}


# -- the whole PDK compiles -------------------------------------------------------------

_CLASS = re.compile(r"^export class (\w+) \{\n(.*?)^\}", re.M | re.S)


def everything(pdk: Path) -> str:
    """An entry file that exports the whole PDK and uses every class and method."""
    names, lines = [], []
    for file in ("models.ts", "api.ts"):
        for name, body in _CLASS.findall((pdk / file).read_text(encoding="utf-8")):
            names.append(name)
            if "private constructor" in body:  # an enum
                lines.append(
                    f"  n += {name}.values().length + {name}.values()[0].toString().length;"
                )
                lines.append(f'  if ({name}.fromString("") !== null) n++;')
                continue
            lines.append(f"  {{ const x = new {name}();")
            lines += [f"    x.{m}();" for m in re.findall(r"^  (clear\w+)\(\): void", body, re.M)]
            if "toJson()" in body:
                lines.append("    n += x.toJson().length + x.toBytes().length;")
                lines.append(f'    if ({name}.fromJson("{{}}") !== null) n++;')
            lines.append("  }")
    return "\n".join(
        [
            'export * from "../pdk/index";',
            f'import {{ {", ".join(names)} }} from "../pdk/index";',
            "export function check(): i32 {",
            "  let n = 0;",
            *lines,
            "  return n;",
            "}",
            "",
        ]
    )


@pytest.mark.parametrize("spec", [LIGHT_SPEC, AWKWARD_SPEC], ids=["light", "awkward"])
def test_the_whole_pdk_compiles_and_imports_only_extism(spec: Path, tmp_path: Path) -> None:
    generate(spec, "assemblyscript", tmp_path / "pdk")
    wasm = compile_plugin(tmp_path, everything(tmp_path / "pdk"), spec)
    imports = imports_of(wasm)
    user = {name for module, name in imports if module == "extism:host/user"}
    assert user == {op.name for op in build_model(load_openapi(spec)).operations}
    assert {module for module, _ in imports} == {"extism:host/env", "extism:host/user"}


# -- a plug-in on the lightcontrol PDK --------------------------------------------------

LIGHT_PLUGIN = """
import {
  BeforeEventResult, BeforeEventResultReject, Color, DeliveryState, HttpPreHookInput,
  HttpPreHookOutput, JsonValue, JsonWriter, Light, LightEvent, LightUpdate,
  ListEventDeliveriesOptions, config, configOr, decodeLight, encodeLight, fail, getLight,
  getStates, inputJson, inputString, lastJsonError, listEventDeliveries, logInfo,
  onHttpPreHook, onLightBeforeSave, outputAs, outputJson, outputString, outputWriter,
  readInputAs, respond, updateLight,
} from "../pdk";

export function http_pre_hook(): i32 {
  return onHttpPreHook(preHook);
}

function preHook(input: HttpPreHookInput): HttpPreHookOutput {
  if (input.request.path == "/respond") {
    const headers = JsonValue.newObject().set("retry-after", JsonValue.ofString("1"));
    return respond(input.context, 429, headers, Uint8Array.wrap(String.UTF8.encode("slow down")));
  }
  return new HttpPreHookOutput(input.context);
}

// Reads the default light, gives the target light the configured colour, and
// counts dead deliveries: no body, path and body, query options.
export function act(): i32 {
  const target = config("target");
  if (target === null) return fail('config "target" is missing');
  const color = Color.fromString(configOr("colour", "red"));
  if (color === null) return fail('config "colour" is not a colour');

  const states = getStates();
  if (!states.ok) return fail(states.describe());

  const change = new LightUpdate();
  change.color = color;
  change.brightness = 42;
  const updated = updateLight(target, change);
  if (!updated.ok) return fail(updated.describe());

  const options = new ListEventDeliveriesOptions();
  options.state = DeliveryState.Dead;
  options.limit = 5;
  const deliveries = listEventDeliveries(options);
  if (!deliveries.ok) return fail(deliveries.describe());

  const light = updated.body!;
  logInfo("updated " + light.id);
  const w = new JsonWriter().beginObject();
  w.key("was").string(states.body!.color.value);
  w.key("light");
  light.encode(w);
  const dead = deliveries.body!.deliveries;
  w.key("dead").integer(dead.length);
  if (dead.length > 0) {
    w.key("attempts").integer(dead[0].attempts);
    const error = dead[0].lastError;
    w.key("last_error");
    if (error !== null) w.string(error);
    else w.null();
  }
  outputWriter(w.endObject());
  return 0;
}

// How a failed call reads.
export function lookup(): i32 {
  const reply = getLight("nope");
  const w = new JsonWriter().beginObject();
  w.key("ok").bool(reply.ok).key("status").integer(reply.status);
  const error = reply.error;
  if (error !== null) {
    w.key("code").string(error.code).key("message").string(error.message);
    const details = error.details;
    if (details !== null) w.key("details").value(details);
  }
  w.key("describe").string(reply.describe());
  const body = reply.body;
  if (body !== null) w.key("name").string(body.name);
  outputWriter(w.endObject());
  return 0;
}

export function light_before_save(): i32 {
  return onLightBeforeSave(guard);
}

function guard(event: LightEvent): BeforeEventResult | null {
  const limit = I64.parseInt(configOr("max_brightness", "100"));
  const record = event.data.record;
  if (record.brightness > limit) {
    const answer = new BeforeEventResult();
    const reason = "zu hell für „" + record.name + "“: " + record.brightness.toString();
    answer.reject = new BeforeEventResultReject(reason + " > " + limit.toString());
    return answer;
  }
  if (record.name == "fail") {
    fail("asked to fail by " + event.id);
    return null;
  }
  const previous = event.data.previous;
  if (previous !== null && record.color == Color.White) {
    record.color = previous.color;
    record.name = record.name + " ✓";
    const answer = new BeforeEventResult();
    answer.record = record;
    return answer;
  }
  return null;
}

export function echo_json(): i32 {
  const value = inputJson();
  if (value === null) return 1;
  outputJson(value);
  return 0;
}

export function echo_light(): i32 {
  const light = readInputAs<Light>("the light", decodeLight);
  if (light === null) return 1;
  outputAs<Light>(light, encodeLight);
  return 0;
}

export function light_from_text(): i32 {
  const light = Light.fromJson(inputString());
  if (light === null) return fail("not a light: " + lastJsonError());
  outputString(light.toJson());
  return 0;
}

export function memory_pages(): i32 {
  outputString(memory.size().toString());
  return 0;
}

export function out_of_range(): i32 {
  const items = new Array<i32>(0);
  return items[3];
}
"""


@pytest.fixture(scope="module")
def light_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_plugin(tmp_path_factory.mktemp("light"), LIGHT_PLUGIN, LIGHT_SPEC)


@pytest.fixture
def light(light_wasm: Path) -> Iterator[PluginHarness]:
    config = {"target": "lamp/1", "colour": "green", "max_brightness": "50"}
    with PluginHarness(light_wasm, spec=LIGHT_SPEC, config=config) as harness:
        yield harness


def test_typed_calls_go_out_as_contract_1_json(light: PluginHarness) -> None:
    light.mock("getStates", {"status": "on", "color": "white"})
    light.mock("updateLight", {**LIGHT, "color": "green"})
    dead = {
        "event_id": "evt_1",
        "type": "light.after_update",
        "subject": "light/lamp",
        "plugin": "follow",
        "export": "light_after_update",
        "state": "dead",
        "attempts": 8,
        "next_attempt_at": None,
        "last_error": "update_light: 403 ✗",
        "created_at": "2026-11-21T22:00:00Z",
        "delivered_at": None,
    }
    light.mock("listEventDeliveries", {"deliveries": [dead]})
    assert light.call("act") == {
        "was": "white",
        "light": {**LIGHT, "color": "green"},
        "dead": 1,
        "attempts": 8,
        "last_error": "update_light: 403 ✗",
    }
    states, update, deliveries = light.calls
    assert (states.method, states.path, states.body) == ("GET", "/states", None)
    assert (update.method, update.path) == ("PATCH", "/lights/lamp/1")
    assert update.body == {"color": "green", "brightness": 42}  # unset fields are left out
    assert deliveries.query == [("state", "dead"), ("limit", "5")]


def test_respond_fills_the_whole_pre_hook_answer(light: PluginHarness) -> None:
    request = {"method": "GET", "path": "/respond", "headers": {}, "query": {}, "body": ""}
    assert light.call("http_pre_hook", {"context": {"n": 1}, "request": request}) == {
        "context": {"n": 1},
        "response": {
            "status_code": 429,
            "headers": {"retry-after": "1"},
            "body": base64.b64encode(b"slow down").decode(),
        },
        "has_response": True,
    }
    request["path"] = "/"
    assert light.call("http_pre_hook", {"context": {}, "request": request}) == {"context": {}}


def test_failed_calls_read_clearly(light: PluginHarness) -> None:
    error = {"code": "not_found", "message": 'No light has the id "nope".'}
    details = [{"field": "id", "message": "unknown"}]
    light.mock("getLight", {"error": {**error, "details": details}}, status=404)
    assert light.call("lookup") == {
        "ok": False,
        "status": 404,
        **error,
        "details": details,
        "describe": 'get_light failed with status 404: not_found: No light has the id "nope".',
    }
    # A body the spec does not allow (the harness checks plain mocks: use a responder).
    light.mock("getLight", responder=lambda call: MockReply(200, {"id": "nope"}))
    assert light.call("lookup")["describe"] == (
        "get_light failed with status 200: invalid_response: "
        "the body does not match its schema: name: is required but missing"
    )
    light.mock("getLight", responder=lambda call: MockReply(502, ["not", "the", "error", "shape"]))
    assert light.call("lookup")["message"] == '["not","the","error","shape"]'
    light.mock("getLight", LIGHT)
    assert light.call("lookup") == {
        "ok": True,
        "status": 200,
        "describe": "get_light answered status 200",
        "name": "Lamp",
    }


def test_a_call_outside_the_grants_fails_the_plugin(light_wasm: Path) -> None:
    with PluginHarness(
        light_wasm, spec=LIGHT_SPEC, config={"target": "x"}, grants=["getStates"]
    ) as harness:
        harness.mock("getStates", {"status": "on", "color": "white"})
        with pytest.raises(PluginError, match="update_light failed with status 403: not_granted"):
            harness.call("act")


def test_lifecycle_events_with_typed_envelopes_and_answers(light: PluginHarness) -> None:
    assert light.fire("light.before_save", record={**LIGHT, "brightness": 70}) == {
        "reject": {"reason": "zu hell für „Lamp“: 70 > 50"}
    }
    replaced = light.fire("light.before_save", record={**LIGHT, "color": "white"}, previous=LIGHT)
    assert replaced == {"record": {**LIGHT, "name": "Lamp ✓"}}
    assert light.fire("light.before_save", record=LIGHT) == {}
    with pytest.raises(PluginError, match=r"asked to fail by evt_\w+"):
        light.fire("light.before_save", record={**LIGHT, "name": "fail"})
    with pytest.raises(PluginError) as failure:
        light.call("light_before_save", {"id": "evt_1", "type": "t", "timestamp": "t", "data": {}})
    assert "the light.before_save event does not match its schema: data.record: is required" in (
        str(failure.value)
    )


JSON_VALUES = {
    "escapes": 'quote " backslash \\ slash / \b\f\n\r\t \u0001 \u001f \u007f',
    "non-ascii": "héllo wörld ✓ „quotes“ 😀 \u2028 \u00a0",
    "nulls": [None, {"a": None}, [None, [None]]],
    "nested-arrays": [[1, [2, [3, []]]], [], [[None], [[]]]],
    "numbers": [0, -1, 2**63 - 1, -(2**63), 1.5, -0.25, 1e300, 3.14159, 0.1, 1e-7],
    "objects": {"": "empty key", "é": {"deep": {"deeper": [True, False]}}, "z": {}},
    "top-level-string": "just a string",
}


@pytest.mark.parametrize("value", list(JSON_VALUES.values()), ids=list(JSON_VALUES))
def test_json_round_trips(light: PluginHarness, value: Any) -> None:
    assert light.call("echo_json", value) == value


def test_json_escapes_and_utf8_are_read_and_written(light: PluginHarness) -> None:
    escaped = rb'"\u00e9\ud83d\ude00\"\\\/\n"'
    text = b'{"s": ' + escaped + b', "raw": "\xc3\xa9\xf0\x9f\x98\x80", "lone": "\\ud800"}'
    out = light.call_raw("echo_json", text)
    assert json.loads(out) == {"s": 'é😀"\\/\n', "raw": "é😀", "lone": "\ufffd"}
    assert "é😀".encode() in out  # written as UTF-8, not escaped and not cut short
    assert b"\\n" in out
    assert light.call_raw("echo_json", b' [ 1 , { "a" : [ ] } ] \n') == b'[1,{"a":[]}]'
    key_order = b'{"b":1,"a":2,"c":{"z":0,"y":1}}'
    assert light.call_raw("echo_json", key_order) == key_order


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            b'{"a": 1} x', "at byte 9: unexpected text after the JSON value", id="trailing"
        ),
        pytest.param(b'{"a": "\xff"}', "at byte 7: invalid UTF-8", id="utf8"),
        pytest.param(b'{"a": "\xed\xa0\x80"}', "at byte 7: invalid UTF-8", id="surrogate-utf8"),
        pytest.param(b'"a\nb"', "at byte 2: control character in a string", id="control"),
        pytest.param(b"[" * 65 + b"]" * 65, "nested deeper than 64 levels", id="deep"),
        pytest.param(b"[1,]", "at byte 3: expected a JSON value", id="trailing-comma"),
        pytest.param(b'{"a" 1}', "at byte 5: expected ':' after the key", id="colon"),
        pytest.param(b'"\\x"', "at byte 2: invalid escape in a string", id="escape"),
        pytest.param(b'"\\u12"', "expected four hex digits after \\u", id="unicode-escape"),
        pytest.param(b"01", "at byte 1: unexpected text after the JSON value", id="leading-zero"),
        pytest.param(b"", "at byte 0: unexpected end of input", id="empty"),
        pytest.param(b'{"a": tru}', "at byte 9: expected true", id="literal"),
    ],
)
def test_bad_json_is_refused_naming_the_byte(
    light: PluginHarness, text: bytes, message: str
) -> None:
    with pytest.raises(PluginError) as failure:
        light.call_raw("echo_json", text)
    assert "the input is not valid JSON: invalid JSON" in str(failure.value)
    assert message in str(failure.value)
    # Nothing is left half-way: the next call reads its input as usual.
    assert light.call("echo_json", {"after": [1, 2]}) == {"after": [1, 2]}


def test_deep_but_allowed_nesting_and_big_numbers(light: PluginHarness) -> None:
    deep: Any = []
    for _ in range(63):
        deep = [deep]
    assert light.call("echo_json", deep) == deep
    assert light.call_raw("echo_json", b"12345678901234567890") == b"12345678901234567000.0"
    assert light.call_raw("echo_json", b"1e400") == b"null"  # not finite: JSON has no Infinity


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"brightness": "high"}, "brightness: expected an integer, got a string", id="type"
        ),
        pytest.param(
            {"brightness": 1.5}, "brightness: expected an integer, got a number", id="int"
        ),
        pytest.param(
            {"color": "purple"},
            'color: "purple" is not one of "red", "green", "blue", "white"',
            id="enum",
        ),
        pytest.param({"id": None}, "id: expected a string, got null", id="null"),
    ],
)
def test_typed_decoding_names_the_field(
    light: PluginHarness, change: dict[str, Any], message: str
) -> None:
    assert light.call("echo_light", {**LIGHT, "extra": "ignored"}) == LIGHT
    with pytest.raises(PluginError) as failure:
        light.call("echo_light", {**LIGHT, **change})
    assert f"the light does not match its schema: {message}" in str(failure.value)


def test_from_json_and_to_json(light: PluginHarness) -> None:
    assert json.loads(light.call_raw("light_from_text", json.dumps(LIGHT))) == LIGHT
    with pytest.raises(PluginError, match="not a light: revision: is required but missing"):
        light.call_raw(
            "light_from_text", json.dumps({k: v for k, v in LIGHT.items() if k != "revision"})
        )


def test_a_trap_reads_like_an_error(light: PluginHarness) -> None:
    with pytest.raises(PluginError, match=r"abort: Index out of range at ~lib/array\.ts"):
        light.call("out_of_range")


def test_memory_stays_flat_over_5000_calls(light_wasm: Path) -> None:
    config = {"target": "lamp", "max_brightness": "50"}
    with PluginHarness(
        light_wasm, spec=LIGHT_SPEC, config=config, limits=Limits(memory_mib=4)
    ) as harness:
        harness.mock("getStates", {"status": "on", "color": "white"})
        harness.mock("updateLight", LIGHT)
        harness.mock("listEventDeliveries", {"deliveries": []})
        payload = {"items": [{"text": "✓ 😀 " * 10, "n": i, "none": None} for i in range(100)]}
        pages = []
        for i in range(5000):
            kind = i % 3
            if kind == 0:
                harness.call("act")
            elif kind == 1:
                harness.fire("light.before_save", record={**LIGHT, "brightness": 70})
            else:
                assert harness.call("echo_json", payload) == payload
            if i in (500, 4999):
                pages.append(int(harness.call_raw("memory_pages")))
        assert pages[0] == pages[1], f"linear memory grew from {pages[0]} to {pages[1]} pages"
        assert len(harness.calls) == 3 * 1667


# -- a plug-in on the awkward PDK ------------------------------------------------------

AWKWARD_PLUGIN = """
import {
  CountThingsOptions, DeleteThingsIdPartsPartNoOptions, JsonWriter, Kind, ListThingsOptions,
  MatchBody, NewThing, Thing, ThingEvent, ToggleOptions, Verdict, VerdictReject, countThings,
  create, decodeThing, deleteThingsIdPartsPartNo, encodeThing, fail, listThings, match,
  onThingAfterDestroy, onThingBeforeSave, outputAs, outputWriter, readInputAs, toggle,
} from "../pdk";

export function round_thing(): i32 {
  const thing = readInputAs<Thing>("the thing", decodeThing);
  if (thing === null) return 1;
  outputAs<Thing>(thing, encodeThing);
  return 0;
}

// Reads the explicit-null flags, then flips them and writes the thing again.
export function flip_nulls(): i32 {
  const thing = readInputAs<Thing>("the thing", decodeThing);
  if (thing === null) return 1;
  const w = new JsonWriter().beginObject();
  w.key("class").bool(thing.classIsNull).key("score").bool(thing.scoreIsNull);
  thing.classIsNull = !thing.classIsNull;
  thing.scoreIsNull = !thing.scoreIsNull;
  w.key("flipped");
  thing.encode(w);
  outputWriter(w.endObject());
  return 0;
}

// An integer answer (ValueResponse<i64>), parameters named like the generated
// code's names, and an optional boolean body (a member of the options).
export function call_values(): i32 {
  const options = new CountThingsOptions();
  options.options = "o";
  options.w = "w";
  const count = countThings(options);
  const on = new ToggleOptions();
  on.body = false;
  const toggled = toggle(on);
  const untoggled = toggle();
  const w = new JsonWriter().beginObject();
  w.key("ok").bool(count.ok).key("has").bool(count.hasBody).key("count").integer(count.body);
  w.key("describe").string(count.describe());
  w.key("toggled").integer(toggled.status).key("untoggled").integer(untoggled.status);
  outputWriter(w.endObject());
  return 0;
}

export function call_all(): i32 {
  const options = new ListThingsOptions();
  options.type = Kind.TwoWords;
  options.limit = 5;
  options.tags = ["a", "b c"];
  const things = listThings(options);
  if (!things.ok) return fail(things.describe());

  const made = new NewThing(Kind.T9lives);
  made.ownerName = "camel";
  made.ownerName2 = "snake";
  const created = create(made);
  if (!created.ok) return fail(created.describe());

  const body = new MatchBody();
  body.self = "me";
  body.async_ = true;
  body.struct = 2.5;
  const matched = match(body);
  const unmatched = match();

  const etag = new DeleteThingsIdPartsPartNoOptions();
  etag.ifMatch = "etag-1";
  const deleted = deleteThingsIdPartsPartNo("x y", 7, etag);

  const w = new JsonWriter().beginObject();
  const list = things.body!;
  w.key("kinds").beginArray();
  for (let i = 0; i < list.length; i++) w.string(list[i].type.value);
  w.endArray();
  w.key("created");
  created.body!.encode(w);
  w.key("matched").bool(matched.body!.ok);
  w.key("unmatched").integer(unmatched.status);
  w.key("deleted").integer(deleted.status);
  w.key("deleted_body").bool(deleted.body === null);
  outputWriter(w.endObject());
  return 0;
}

export function thing_before_save(): i32 {
  return onThingBeforeSave((event: ThingEvent): Verdict | null => {
    const record = event.data.record;
    const verdict = new Verdict();
    if (record.class_ === null) {
      verdict.reject = new VerdictReject("no class for " + record.id);
      return verdict;
    }
    if (record.hasDefault()) return null;
    record.default_ = 7;
    record.clearFor();
    verdict.record = record;
    return verdict;
  });
}

export function thing_after_destroy(): i32 {
  return onThingAfterDestroy((event: ThingEvent): void => {
    if (event.data.previous === null) fail("destroyed nothing");
  });
}
"""
THING = {
    "id": "t1",
    "type": "two words",
    "parts": [{"no": 1}, {"no": 2, "label": "b"}],
    "owner": {"name": "Ann", "address": {"city": "Zürich"}},
    "tags": ["x"],
    "matrix": [[1, 2], [], [3]],
    "extra": {"any": [1, "two", None, {"k": 1.5}]},
    "for": 0.5,
}


@pytest.fixture(scope="module")
def awkward_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_plugin(tmp_path_factory.mktemp("awkward"), AWKWARD_PLUGIN, AWKWARD_SPEC)


@pytest.fixture
def awkward(awkward_wasm: Path) -> Iterator[PluginHarness]:
    with PluginHarness(awkward_wasm, spec=AWKWARD_SPEC) as harness:
        yield harness


def test_awkward_names_reach_the_wire_as_the_document_spells_them(awkward: PluginHarness) -> None:
    awkward.mock("listThings", [THING, {**THING, "type": "9lives"}])
    awkward.mock("create", {**THING, "type": "9lives", "class": "c", "default": 3}, status=201)
    awkward.mock("match", {"ok": True})
    awkward.mock("delete_things_id_parts_part_no", None, status=204)
    assert awkward.call("call_all") == {
        "kinds": ["two words", "9lives"],
        "created": {**THING, "type": "9lives", "class": "c", "default": 3},
        "matched": True,
        "unmatched": 200,
        "deleted": 204,
        "deleted_body": True,
    }
    listed, created, matched, unmatched, deleted = awkward.calls
    assert listed.query == [("type", "two words"), ("limit", "5"), ("tags", "a"), ("tags", "b c")]
    assert created.body == {"type": "9lives", "owner_name": "snake", "ownerName": "camel"}
    assert matched.body == {"self": "me", "async": True, "struct": 2.5}
    assert unmatched.body is None
    assert (deleted.method, deleted.path) == ("DELETE", "/things/x y/parts/7")
    assert deleted.headers == {"If-Match": "etag-1"}


@pytest.mark.parametrize(
    ("thing", "expected"),
    [
        pytest.param(THING, THING, id="as-is"),
        pytest.param({**THING, "class": "c", "default": -3}, None, id="keywords"),
        pytest.param({**THING, "class": None}, None, id="explicit-null"),
        pytest.param({**THING, "score": None, "class": "c"}, None, id="explicit-null-integer"),
        pytest.param({**THING, "score": -2}, None, id="nullable-integer"),
        pytest.param({**THING, "parts": [{"no": 1, "label": None}, {"no": 2}]}, None, id="nested"),
        pytest.param({**THING, "matrix": [[], [0], [9223372036854775807, -1]]}, None, id="arrays"),
    ],
)
def test_awkward_models_round_trip(
    awkward: PluginHarness, thing: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    assert awkward.call("round_thing", thing) == (thing if expected is None else expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"matrix": [[1, "x"]]}, "matrix[0][1]: expected an integer, got a string", id="matrix"
        ),
        pytest.param(
            {"parts": [{"no": 1}, {"label": "x"}]},
            "parts[1].no: is required but missing",
            id="part",
        ),
        pytest.param(
            {"type": "nine"}, '"nine" is not one of "plain", "two words", "with-dash"', id="enum"
        ),
        pytest.param(
            {"owner": {"address": {}}}, "owner.name: is required but missing", id="nested"
        ),
    ],
)
def test_awkward_mismatches_name_the_path(
    awkward: PluginHarness, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(PluginError) as failure:
        awkward.call("round_thing", {**THING, **change})
    assert message in str(failure.value)


def test_awkward_optional_nullable_fields_read_and_send_an_explicit_null(
    awkward: PluginHarness,
) -> None:
    assert awkward.call("flip_nulls", {**THING, "class": None}) == {
        "class": True,
        "score": False,
        "flipped": {**THING, "score": None},
    }
    assert awkward.call("flip_nulls", THING) == {
        "class": False,
        "score": False,
        "flipped": {**THING, "class": None, "score": None},
    }
    # A set value wins over the flag.
    valued = {**THING, "class": "c", "score": 3}
    assert awkward.call("flip_nulls", valued) == {
        "class": False,
        "score": False,
        "flipped": valued,
    }


def test_awkward_value_answers_and_optional_value_bodies(awkward: PluginHarness) -> None:
    awkward.mock("countThings", 42)
    awkward.mock("toggle", None, status=204)
    assert awkward.call("call_values") == {
        "ok": True,
        "has": True,
        "count": 42,
        "describe": "count_things answered status 200",
        "toggled": 204,
        "untoggled": 204,
    }
    counted, toggled, untoggled = awkward.calls
    assert counted.query == [("options", "o"), ("w", "w")]
    assert toggled.body is False
    assert untoggled.body is None
    awkward.mock("countThings", None)
    assert awkward.call("call_values")["has"] is False
    awkward.mock("countThings", responder=lambda call: MockReply(200, "many"))
    answer = awkward.call("call_values")
    assert (answer["ok"], answer["has"], answer["count"]) == (False, False, 0)
    assert answer["describe"] == (
        "count_things failed with status 200: invalid_response: "
        "the body does not match its schema: expected an integer, got a string"
    )


def test_awkward_events(awkward: PluginHarness) -> None:
    assert awkward.fire("thing.before_save", record=THING) == {
        "reject": {"reason": "no class for t1"}
    }
    classy = {**THING, "class": "k"}
    answer = awkward.fire("thing.before_save", record=classy)
    assert answer == {"record": {**{k: v for k, v in classy.items() if k != "for"}, "default": 7}}
    assert awkward.fire("thing.before_save", record={**classy, "default": 1}) == {}
    assert awkward.fire("thing.after_destroy", record=THING, previous=THING) is None
    with pytest.raises(PluginError, match="destroyed nothing"):
        awkward.fire("thing.after_destroy", record=THING)


# -- hostwire plugin new ---------------------------------------------------------------


def test_plugin_new_builds_and_runs(tmp_path: Path) -> None:
    command = ["plugin", "new", "demo", "--lang", "assemblyscript", "--dir", str(tmp_path)]
    created = subprocess.run(
        [sys.executable, "-m", "hostwire", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    project = tmp_path / "demo"
    assert "hostwire plugin build" in created.stdout  # its command: hostwire.toml's build
    assert (project / "pdk" / "README.md").exists()
    built = subprocess.run(
        BUILD, shell=True, cwd=project, capture_output=True, text=True, timeout=600, check=False
    )
    assert built.returncode == 0, built.stdout + built.stderr
    wasm = project / "build" / "plugin.wasm"
    with PluginHarness(wasm, spec=LIGHT_SPEC, config={"greeting": "grüß dich"}) as harness:
        harness.mock("getStates", {"status": "off", "color": "red"})
        assert harness.call("run") == {"greeting": "grüß dich", "get_states": 200}
        assert harness.fire("light.before_create", record=LIGHT) == {}
        assert [c.operation for c in harness.calls] == ["getStates"]


VALUES_SPEC = """\
openapi: 3.1.0
info:
  title: |
    Acme "Lights"
    API
  version: "1\\n2"
paths:
  /count:
    get:
      operationId: count
      parameters:
        - {name: options, in: query, schema: {type: string}}
      responses:
        "200": {description: How many., content: {application/json: {schema: {type: number}}}}
  /flag:
    put:
      operationId: setFlag
      requestBody: {content: {application/json: {schema: {type: boolean}}}}
      responses:
        "200": {description: The flag., content: {application/json: {schema: {type: boolean}}}}
"""


def test_plugin_new_with_a_value_answer_and_an_awkward_title_builds(tmp_path: Path) -> None:
    """The example calls an operation that answers a number; the title has quotes and a newline."""
    spec = tmp_path / "values.yaml"
    spec.write_text(VALUES_SPEC, encoding="utf-8")
    project = tmp_path / "demo"
    scaffold(spec, "assemblyscript", "demo", project)
    package = json.loads((project / "package.json").read_text(encoding="utf-8"))
    assert package["description"].startswith('A hostwire plug-in for Acme "Lights" API;')
    assert package["scripts"]["build"].startswith("asc assembly/index.ts")
    assert '// A hostwire plug-in for Acme "Lights" API, on' in (
        (project / "assembly" / "index.ts").read_text(encoding="utf-8")
    )
    assert (project / "pdk" / "index.ts").read_text(encoding="utf-8").splitlines()[1] == (
        '// The Acme "Lights" API PDK for AssemblyScript: import what you need from here.'
    )
    readme = (project / "pdk" / "README.md").read_text(encoding="utf-8").splitlines()
    assert readme[1] == '# Acme "Lights" API PDK for AssemblyScript'
    assert "`values.yaml` (version 1 2)." in readme[3]
    wasm = build_with_asc(project)
    with PluginHarness(wasm, spec=spec) as harness:
        harness.mock("count", 2.5)
        assert harness.call("run") == {"greeting": "hello", "count": 200}
        assert [(c.operation, c.query) for c in harness.calls] == [("count", [])]


# -- generated names never take the runtime's ---------------------------------------


@pytest.mark.parametrize("document", ["every-runtime-name", "fastapi"])
def test_documents_full_of_the_runtimes_names_compile(document: str, tmp_path: Path) -> None:
    spec = pdk_document(document, tmp_path, runtime_names())
    generate(spec, "assemblyscript", tmp_path / "project" / "pdk")
    compile_plugin(tmp_path / "project", everything(tmp_path / "project" / "pdk"), spec)


def test_the_runtime_names_are_read_from_the_runtime() -> None:
    assert {"JsonValue", "decodeString", "respond", "base64", "storeBlock"} <= runtime_names()
