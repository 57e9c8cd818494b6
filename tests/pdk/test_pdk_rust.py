"""The Rust PDK, compiled: generated for light.yaml and awkward.yaml, built with
Debian's Rust for wasm32-unknown-unknown, and run under hostwire with the
plug-in harness; and a project made by ``hostwire plugin new --lang rust``.

Every build shares one cargo target folder (``cargo_env`` in tests/conftest.py), so serde
is compiled once a session.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from hostwire import PluginError
from hostwire._pdk.generate import generate
from hostwire._pdk.rust import BUILD, TARGET
from hostwire.testing import MockReply, PluginHarness
from pdk_documents import document as pdk_document
from pdk_documents import rust_runtime_names

CARGO = Path("/usr/bin/cargo")
LIGHT = ROOT / "openapi" / "light.yaml"
AWKWARD = ROOT / "tests" / "pdk" / "awkward.yaml"
PROFILE = '[profile.release]\nopt-level = "s"\nlto = true\nstrip = true\n'

LIGHT_PLUGIN = r"""
use hostwire_pdk::*;

fn color(name: &str) -> Result<Color, Error> {
    Color::ALL
        .iter()
        .copied()
        .find(|c| c.as_str() == name)
        .ok_or_else(|| Error::new(format!("unknown colour {}", name)))
}

// Reads a light, repaints it from config, and counts dead deliveries.
export!(paint, |id: String| {
    let target = color(&config("color").unwrap_or_else(|| "white".to_string()))?;
    let before = api::get_light(&id).into_result()?;
    log::info(format!("painting {} ({})", before.name, before.color));
    let change = LightUpdate {
        color: Some(target),
        brightness: config_json::<i64>("brightness")?,
        ..Default::default()
    };
    let after = api::update_light(&id, &change).into_result()?;
    let dead = api::list_event_deliveries(None, Some(DeliveryState::Dead), None, Some(5));
    Ok(json!({
        "name": after.name,
        "was": before.color,
        "now": after.color,
        "dead": dead.body.map(|list| list.deliveries.len()),
    }))
});

// Shows a Response as JSON, whatever it holds.
export!(probe, |id: String| {
    let answer = api::get_light(&id);
    let error = answer.error.clone();
    Ok(json!({
        "status": answer.status,
        "ok": answer.is_success(),
        "name": answer.body.map(|light| light.name),
        "code": error.as_ref().map(|e| e.code.clone()),
        "message": error.as_ref().map(|e| e.message.clone()),
        "details": error.as_ref().map(|e| e.details.len()),
        "text": error.map(|e| e.to_string()),
    }))
});

light_before_save!(|event| {
    let record = event.data.record;
    let max = config_json::<i64>("max_brightness")?.unwrap_or(100);
    if record.brightness <= max {
        return Ok(BeforeEventResult::proceed());
    }
    if config("mode").as_deref() == Some("clamp") {
        return Ok(BeforeEventResult::replace(Light { brightness: max, ..record }));
    }
    Ok(BeforeEventResult::reject(format!("{} is brighter than {}", record.id, max)))
});

export!(decode, |text: String| unbase64(&text));

export!(boom, |index: usize| {
    let values = [10, 20, 30];
    Ok(values[index])
});

light_after_destroy!(|event| {
    let previous = event.data.previous.ok_or("a destroy has a previous record")?;
    log::warn(format!("{} is gone", previous.name));
    Ok(())
});

http_pre_hook!(|input| {
    if input.request.path == "/echo" {
        // the body back to front; the key found whatever the case of its name
        let mut body = input.request.body_bytes()?;
        body.reverse();
        let key = input.request.header("X-Api-Key").unwrap_or("none");
        let absent = if input.request.header("x-nope").is_none() { "yes" } else { "no" };
        let headers = json!({"x-key": key, "x-absent": absent});
        return Ok(HttpPreHookOutput::respond(input.context, 200, headers, &body));
    }
    if input.request.path == "/respond" {
        let headers = json!({"retry-after": "1"});
        return Ok(HttpPreHookOutput::respond(input.context, 429, headers, b"slow down"));
    }
    if input.request.path != "/blocked" {
        return Ok(HttpPreHookOutput { context: input.context, ..Default::default() });
    }
    Ok(HttpPreHookOutput {
        context: json!({"blocked": true}),
        has_response: Some(true),
        response: Some(HttpResponse { status_code: 403, headers: json!({}), body: String::new() }),
        ..Default::default()
    })
});
"""

AWKWARD_PLUGIN = r"""
use hostwire_pdk::*;

