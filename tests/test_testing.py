"""hostwire.testing: the harness plug-in authors test with."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

import wat
from conftest import compile_wat
from hostwire import OpenAPIDocument, load_openapi
from hostwire.testing import HookFailed, MockReply, PluginHarness, RecordedCall

LIGHTS = "openapi/light.yaml"
RECORD = {
    "id": "lamp", "name": "Lamp", "status": "on", "color": "red", "brightness": 40,
    "created_at": "2026-11-21T20:00:00.000Z", "updated_at": "2026-11-21T21:00:00.000Z",
    "revision": 3,
}  # fmt: skip


@pytest.fixture
def caller_wasm(tmp_path: Path) -> Path:
    path = tmp_path / "caller.wasm"
    path.write_bytes(compile_wat(wat.caller("get_states", "update_light", "delete_light")))
    return path


def test_mocked_operations_answer_and_every_call_is_recorded(caller_wasm: Path) -> None:
    with PluginHarness(caller_wasm, spec=LIGHTS) as harness:
        harness.mock("getStates", {"status": "on", "color": "blue"})
        harness.mock(
            "updateLight",
            responder=lambda call: MockReply(200, {**RECORD, **call.body, "id": "lamp"}),
        )
        assert harness.call("call_get_states") == {
            "status": 200,
            "headers": {"content-type": "application/json"},
            "body": {"status": "on", "color": "blue"},
        }
        updated = harness.call(
            "call_update_light", {"path": {"id": "lamp"}, "body": {"brightness": 7}}
        )
        assert updated["body"]["brightness"] == 7
    assert [c.operation for c in harness.calls] == ["getStates", "updateLight"]
    assert harness.calls_to("updateLight") == [
        RecordedCall(
            "updateLight", "update_light", "PATCH", "/lights/lamp", [], {}, {"brightness": 7}
        )
    ]


def test_unmocked_invalid_and_ungranted_calls(caller_wasm: Path) -> None:
    with PluginHarness(caller_wasm, spec=LIGHTS, grants=["getStates", "updateLight"]) as harness:
        unmocked = harness.call("call_get_states")
        assert (unmocked["status"], unmocked["body"]["error"]["code"]) == (501, "not_mocked")
        invalid = harness.call(
            "call_update_light", {"path": {"id": "lamp"}, "body": {"color": "pink"}}
        )
        assert invalid["status"] == 400
        refused = harness.call("call_delete_light", {"path": {"id": "lamp"}})
        assert refused["body"]["error"]["code"] == "not_granted"
    # Only calls that were valid and granted reached the mocks.
    assert [c.operation for c in harness.calls] == ["getStates"]


def test_mocking_an_unknown_operation_is_an_error(caller_wasm: Path) -> None:
    with (
        PluginHarness(caller_wasm, spec=LIGHTS) as harness,
        pytest.raises(KeyError, match='"paintLight" is not an operation'),
    ):
        harness.mock("paintLight", {})


def test_fire_delivers_an_envelope_with_the_changes(tmp_path: Path) -> None:
    # The handler goes on (no output): an echo of the envelope is no before-answer.
    path = tmp_path / "go_on.wasm"
    path.write_bytes(
        compile_wat(
            "(module\n" + wat.KERNEL + '\n  (memory (export "memory") 1)\n'
            '  (func (export "light_before_save") (result i32) (i32.const 0)))'
        )
    )
    with PluginHarness(path, spec=LIGHTS) as harness:
        assert (
            harness.fire("light.before_save", record=RECORD, previous={**RECORD, "color": "blue"})
            is None
        )
        (envelope,) = harness.events
    assert envelope["type"] == "light.before_save"
    assert envelope["id"].startswith("evt_")
    assert envelope["data"]["record"] == RECORD
    assert envelope["data"]["changes"] == {"color": {"from": "blue", "to": "red"}}


def test_mocks_and_events_must_match_the_spec(caller_wasm: Path) -> None:
    with PluginHarness(caller_wasm, spec=LIGHTS) as harness:
        with pytest.raises(ValueError, match=r'mock body for "updateLight" \(200\).*name'):
            harness.mock("updateLight", {"id": "lamp"})  # a Light needs all its fields
        harness.mock("updateLight", RECORD)
        harness.mock("updateLight", {"error": {"code": "x", "message": "y"}}, status=404)
        with pytest.raises(KeyError, match='"updateLigth" is not an operation'):
            harness.calls_to("updateLigth")
        with pytest.raises(ValueError, match="brightness"):
            harness.fire("light.before_save", record={**RECORD, "brightness": 500})


LAGO = "tests/documents/lago/openapi.yaml"
FEATURE: dict[str, Any] = {
    "code": "seats",
    "name": "Seats",
    "description": None,
    "privileges": [],
    "created_at": "2026-12-01T10:00:00Z",
}
FEATURE_CREATED = {
    "webhook_type": "feature.created",
    "object_type": "feature",
    "organization_id": "1a901a90-1a90-1a90-1a90-1a901a901a90",
    "feature": FEATURE,
}
# A hand-written document whose invoice.created is a Standard Webhooks envelope.
ENVELOPED: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "billing", "version": "1"},
    "paths": {},
    "webhooks": {
        "invoice.created": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["id", "type", "timestamp", "data"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "type": {"const": "invoice.created"},
                                    "timestamp": {"type": "string", "format": "date-time"},
                                    "data": {
                                        "type": "object",
                                        "required": ["number", "total"],
                                        "properties": {
                                            "number": {"type": "string"},
                                            "total": {"type": "integer"},
                                        },
                                    },
                                },
                            }
                        }
                    }
                },
                "responses": {"200": {"description": "handled"}},
            }
        }
    },
}


def echo_wasm(tmp_path: Path, *exports: str) -> Path:
    """A plug-in whose exports answer their input: the harness returns what a handler got."""
    functions = "\n".join(
        f'  (func (export "{e}") (result i32)\n'
        "    (call $output_set (call $input_offset) (call $input_length)) (i32.const 0))"
        for e in exports
    )
    path = tmp_path / "echo.wasm"
    path.write_bytes(
        compile_wat(f'(module\n{wat.KERNEL}\n  (memory (export "memory") 1)\n{functions})')
    )
    return path


@pytest.fixture(scope="module")
def lago() -> OpenAPIDocument:
    return load_openapi(LAGO)


def test_fire_delivers_a_bare_webhook_payload_by_its_name_or_export(
    tmp_path: Path, lago: OpenAPIDocument
) -> None:
    with PluginHarness(echo_wasm(tmp_path, "feature_created"), spec=lago) as harness:
        assert harness.fire("feature.created", FEATURE_CREATED) == FEATURE_CREATED
        assert harness.fire("feature_created", FEATURE_CREATED) == FEATURE_CREATED


def test_fire_checks_a_payload_against_its_webhook_first(
    tmp_path: Path, lago: OpenAPIDocument
) -> None:
    wasm = echo_wasm(tmp_path, "feature_created")
    broken = {**FEATURE_CREATED, "feature": {**FEATURE, "privileges": {}}}
    with PluginHarness(wasm, spec=lago) as harness:
        with pytest.raises(ValueError, match=r"feature.created event does not match .*privileges"):
            harness.fire("feature_created", broken)
        with pytest.raises(ValueError, match=r'"feature_made" is not a webhook of .*feature'):
            harness.fire("feature_made", FEATURE_CREATED)
        with pytest.raises(TypeError, match="not a lifecycle event, so fire"):
            harness.fire("feature_created", record=RECORD)
        with pytest.raises(TypeError, match="a payload or record="):
            harness.fire("feature_created", FEATURE_CREATED, record=RECORD)


def test_fire_wraps_an_enveloped_webhooks_payload(tmp_path: Path) -> None:
    spec = tmp_path / "billing.json"
    spec.write_text(json.dumps(ENVELOPED))
    with PluginHarness(echo_wasm(tmp_path, "invoice_created"), spec=spec) as harness:
        envelope = harness.fire("invoice_created", {"number": "F-1", "total": 120})
        with pytest.raises(ValueError, match="/data/total"):
            harness.fire("invoice.created", {"number": "F-1", "total": "120"})
    assert envelope["id"].startswith("evt_")
    assert envelope["type"] == "invoice.created"
    assert envelope["data"] == {"number": "F-1", "total": 120}


# -- HTTP hooks: harness.request --------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


HOOKS = ("http_pre_hook", "http_post_hook", "http_stream_chunk_hook")
API_GUARD = Path("sample_plugins/api_guard/build/plugin.wasm")


def test_request_builds_the_hook_input_as_the_middleware_does(tmp_path: Path) -> None:
    # An echo pre-hook answers its input: it "rewrites" the request to what it saw.
    with PluginHarness(echo_wasm(tmp_path, *HOOKS), spec=LIGHTS) as harness:
        result = harness.request(
            "post",
            "/lights?x=1&x=2",
            query={"y": "3"},
            headers={"X-Mixed-Case": "v"},
            body={"name": "Lamp"},
            context={"trace": "t-1"},
        )
    assert result.hook == "http_pre_hook"
    assert result.passed  # it did not answer the request itself
    assert result.response is None
    assert result.context == {"trace": "t-1"}
    request = result.request
    assert (request.method, request.path) == ("POST", "/lights")
    assert request.query == {"x": "1,2", "y": "3"}  # repeated: joined with ","
    assert request.headers == {
        "x-mixed-case": "v", "content-type": "application/json", "content-length": "15"
    }  # fmt: skip
    assert request.json() == {"name": "Lamp"}
    assert request.body == b'{"name":"Lamp"}'


def test_request_decodes_a_short_circuit() -> None:
    if not API_GUARD.exists():
        pytest.fail(f"{API_GUARD} is missing: run `make plugins`, which builds it.")
    with PluginHarness(API_GUARD, spec=LIGHTS, config={"api_keys": "alice:s3cret"}) as harness:
        refused = harness.request("GET", "/lights")
        allowed = harness.request("GET", "/lights", headers={"X-API-Key": "s3cret"})
    assert not refused.passed
    assert refused.response is not None
    assert refused.response.status == 401
    assert refused.response.headers["www-authenticate"] == "ApiKey"
    assert refused.response.json()["error"]["code"] == "unauthorized"
    assert allowed.passed
    assert allowed.context == {"guard": "ok", "guard_key": "alice"}
    assert allowed.request.headers["x-api-key"] == "s3cret"


REDACTOR = Path("sample_plugins/redactor/build/plugin.wasm")


def test_a_post_hook_gets_the_context_its_pre_hook_left() -> None:
    # README "Writing plug-ins": the redactor redacts what its pre-hook marked.
    if not REDACTOR.exists():
        pytest.fail(f"{REDACTOR} is missing: run `make plugins`, which builds it.")
    with PluginHarness(REDACTOR, spec=LIGHTS, config={"redact": "name"}) as harness:
        before = harness.request("GET", "/lights")
        after = harness.request(
            "GET",
            "/lights",
            hook="http_post_hook",
            context=before.context,
            response=MockReply(200, {"lights": [RECORD]}),
        )
        alone = harness.request(
            "GET", "/lights", hook="http_post_hook", response=MockReply(200, {"lights": [RECORD]})
        )
    assert before.passed
    assert after.response is not None
    assert after.response.json() == {"lights": [{**RECORD, "name": "[redacted]"}]}
    assert alone.response is not None
    assert alone.response.json() == {"lights": [RECORD]}  # no mark: nothing redacted


def test_request_runs_the_post_and_chunk_hooks(tmp_path: Path) -> None:
    listed = {"lights": [RECORD]}
    with PluginHarness(echo_wasm(tmp_path, *HOOKS), spec=LIGHTS) as harness:
        post = harness.request(
            "GET",
            "/lights",
            hook="http_post_hook",
            context={"guard": "ok"},
            response=MockReply(200, listed, {"x-app": "1"}),
        )
        chunk = harness.request(
            "GET", "/events/stream", hook="http_stream_chunk_hook", chunk="data: one\n\n"
        )
    # The echo answers the response it got: the client gets the same one.
    assert post.response is not None
    assert (post.response.status, post.response.json()) == (200, listed)
    assert post.response.headers["x-app"] == "1"
    assert post.context == {"guard": "ok"}
    assert (chunk.passed, chunk.chunk) == (True, b"data: one\n\n")


def answer_wasm(tmp_path: Path, *exports: str) -> Path:
    """A plug-in whose exports all output config "answer"."""
    functions = "\n".join(
        f'''  (func (export "{e}") (result i32) (local $v i64)
    (local.set $v (call $config_get (call $to_block (i32.const 0) (i32.const 6))))
    (call $output_set (local.get $v) (call $length (local.get $v)))
    (i32.const 0))'''
        for e in exports
    )
    path = tmp_path / "answer.wasm"
    path.write_bytes(
        compile_wat(
            f'(module\n{wat.KERNEL}\n  (memory (export "memory") 1)\n'
            f'  (data (i32.const 0) "answer")\n{wat.TO_BLOCK}\n{functions})'
        )
    )
    return path


def test_request_refuses_what_the_middleware_refuses(tmp_path: Path) -> None:
    wasm = answer_wasm(tmp_path, *HOOKS)
    answer = {"has_response": True, "response": {"status_code": 403, "body": "no!"}}
    with (
        PluginHarness(wasm, spec=LIGHTS, config={"answer": json.dumps(answer)}) as harness,
        pytest.raises(
            HookFailed, match=r"http_pre_hook failed: .*response\.body is not valid base64"
        ),
    ):
        harness.request("GET", "/lights")
    rewrite = {"response": {"status_code": 200, "headers": {}, "body": b64("{}")}}
    with (
        PluginHarness(wasm, spec=LIGHTS, config={"answer": json.dumps(rewrite)}) as harness,
        pytest.raises(
            HookFailed,
            match="breaks the API: GET /lights 200 declares application/json, not a body",
        ),
    ):
        harness.request(
            "GET", "/lights", hook="http_post_hook", response=MockReply(200, {"lights": []})
        )
    # The app's response is checked as a mock's: the harness cannot pass on what it never sends.
    with (
        PluginHarness(wasm, spec=LIGHTS, config={"answer": "{}"}) as harness,
        pytest.raises(ValueError, match=r'mock body for "listLights" \(200\).*lights'),
    ):
        harness.request("GET", "/lights", hook="http_post_hook", response=MockReply(200, {}))


def test_request_names_what_is_missing(tmp_path: Path) -> None:
    with PluginHarness(answer_wasm(tmp_path, "http_pre_hook"), spec=LIGHTS) as harness:
        with pytest.raises(KeyError, match="does not export http_post_hook"):
            harness.request("GET", "/lights", hook="http_post_hook")
        with pytest.raises(ValueError, match=r'hook must be one of .*not "pre"'):
            harness.request("GET", "/lights", hook="pre")
        with pytest.raises(ValueError, match='must start with "/"'):
            harness.request("GET", "lights")
    with PluginHarness(answer_wasm(tmp_path, *HOOKS), spec=LIGHTS) as harness:
        with pytest.raises(TypeError, match="needs the app's response="):
            harness.request("GET", "/lights", hook="http_post_hook")
        with pytest.raises(TypeError, match="needs chunk="):
            harness.request("GET", "/lights", hook="http_stream_chunk_hook")
