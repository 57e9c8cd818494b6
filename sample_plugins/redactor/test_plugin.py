"""The redactor sample plug-in (C, on the C PDK: three HTTP hooks), run with the harness."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hostwire.testing import PluginHarness

WASM = Path(__file__).parent / "build" / "plugin.wasm"
SPEC = Path(__file__).parents[2] / "openapi" / "light.yaml"
REQUEST = {"method": "GET", "path": "/lights", "headers": {}, "query": {}, "body": ""}
STARTED = {"trace": "t-1", "redactor": {"started": True}}
LIGHT = {"id": "desk", "name": "Küche", "color": "red", "brightness": 80}


@pytest.fixture(scope="module")
def wasm() -> Path:
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: run the tests with `make test`, which builds it.")
    return WASM


@pytest.fixture(scope="module")
def redactor(wasm: Path) -> Iterator[Callable[..., PluginHarness]]:
    """The plug-in with a config (the hooks keep no state, so one per config)."""
    loaded: dict[str, PluginHarness] = {}

    def load(**config: str) -> PluginHarness:
        key = json.dumps(config, sort_keys=True)
        if key not in loaded:
            loaded[key] = PluginHarness(wasm, spec=SPEC, config=config)
        return loaded[key]

    yield load
    for harness in loaded.values():
        harness.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def response(
    body: object, content_type: str = "application/json", **headers: str
) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return {
        "status_code": 200,
        "headers": {"content-type": content_type, **headers},
        "body": b64(data),
    }


def post(
    harness: PluginHarness, answer: dict[str, Any], context: dict[str, Any] | None = None
) -> Any:
    value = {"context": STARTED if context is None else context, "request": REQUEST}
    return harness.call("http_post_hook", {**value, "response": answer})


def body_of(answer: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(answer["response"]["body"]))


def chunk(harness: PluginHarness, data: bytes | str) -> Any:
    text = b64(data) if isinstance(data, bytes) else data
    value = {"context": {"trace": "t-1"}, "request": REQUEST, "chunk": text}
    return harness.call("http_stream_chunk_hook", value)


# -- http_pre_hook -------------------------------------------------------------------


def test_the_pre_hook_marks_the_context_and_keeps_the_rest(
    redactor: Callable[..., PluginHarness],
) -> None:
    harness = redactor()
    answer = harness.call("http_pre_hook", {"context": {"trace": "t-1"}, "request": REQUEST})
    assert answer == {"context": STARTED}


def test_the_pre_hooks_context_reaches_the_post_hook(
    redactor: Callable[..., PluginHarness],
) -> None:
    harness = redactor()
    context = harness.call("http_pre_hook", {"context": {}, "request": REQUEST})["context"]
    answer = post(harness, response(LIGHT), context)
    assert body_of(answer) == {**LIGHT, "name": "[redacted]"}
    assert answer["context"] == {"redactor": {"started": True}}


# -- http_post_hook: redaction --------------------------------------------------------


def test_fields_are_redacted_at_any_depth_and_inside_arrays(
    redactor: Callable[..., PluginHarness],
) -> None:
    document = {
        "lights": [LIGHT, {**LIGHT, "id": "hall", "brightness": 5}],
        "rows": [[{"brightness": 1, "keep": {"brightness": {"deep": True}}}]],
        "summary": {"brightness": [1, 2, 3], "count": 2},
        "brightness_note": "kept: only exact member names match",
    }
    harness = redactor(redact="brightness")
    answer = post(harness, response(document))
    assert body_of(answer) == {
        "lights": [
            {**LIGHT, "brightness": "[redacted]"},
            {**LIGHT, "id": "hall", "brightness": "[redacted]"},
        ],
        "rows": [[{"brightness": "[redacted]", "keep": {"brightness": "[redacted]"}}]],
        "summary": {"brightness": "[redacted]", "count": 2},
        "brightness_note": "kept: only exact member names match",
    }
    assert answer["context"] == STARTED
    assert answer["response"]["status_code"] == 200


def test_the_fields_to_redact_are_configurable(redactor: Callable[..., PluginHarness]) -> None:
    harness = redactor(redact=" color , name,,")
    answer = post(harness, response([LIGHT]))
    assert body_of(answer) == [{**LIGHT, "color": "[redacted]", "name": "[redacted]"}]


@pytest.mark.parametrize(
    ("content_type", "redacted"),
    [
        pytest.param("application/json", True, id="json"),
        pytest.param("Application/JSON; charset=utf-8", True, id="json-charset"),
        pytest.param("application/problem+json", True, id="problem-json"),
        pytest.param("text/plain", False, id="text"),
        pytest.param("text/json-ish", False, id="text-json-ish"),
        pytest.param("application/jsonl", False, id="jsonl"),
    ],
)
def test_only_json_responses_are_redacted(
    redactor: Callable[..., PluginHarness], content_type: str, redacted: bool
) -> None:
    original = json.dumps(LIGHT, indent=2).encode()
    harness = redactor()
    answer = post(harness, response(original, content_type))
    body = base64.b64decode(answer["response"]["body"])
    if redacted:
        assert json.loads(body) == {**LIGHT, "name": "[redacted]"}
    else:
        assert body == original


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"name=desk", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"name": ', id="broken-json"),
        pytest.param(b'{\n  "id": "desk",  "color": "red"\n}', id="no-such-field"),
    ],
)
def test_bodies_without_anything_to_redact_stay_byte_for_byte(
    redactor: Callable[..., PluginHarness], body: bytes
) -> None:
    harness = redactor()
    answer = post(harness, response(body, **{"content-length": str(len(body))}))
    assert answer["response"]["body"] == b64(body)
    assert answer["response"]["headers"]["content-length"] == str(len(body))


@pytest.mark.parametrize("name", ["Content-Length", "content-length"])
def test_content_length_is_fixed_when_present(
    redactor: Callable[..., PluginHarness], name: str
) -> None:
    original = json.dumps({"lights": [LIGHT]}).encode()
    harness = redactor()
    answer = post(harness, response(original, **{name: str(len(original))}))
    body = base64.b64decode(answer["response"]["body"])
    assert len(body) != len(original)
    assert answer["response"]["headers"][name] == str(len(body))


def test_content_length_is_not_added_when_absent(redactor: Callable[..., PluginHarness]) -> None:
    harness = redactor()
    answer = post(harness, response(LIGHT))
    assert {k.lower() for k in answer["response"]["headers"]} == {"content-type", "x-served-by"}


@pytest.mark.parametrize(
    "context",
    [
        pytest.param({}, id="empty"),
        pytest.param({"trace": "t-1"}, id="other-keys"),
        pytest.param({"redactor": {"started": False}}, id="not-started"),
        pytest.param({"redactor": {"started": "yes"}}, id="not-a-boolean"),
        pytest.param({"redactor": True}, id="not-an-object"),
    ],
)
def test_without_the_pre_hooks_context_nothing_is_redacted(
    redactor: Callable[..., PluginHarness], context: dict[str, Any]
) -> None:
    original = response(LIGHT)
    harness = redactor()
    answer = post(harness, original, context)
    assert answer["context"] == context
    assert answer["response"]["body"] == original["body"]
    assert answer["response"]["headers"]["X-Served-By"] == "hostwire"


# -- http_post_hook: the added header -------------------------------------------------


def test_the_default_header_is_added_and_the_rest_kept(
    redactor: Callable[..., PluginHarness],
) -> None:
    answer_in = {**response(b"plain", "text/plain"), "status_code": 404}
    answer_in["headers"]["x-request-id"] = "r-1"
    harness = redactor()
    answer = post(harness, answer_in)
    assert answer == {
        "context": STARTED,
        "response": {
            "status_code": 404,
            "headers": {
                "content-type": "text/plain",
                "x-request-id": "r-1",
                "X-Served-By": "hostwire",
            },
            "body": b64(b"plain"),
        },
    }


def test_a_configured_header_replaces_one_of_the_same_name(
    redactor: Callable[..., PluginHarness],
) -> None:
    harness = redactor(header="X-Served-By:  edge-1 ")
    answer = post(harness, response(LIGHT, **{"x-served-by": "app"}))
    assert answer["response"]["headers"] == {
        "content-type": "application/json",
        "X-Served-By": "edge-1",
    }


def test_an_empty_setting_means_the_default(redactor: Callable[..., PluginHarness]) -> None:
    harness = redactor(header="", redact="", drop="")
    answer = post(harness, response(LIGHT))
    assert chunk(harness, b"anything") == {"context": {"trace": "t-1"}}
    assert answer["response"]["headers"]["X-Served-By"] == "hostwire"
    assert body_of(answer)["name"] == "[redacted]"


@pytest.mark.parametrize("setting", ["X-Served-By hostwire", ": hostwire", "X Served: y"])
def test_a_bad_header_setting_fails_the_hook_clearly(
    redactor: Callable[..., PluginHarness], setting: str
) -> None:
    harness = redactor(header=setting)
    answer = post(harness, response(LIGHT))
    assert answer == {
        "context": STARTED,
        "error": f'redactor: config "header" must be "Name: value", not "{setting}"',
    }


def test_a_body_that_is_not_base64_fails_the_hook(redactor: Callable[..., PluginHarness]) -> None:
    harness = redactor()
    answer = post(harness, {**response(LIGHT), "body": "not base64!"})
    assert answer == {"context": STARTED, "error": "redactor: the response body is not base64"}


@pytest.mark.parametrize(
    ("path", "redacted"),
    [
        pytest.param("/lights", True, id="the-prefix"),
        pytest.param("/lights/desk", True, id="under-it"),
        pytest.param("/states", True, id="another-prefix"),
        pytest.param("/lightsaber", False, id="not-at-a-segment-boundary"),
        pytest.param("/openapi.json", False, id="not-listed"),
    ],
)
def test_only_the_configured_paths_are_redacted(
    redactor: Callable[..., PluginHarness], path: str, redacted: bool
) -> None:
    harness = redactor(paths=" /lights/ , /states")
    value = {"context": STARTED, "request": {**REQUEST, "path": path}, "response": response(LIGHT)}
    answer = harness.call("http_post_hook", value)
    assert body_of(answer) == ({**LIGHT, "name": "[redacted]"} if redacted else LIGHT)
    assert answer["response"]["headers"]["X-Served-By"] == "hostwire"


# -- http_stream_chunk_hook -----------------------------------------------------------


def test_without_drop_every_chunk_passes_unchanged(redactor: Callable[..., PluginHarness]) -> None:
    harness = redactor()
    assert chunk(harness, b"data: secret\n\n") == {"context": {"trace": "t-1"}}
    assert chunk(harness, b"") == {"context": {"trace": "t-1"}}


@pytest.mark.parametrize(
    ("data", "skipped"),
    [
        pytest.param(b'data: {"token": "secret"}\n\n', True, id="contains"),
        pytest.param(b"secret", True, id="exactly"),
        pytest.param(b"data: public\n\n", False, id="does-not-contain"),
        pytest.param(b"data: SECRET\n\n", False, id="case-sensitive"),
        pytest.param(b"secre", False, id="shorter"),
        pytest.param(b"", False, id="empty"),
    ],
)
def test_chunks_containing_drop_are_skipped(
    redactor: Callable[..., PluginHarness], data: bytes, skipped: bool
) -> None:
    harness = redactor(drop="secret")
    answer = chunk(harness, data)
    expected: dict[str, Any] = {"context": {"trace": "t-1"}}
    if skipped:
        expected["skip"] = True
    assert answer == expected


@pytest.mark.parametrize("text", ["abc", "ab=c", "a*bc", "===="])
def test_a_chunk_that_is_not_base64_fails_the_hook(
    redactor: Callable[..., PluginHarness], text: str
) -> None:
    harness = redactor(drop="secret")
    answer = chunk(harness, text)
    assert answer == {"context": {"trace": "t-1"}, "error": "redactor: the chunk is not base64"}