// Lists things (every kind of query parameter) and answers them re-encoded.
export!(echo_things, |_: ()| {
    let tags = vec!["a".to_string(), "b c".to_string()];
    Ok(api::list_things(Some(Kind::TwoWords), Some(3), Some(&tags)).into_result()?)
});

export!(make, |_: ()| {
    let new = NewThing {
        type_: Kind::T9lives,
        owner_name: Some("snake".to_string()),
        owner_name_2: Some("camel".to_string()),
    };
    let made = api::create(&new).into_result()?;
    let gone = api::delete_things_id_parts_part_no(&made.id, 7, Some("etag-1"));
    let matched = api::match_(Some(&MatchBody {
        self_: Some("me".to_string()),
        async_: Some(true),
        struct_: Some(1.5),
    }))
    .into_result()?;
    let unmatched = api::match_(None);
    Ok(json!({
        "made": made,
        "gone": gone.status,
        "gone_body": gone.body,
        "matched": matched.ok,
        "unmatched": unmatched.body.map(|answer| answer.ok),
        "kinds": Kind::ALL.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
    }))
});

thing_before_save!(|event| {
    let thing = event.data.record;
    match thing.class {
        Some(None) => Ok(Verdict::reject("class is null")),
        Some(Some(_)) => Ok(Verdict::replace(Thing { class: None, ..thing })),
        None => Ok(Verdict::proceed()),
    }
});

thing_after_destroy!(|event| {
    log::info(event.id);
    Ok(())
});

http_pre_hook!(|input| Ok(HttpPreHookOutput { context: input.context, ..Default::default() }));
http_post_hook!(|input| Ok(HttpPostHookOutput { context: input.context, ..Default::default() }));
http_stream_chunk_hook!(|input| {
    let skip = Some(input.chunk.is_empty());
    Ok(HttpStreamChunkOutput { context: input.context, skip, ..Default::default() })
});
"""

LIGHT_RECORD = {
    "id": "lamp",
    "name": "Desk lamp",
    "status": "on",
    "color": "white",
    "brightness": 60,
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
    "revision": 3,
}
THING = {
    "id": "t1",
    "type": "with-dash",
    "parts": [{"no": 1, "label": None}, {"no": 2}],
    "owner": {"name": "Ann", "address": {"city": "Oslo"}},
    "matrix": [[1, 2], [], [3]],
    "extra": {"any": ["thing", 1, None]},
}


def build_plugin(folder: Path, spec: Path, name: str, source: str, env: dict[str, str]) -> Path:
    """A plug-in crate on the PDK generated from ``spec``, built; returns its wasm."""
    generate(spec, "rust", folder / "pdk")
    (folder / ".cargo").mkdir(parents=True)
    (folder / ".cargo" / "config.toml").write_text((ROOT / ".cargo" / "config.toml").read_text())
    (folder / "Cargo.toml").write_text(
        f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n\n'
        '[lib]\ncrate-type = ["cdylib"]\n\n'
        '[dependencies]\nhostwire-pdk = { path = "pdk" }\n\n' + PROFILE + "\n[workspace]\n"
    )
    (folder / "src").mkdir()
    (folder / "src" / "lib.rs").write_text(source)
    cargo(["build", "--release", "--offline", "--target", TARGET], folder, env)
    return Path(env["CARGO_TARGET_DIR"]) / TARGET / "release" / f"{name}.wasm"


def cargo(args: list[str], folder: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [str(CARGO), *args], cwd=folder, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"cargo {' '.join(args)} failed in {folder}:\n{result.stderr}"


@pytest.fixture(scope="session")
def light_wasm(tmp_path_factory: pytest.TempPathFactory, cargo_env: dict[str, str]) -> Path:
    folder = tmp_path_factory.mktemp("light") / "plugin"
    return build_plugin(folder, LIGHT, "light_plugin", LIGHT_PLUGIN, cargo_env)


@pytest.fixture(scope="session")
def awkward_wasm(tmp_path_factory: pytest.TempPathFactory, cargo_env: dict[str, str]) -> Path:
    folder = tmp_path_factory.mktemp("awkward") / "plugin"
    return build_plugin(folder, AWKWARD, "awkward_plugin", AWKWARD_PLUGIN, cargo_env)


# -- light.yaml -----------------------------------------------------------


def test_operations_send_contract_1_and_answer_typed_bodies(light_wasm: Path) -> None:
    config = {"color": "red", "brightness": 40}
    with PluginHarness(light_wasm, spec=LIGHT, config=config) as harness:
        harness.mock("getLight", LIGHT_RECORD)
        harness.mock("updateLight", {**LIGHT_RECORD, "color": "red", "brightness": 40})
        harness.mock("listEventDeliveries", {"deliveries": []})
        output = harness.call("paint", "lamp")
        assert output == {"name": "Desk lamp", "was": "white", "now": "red", "dead": 0}
        assert [c.operation for c in harness.calls] == [
            "getLight",
            "updateLight",
            "listEventDeliveries",
        ]
        update = harness.calls_to("updateLight")[0]
        assert (update.method, update.path) == ("PATCH", "/lights/lamp")
        assert update.body == {"color": "red", "brightness": 40}  # None fields left out
        assert harness.calls_to("getLight")[0].body is None
        assert sorted(harness.calls_to("listEventDeliveries")[0].query) == [
            ("limit", "5"),
            ("state", "dead"),
        ]


def test_optional_config_and_unset_fields_stay_out(light_wasm: Path) -> None:
    with PluginHarness(light_wasm, spec=LIGHT, config={"color": "blue"}) as harness:
        harness.mock("getLight", LIGHT_RECORD)
        harness.mock("updateLight", {**LIGHT_RECORD, "color": "blue"})
        # Not the error shape light.yaml declares for a 500: only a responder can answer it.
        harness.mock("listEventDeliveries", responder=lambda call: MockReply(500, {"oops": 1}))
        assert harness.call("paint", "lamp")["dead"] is None
        assert harness.calls_to("updateLight")[0].body == {"color": "blue"}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(
            200,
            LIGHT_RECORD,
            {"status": 200, "ok": True, "name": "Desk lamp", "code": None, "details": None},
            id="ok",
        ),
        pytest.param(
            404,
            {"error": {"code": "not_found", "message": 'No light "lamp".'}},
            {"status": 404, "ok": False, "name": None, "code": "not_found", "details": 0},
            id="app-error",
        ),
        pytest.param(
            200,
            {"id": 1},
            {"status": 200, "ok": False, "name": None, "code": "invalid_response", "details": 0},
            id="body-of-the-wrong-type",
        ),
        pytest.param(
            503,
            "busy",
            {"status": 503, "ok": False, "name": None, "code": "http_503", "details": 0},
            id="not-the-error-shape",
        ),
    ],
)
def test_responses_hold_a_body_or_an_error(
    light_wasm: Path, status: int, body: object, expected: dict[str, object]
) -> None:
    with PluginHarness(light_wasm, spec=LIGHT) as harness:
        harness.mock("getLight", body, status=status, check=False)
        output = harness.call("probe", "lamp")
        assert {k: output[k] for k in expected} == expected
        if status == 404:
            assert output["text"] == 'get_light answered 404 not_found: No light "lamp".'


def test_validation_and_grant_errors_reach_the_plugin_typed(light_wasm: Path) -> None:
    with PluginHarness(light_wasm, spec=LIGHT, grants=["updateLight"]) as harness:
        output = harness.call("probe", "lamp")
        assert (output["status"], output["code"]) == (403, "not_granted")
        assert harness.calls == []
    with PluginHarness(light_wasm, spec=LIGHT) as harness:
        output = harness.call("probe", "")  # an empty path parameter
        assert (output["status"], output["code"]) == (400, "invalid_request")
        assert output["details"] >= 1


def test_a_failed_call_fails_the_export_with_its_reason(light_wasm: Path) -> None:
    with PluginHarness(light_wasm, spec=LIGHT, config={"color": "red"}) as harness:
        harness.mock("getLight", {"error": {"code": "not_found", "message": "No."}}, status=404)
        with pytest.raises(PluginError, match=r"get_light answered 404 not_found: No\."):
            harness.call("paint", "lamp")
        assert harness.calls_to("updateLight") == []
    with PluginHarness(light_wasm, spec=LIGHT, config={"color": "pink"}) as harness:
        with pytest.raises(PluginError, match="unknown colour pink"):
            harness.call("paint", "lamp")
        with pytest.raises(PluginError, match="paint: invalid input"):
            harness.call("paint", {"not": "a string"})


def test_before_events_proceed_replace_or_reject(light_wasm: Path) -> None:
    bright = {**LIGHT_RECORD, "brightness": 90}
    with PluginHarness(light_wasm, spec=LIGHT, config={"max_brightness": 80}) as harness:
        assert harness.fire("light.before_save", record=LIGHT_RECORD) == {}
        assert harness.fire("light.before_save", record=bright, previous=LIGHT_RECORD) == {
            "reject": {"reason": "lamp is brighter than 80"}
        }
    config = {"max_brightness": 80, "mode": "clamp"}
    with PluginHarness(light_wasm, spec=LIGHT, config=config) as harness:
        answer = harness.fire("light.before_save", record=bright)
        assert answer == {"record": {**bright, "brightness": 80}}


def test_after_events_answer_nothing(light_wasm: Path) -> None:
    with PluginHarness(light_wasm, spec=LIGHT) as harness:
        assert (
            harness.fire("light.after_destroy", record=LIGHT_RECORD, previous=LIGHT_RECORD) is None
        )
        with pytest.raises(PluginError, match="a destroy has a previous record"):
            harness.fire("light.after_destroy", record=LIGHT_RECORD)


@pytest.mark.parametrize(
    "body", [b"", b"a", b"ab", b"abc", b"abcd", bytes(range(256)), "héllo ✓".encode()]
)
def test_hook_bodies_decode_and_headers_match_whatever_their_case(
    light_wasm: Path, body: bytes
) -> None:
    with PluginHarness(light_wasm, spec=LIGHT) as harness:
        result = harness.request("POST", "/echo", headers={"X-API-KEY": "k1"}, body=body)
        assert result.response is not None
        assert result.response.body == body[::-1]
        assert result.response.headers["x-key"] == "k1"
        assert result.response.headers["x-absent"] == "yes"
        plain = harness.request("POST", "/echo", body=body)
        assert plain.response is not None
        assert plain.response.headers["x-key"] == "none"


@pytest.mark.parametrize(
    ("text", "reason"),
    [("QQ", None), ("QUJD", None), ("Q", "not base64: 1 characters"),
     ("QU*D", "not base64: '*' at 2"), ("QQ===", "not base64: 5 characters")],
)  # fmt: skip
def test_unbase64_takes_unpadded_text_and_names_what_is_wrong(
    light_wasm: Path, text: str, reason: str | None
) -> None:
    with PluginHarness(light_wasm, spec=LIGHT) as harness:
        if reason is None:
            assert bytes(harness.call("decode", text)) == base64.b64decode(text + "==")
        else:
            with pytest.raises(PluginError, match=re.escape(reason)):
                harness.call("decode", text)


def test_a_panic_reports_its_message_and_place(light_wasm: Path) -> None:
    with PluginHarness(light_wasm, spec=LIGHT) as harness:
        with pytest.raises(PluginError) as raised:
            harness.call("boom", 7)
        message = str(raised.value)
        assert "panicked at src/lib.rs:" in message
        assert "index out of bounds: the len is 3 but the index is 7" in message
        assert harness.call("boom", 1) == 20  # the plug-in still answers after a panic


def test_http_hooks_are_typed(light_wasm: Path) -> None:
    request = {"method": "GET", "path": "/blocked", "headers": {}, "query": {}, "body": ""}
    with PluginHarness(light_wasm, spec=LIGHT) as harness:
        answer = harness.call("http_pre_hook", {"context": {"n": 1}, "request": request})
        assert answer == {
            "context": {"blocked": True},
            "has_response": True,
            "response": {"status_code": 403, "headers": {}, "body": ""},
        }
        passed = harness.call(
            "http_pre_hook", {"context": {"n": 1}, "request": {**request, "path": "/"}}
        )
        assert passed == {"context": {"n": 1}}
        responded = harness.call(
            "http_pre_hook", {"context": {"n": 1}, "request": {**request, "path": "/respond"}}
        )
        assert responded == {
            "context": {"n": 1},
            "has_response": True,
            "response": {
                "status_code": 429,
                "headers": {"retry-after": "1"},
                "body": base64.b64encode(b"slow down").decode(),
            },
        }
        exports = harness.plugin.exports
    assert {"paint", "light_before_save", "light_after_destroy", "http_pre_hook"} <= set(exports)
    assert "light_after_update" not in exports  # only what the plug-in handles


# -- awkward.yaml ---------------------------------------------------------


def test_awkward_names_and_types_round_trip(awkward_wasm: Path) -> None:
    things = [THING, {**THING, "id": "t2", "class": None, "for": 2.5, "default": 0}]
    with PluginHarness(awkward_wasm, spec=AWKWARD) as harness:
        harness.mock("listThings", things)
        assert harness.call("echo_things") == things  # absent stays absent, null stays null
        assert sorted(harness.calls[0].query) == [
            ("limit", "3"),
            ("tags", "a"),
            ("tags", "b c"),
            ("type", "two words"),
        ]


def test_awkward_operations_bodies_and_parameters(awkward_wasm: Path) -> None:
    with PluginHarness(awkward_wasm, spec=AWKWARD) as harness:
        harness.mock("create", {**THING, "id": "t/1", "type": "9lives"}, status=201)
        harness.mock("delete_things_id_parts_part_no", status=204)
        harness.mock("match", {"ok": True})
        output = harness.call("make")
        assert output["made"]["type"] == "9lives"
        assert (output["gone"], output["gone_body"], output["matched"]) == (204, None, True)
        assert output["unmatched"] is True
        assert output["kinds"] == ["plain", "two words", "with-dash", "null", "class", "9lives"]
        create, delete, match, without = harness.calls
        assert create.body == {"type": "9lives", "owner_name": "snake", "ownerName": "camel"}
        assert (delete.method, delete.path) == ("DELETE", "/things/t/1/parts/7")
        assert delete.headers == {"If-Match": "etag-1"}
        assert match.body == {"self": "me", "async": True, "struct": 1.5}
        assert without.body is None  # an optional body left out


def test_awkward_before_event_helpers(awkward_wasm: Path) -> None:
    with PluginHarness(awkward_wasm, spec=AWKWARD) as harness:
        assert harness.fire("thing.before_save", record=THING) == {}
        rejected = harness.fire("thing.before_save", record={**THING, "class": None})
        assert rejected == {"reject": {"reason": "class is null"}}
        replaced = harness.fire("thing.before_save", record={**THING, "class": "x"})
        assert replaced == {"record": THING}
        assert harness.fire("thing.after_destroy", record=THING, previous=THING) is None
        assert harness.call(
            "http_stream_chunk_hook",
            {
                "context": {},
                "request": {"method": "GET", "path": "/", "headers": {}, "query": {}, "body": ""},
                "chunk": "",
            },
        ) == {"context": {}, "skip": True}


# -- hostwire plugin new --------------------------------------------------


def test_a_scaffolded_project_builds_with_its_command_and_runs(
    tmp_path: Path, cargo_env: dict[str, str]
) -> None:
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "hostwire",
            "plugin",
            "new",
            "demo",
            "--lang",
            "rust",
            "--dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    assert BUILD in created.stdout
    project = tmp_path / "demo"
    assert (project / "pdk" / "src" / "api.rs").is_file()
    assert not (project / ".cargo").exists()  # nothing to undo for another toolchain
    assert f"build = {json.dumps(BUILD)}" in (project / "hostwire.toml").read_text()
    env = {k: v for k, v in cargo_env.items() if k != "RUSTC"}  # hostwire picks the rustc
    built = subprocess.run(
        [sys.executable, "-m", "hostwire", "plugin", "build"],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "with Debian's Rust" in built.stderr  # rustup's toolchain here has no wasm32
    wasm = project / "build" / "plugin.wasm"
    with PluginHarness(wasm, spec=LIGHT, config={"greeting": "hi"}) as harness:
        assert harness.call("greet", "you") == {"message": "hi, you!"}
        assert harness.call("greet") == {"message": "hi, world!"}
        assert harness.fire("light.after_create", record=LIGHT_RECORD) is None
        harness.mock("getStates", {"status": "on", "color": "red"})
        assert harness.call("try_api") == {
            "status": 200,
            "body": {"status": "on", "color": "red"},
            "error": None,
        }


# -- generated names never take the runtime's ---------------------------------------

CLASH_PLUGIN = r"""
use hostwire_pdk::*;

export!(run, |_: ()| {
    let value: Value = json!({"ok": true});
    let _: Option<Response<Value>> = None;
    let _: Option<ApiError> = None;
    Ok(value)
});
"""


@pytest.mark.parametrize("document", ["every-runtime-name", "fastapi"])
def test_documents_full_of_the_runtimes_names_compile(
    document: str, tmp_path: Path, cargo_env: dict[str, str]
) -> None:
    spec = pdk_document(document, tmp_path, rust_runtime_names())
    wasm = build_plugin(tmp_path / "plugin", spec, "clash_plugin", CLASH_PLUGIN, cargo_env)
    with PluginHarness(wasm, spec=spec) as harness:
        assert harness.call("run") == {"ok": True}
