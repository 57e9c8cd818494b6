"""The harness's verdict on a plug-in's answer is production's: hooks and before-events.

One WAT plug-in answers each hook or event with fixed JSON from its config; every
answer in the tables below goes through ``PluginHarness`` and through the real
path (``HttpHooksMiddleware`` around a Starlette app, ``EventBus.before``), and
both must agree: taken, or refused with the same reason.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import wat
from conftest import compile_wat
from hostwire import (
    EventBus,
    EventHandlerError,
    EventRejected,
    HostwireError,
    HttpHooksMiddleware,
    OpenAPIDocument,
    Plugin,
    PluginError,
    Subscriber,
    load_openapi,
)
from hostwire._hooks import HookInput, declare_hook_input
from hostwire.testing import MockReply, PluginHarness

LIGHTS = "openapi/light.yaml"
EXPORTS = ("http_pre_hook", "http_post_hook", "http_stream_chunk_hook", "light_before_save")
RECORD = {
    "id": "lamp", "name": "Lamp", "status": "on", "color": "red", "brightness": 40,
    "created_at": "2026-11-21T20:00:00.000Z", "updated_at": "2026-11-21T21:00:00.000Z",
    "revision": 3,
}  # fmt: skip
LIST = {"lights": [RECORD]}


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def answering(*exports: str) -> str:
    """A plug-in whose each export outputs the config value named after it (nothing when
    unset), importing no host function, so the harness and the app can both load it."""
    names = "".join(f'  (data (i32.const {256 + 64 * i}) "{e}")\n' for i, e in enumerate(exports))
    functions = "\n".join(
        f"""  (func (export "{e}") (result i32) (local $v i64)
    (local.set $v
      (call $config_get (call $to_block (i32.const {256 + 64 * i}) (i32.const {len(e)}))))
    (if (i64.eqz (local.get $v)) (then (return (i32.const 0))))
    (call $output_set (local.get $v) (call $length (local.get $v)))
    (i32.const 0))"""
        for i, e in enumerate(exports)
    )
    memory = '  (memory (export "memory") 1)'
    return f"(module\n{wat.KERNEL}\n{memory}\n{names}{wat.TO_BLOCK}\n{functions}\n)"


@pytest.fixture(scope="module")
def wasm() -> bytes:
    return compile_wat(answering(*EXPORTS))


@pytest.fixture(scope="module")
def spec() -> OpenAPIDocument:
    return load_openapi(LIGHTS)


def text(answer: Any) -> str:
    return answer if isinstance(answer, str) else json.dumps(answer)


# -- the production side ------------------------------------------------------------


def app_seen(request: Request, body: bytes) -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.url.path,
        "query": dict(request.query_params),
        "body": body.decode(),
    }


@pytest.fixture
def serve(wasm: bytes, spec: OpenAPIDocument) -> Iterator[Any]:
    """``serve(export, answer)``: a TestClient for an app whose one plug-in answers
    ``export`` with ``answer``; the app records what reached it."""
    opened: list[tuple[TestClient, Plugin]] = []

    def make(export: str, answer: Any) -> tuple[TestClient, list[dict[str, Any]]]:
        plugin = Plugin("plugin", wasm, config={export: text(answer)})
        seen: list[dict[str, Any]] = []

        async def lights(request: Request) -> Response:
            seen.append(app_seen(request, await request.body()))
            return JSONResponse(LIST)

        async def stream(request: Request) -> Response:
            async def chunks() -> AsyncIterator[bytes]:
                yield b"data: one\n\n"

            return StreamingResponse(chunks(), media_type="text/event-stream")

        middleware = Middleware(
            HttpHooksMiddleware, subscribers=lambda: [Subscriber(plugin)], spec=spec
        )
        app = Starlette(
            routes=[
                Route("/lights", lights, methods=["GET", "POST"]),
                Route("/lights/{id}", lights, methods=["GET", "POST"]),
                Route("/events/stream", stream),
            ],
            middleware=[middleware],
        )
        client = TestClient(app)
        opened.append((client, plugin))
        return client, seen

    yield make
    for client, plugin in opened:
        client.close()
        plugin.close()


def refused(response: Any) -> str | None:
    """The reason production refused a hook's answer (502 plugin_failed), or None."""
    if response.status_code == 502 and response.json()["error"]["code"] == "plugin_failed":
        message: str = response.json()["error"]["message"]
        return message
    return None


def harness(wasm: bytes, export: str, answer: Any) -> PluginHarness:
    return PluginHarness(wasm, spec=LIGHTS, config={export: text(answer)})


def harness_verdict(run: Any) -> tuple[str | None, Any]:
    """``(reason, result)``: the reason the harness refused the answer, else its result."""
    try:
        return None, run()
    except HostwireError as exc:
        return str(exc), None


# -- pre-hooks ----------------------------------------------------------------------

GOOD, BAD = True, False
PRE_ANSWERS: list[tuple[str, Any, bool]] = [
    ("no output", "", GOOD),
    ("empty", {}, GOOD),
    ("a context", {"context": {"user": "ann"}}, GOOD),
    (
        "a short-circuit",
        {
            "has_response": True,
            "response": {"status_code": 403, "headers": {"x-why": "no"}, "body": b64("no")},
        },
        GOOD,
    ),
    ("a rewrite", {"request": {"path": "/lights/lamp", "body": b64("x")}}, GOOD),
    ("a query rewrite", {"request": {"method": "post", "query": {"q": "1"}}}, GOOD),
    ("not JSON", "yes please", BAD),
    ("NaN", '{"context": NaN}', BAD),
    ("an array", [1], BAD),
    ("an error", {"error": "denied"}, BAD),
    ("a context that is text", {"context": "ann"}, BAD),
    ("has_response as text", {"has_response": "yes", "response": {"status_code": 403}}, BAD),
    ("a response without the flag", {"response": {"status_code": 403}}, BAD),
    ("a status under 200", {"has_response": True, "response": {"status_code": 199}}, BAD),
    ("a status over 599", {"has_response": True, "response": {"status_code": 600}}, BAD),
    ("a status as text", {"has_response": True, "response": {"status_code": "403"}}, BAD),
    ("a true status", {"has_response": True, "response": {"status_code": True}}, BAD),
    ("a response that is a list", {"has_response": True, "response": []}, BAD),
    (
        "a body not in base64",
        {"has_response": True, "response": {"status_code": 403, "body": "no!"}},
        BAD,
    ),
    (
        "a header name with a space",
        {"has_response": True, "response": {"status_code": 403, "headers": {"x why": "1"}}},
        BAD,
    ),
    (
        "a header value with CRLF",
        {"has_response": True, "response": {"status_code": 403, "headers": {"x": "a\r\nb: c"}}},
        BAD,
    ),
    (
        "a header value that is a number",
        {"has_response": True, "response": {"status_code": 403, "headers": {"x": 1}}},
        BAD,
    ),
    ("a request that is text", {"request": "/other"}, BAD),
    ("a relative path", {"request": {"path": "lights"}}, BAD),
    ("a method with a space", {"request": {"method": "G ET"}}, BAD),
    ("a request body not in base64", {"request": {"body": "hello"}}, BAD),
    ("a query of numbers", {"request": {"query": {"page": 2}}}, BAD),
    ("request headers with LF", {"request": {"headers": {"x": "a\nb"}}}, BAD),
]


@pytest.mark.parametrize(
    ("answer", "good"), [(a, g) for _, a, g in PRE_ANSWERS], ids=[n for n, _, _ in PRE_ANSWERS]
)
def test_a_pre_hook_answer_gets_the_same_verdict_in_the_harness_and_the_app(
    wasm: bytes, serve: Any, answer: Any, good: bool
) -> None:
    client, seen = serve("http_pre_hook", answer)
    response = client.post("/lights?page=1", json={"name": "Lamp"}, headers={"X-Api-Key": "k"})
    with harness(wasm, "http_pre_hook", answer) as h:
        reason, result = harness_verdict(
            lambda: h.request(
                "POST", "/lights?page=1", body={"name": "Lamp"}, headers={"X-Api-Key": "k"}
            )
        )
    assert reason == refused(response)
    assert (reason is None) is good, reason
    if result is None:
        return
    if result.passed:
        # What the app got in production is what the harness says it gets.
        (got,) = seen
        assert got["method"] == result.request.method
        assert got["path"] == result.request.path
        assert got["query"] == result.request.query
        assert got["body"] == result.request.text
    else:
        assert seen == []
        assert result.response is not None
        assert response.status_code == result.response.status
        assert response.content == result.response.body
        assert response.headers["x-why"] == result.response.headers["x-why"]


# -- post-hooks ---------------------------------------------------------------------

ERROR = {"error": {"code": "unauthorized", "message": "Who are you?"}}
POST_ANSWERS: list[tuple[str, Any, bool]] = [
    ("no output", "", GOOD),
    ("a context", {"context": {"seen": True}}, GOOD),
    (
        "headers only",
        {
            "response": {
                "status_code": 200,
                "headers": {"content-type": "application/json", "x-redacted": "1"},
                "body": b64(json.dumps(LIST)),
            }
        },
        GOOD,
    ),
    (
        "a body that keeps the schema",
        {
            "response": {
                "status_code": 200,
                "headers": {"content-type": "application/json"},
                "body": b64(json.dumps({"lights": []})),
            }
        },
        GOOD,
    ),
    (
        "a declared error",
        {
            "response": {
                "status_code": 401,
                "headers": {"content-type": "application/json", "www-authenticate": "ApiKey"},
                "body": b64(json.dumps(ERROR)),
            }
        },
        GOOD,
    ),
    (
        "a body that breaks the schema",
        {
            "response": {
                "status_code": 200,
                "headers": {"content-type": "application/json"},
                "body": b64(json.dumps({"lights": [{"id": "lamp"}]})),
            }
        },
        BAD,
    ),
    (
        "an undeclared status",
        {"response": {"status_code": 299, "headers": {}, "body": ""}},
        BAD,
    ),
    (
        "another media type",
        {"response": {"status_code": 200, "headers": {"content-type": "text/plain"}, "body": ""}},
        BAD,
    ),
    ("a status over 599", {"response": {"status_code": 700}}, BAD),
    ("a body not in base64", {"response": {"status_code": 200, "body": "{}"}}, BAD),
    ("headers that are a list", {"response": {"status_code": 200, "headers": ["x"]}}, BAD),
    ("a context that is a list", {"context": []}, BAD),
    ("an error", {"error": {"code": "boom"}}, BAD),
    ("not JSON", "{", BAD),
]


@pytest.mark.parametrize(
    ("answer", "good"), [(a, g) for _, a, g in POST_ANSWERS], ids=[n for n, _, _ in POST_ANSWERS]
)
def test_a_post_hook_answer_gets_the_same_verdict_in_the_harness_and_the_app(
    wasm: bytes, serve: Any, answer: Any, good: bool
) -> None:
    client, _ = serve("http_post_hook", answer)
    response = client.get("/lights")
    with harness(wasm, "http_post_hook", answer) as h:
        reason, result = harness_verdict(
            lambda: h.request(
                "GET", "/lights", hook="http_post_hook", response=MockReply(200, LIST)
            )
        )
    assert reason == refused(response)
    assert (reason is None) is good, reason
    if result is not None:
        assert result.response.status == response.status_code
        assert result.response.json() == response.json()
        assert result.passed is ("response" not in text(answer))


# -- chunk hooks --------------------------------------------------------------------

CHUNK_ANSWERS: list[tuple[str, Any, bool]] = [
    ("no output", "", GOOD),
    ("a new chunk", {"chunk": b64("data: two\n\n")}, GOOD),
    ("a skip", {"skip": True}, GOOD),
    ("a chunk not in base64", {"chunk": "data: two"}, BAD),
    ("a context that is text", {"context": "x"}, BAD),
]


@pytest.mark.parametrize(
    ("answer", "good"),
    [(a, g) for _, a, g in CHUNK_ANSWERS],
    ids=[n for n, _, _ in CHUNK_ANSWERS],
)
def test_a_chunk_hook_answer_gets_the_same_verdict_in_the_harness_and_the_app(
    wasm: bytes, serve: Any, answer: Any, good: bool, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = serve("http_stream_chunk_hook", answer)
    with caplog.at_level("ERROR", logger="hostwire.hooks"):
        streamed = client.get("/events/stream").content
    # Mid-stream there is no status left to change: production cuts the stream, and says why.
    cut = [r.getMessage() for r in caplog.records if "the stream was cut short" in r.getMessage()]
    with harness(wasm, "http_stream_chunk_hook", answer) as h:
        reason, result = harness_verdict(
            lambda: h.request(
                "GET", "/events/stream", hook="http_stream_chunk_hook", chunk="data: one\n\n"
            )
        )
    assert (reason is None) is good, reason
    assert bool(cut) is not good
    if reason is not None:
        assert reason.split(": ", 1)[1] in cut[0]
    else:
        assert streamed == (result.chunk or b"")


# -- before-events ------------------------------------------------------------------

BEFORE_ANSWERS: list[tuple[str, Any, str]] = [
    ("no output", "", "ok"),
    ("empty", {}, "ok"),
    ("a record", {"record": {**RECORD, "brightness": 10}}, "ok"),
    ("a rejection", {"reject": {"reason": "too bright at night"}}, "rejected"),
    ("a rejection as text", {"reject": "too bright at night"}, "error"),
    ("a rejection without a reason", {"reject": {}}, "error"),
    ("a rejection with an empty reason", {"reject": {"reason": ""}}, "error"),
    ("a rejection with a numeric reason", {"reject": {"reason": 3}}, "error"),
    ("a record that breaks the schema", {"record": {**RECORD, "brightness": 500}}, "error"),
    ("a record that is a number", {"record": 5}, "error"),
    ("both", {"record": RECORD, "reject": {"reason": "no"}}, "error"),
    ("another key", {"go": True}, "error"),
    ("an array", [], "error"),
    ("not JSON", "nope", "error"),
    ("NaN", '{"record": NaN}', "error"),
]


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [(a, v) for _, a, v in BEFORE_ANSWERS],
    ids=[n for n, _, _ in BEFORE_ANSWERS],
)
def test_a_before_event_answer_gets_the_same_verdict_in_the_harness_and_the_app(
    wasm: bytes, spec: OpenAPIDocument, answer: Any, verdict: str
) -> None:
    previous = {**RECORD, "color": "blue"}
    changes = {"color": {"from": "blue", "to": "red"}}
    with Plugin("plugin", wasm, config={"light_before_save": text(answer)}) as plugin:
        bus = EventBus([Subscriber(plugin)], spec=spec)
        try:
            bus.before("light", "before_save", dict(RECORD), previous, changes)
            production, why = "ok", ""
        except EventRejected as exc:
            production, why = "rejected", exc.reason
        except EventHandlerError as exc:
            production, why = "error", str(exc)
    with harness(wasm, "light_before_save", answer) as h:
        try:
            answered = h.fire("light.before_save", record=RECORD, previous=previous)
            found = "rejected" if isinstance(answered, dict) and "reject" in answered else "ok"
            said = answered["reject"]["reason"] if found == "rejected" else ""
        except PluginError as exc:
            found, said = "error", str(exc)
    assert (found, production) == (verdict, verdict)
    if verdict == "rejected":
        assert said == why
    elif verdict == "error":
        assert why.startswith(said)  # the app's error adds what it did about it


def test_a_rejection_in_the_wrong_shape_says_which_shape_is_right(wasm: bytes) -> None:
    with (
        harness(wasm, "light_before_save", {"reject": "too bright"}) as h,
        pytest.raises(
            PluginError,
            match=r'must reject with \{"reject": \{"reason": "..."\}\}, the reason a non-empty '
            r'string, not \{"reject": "too bright"\}',
        ),
    ):
        h.fire("light.before_save", record=RECORD)


# -- hook_input: what a plug-in that reads no bodies gets, and what it may change -----------


@pytest.fixture
def serve_lean(wasm: bytes, spec: OpenAPIDocument) -> Iterator[Any]:
    """``serve_lean(export, answer)``: as ``serve``, for a plug-in that reads no bodies."""
    opened: list[tuple[TestClient, Plugin]] = []

    def make(export: str, answer: Any) -> tuple[TestClient, list[dict[str, Any]]]:
        plugin = Plugin("plugin", wasm, config={export: text(answer)})
        declare_hook_input(plugin, HookInput(request_body=False, response_body=False))
        seen: list[dict[str, Any]] = []

        async def lights(request: Request) -> Response:
            seen.append(app_seen(request, await request.body()))
            return JSONResponse(LIST)

        middleware = Middleware(
            HttpHooksMiddleware, subscribers=lambda: [Subscriber(plugin)], spec=spec
        )
        app = Starlette(
            routes=[Route("/lights", lights, methods=["GET", "POST"])], middleware=[middleware]
        )
        client = TestClient(app)
        opened.append((client, plugin))
        return client, seen

    yield make
    for client, plugin in opened:
        client.close()
        plugin.close()


LEAN = {"request_body": False, "response_body": False}


def test_a_lean_pre_hooks_body_is_ignored_in_the_harness_and_the_app(
    wasm: bytes, serve_lean: Any
) -> None:
    answer = {"request": {"path": "/lights", "body": b64("not what was sent")}}
    client, seen = serve_lean("http_pre_hook", answer)
    client.post("/lights", content=b"sent")
    with PluginHarness(
        wasm, spec=LIGHTS, config={"http_pre_hook": text(answer)}, hook_input=LEAN
    ) as h:
        result = h.request("POST", "/lights", body=b"sent")
    assert seen[0]["body"] == "sent"
    assert result.request.body == b"sent"


def test_a_lean_post_hooks_body_is_ignored_in_the_harness_and_the_app(
    wasm: bytes, serve_lean: Any
) -> None:
    # Not JSON, so not the Light list the document declares: a plug-in that reads
    # the body would be refused; this one's body is moot, its header applies.
    answer = {
        "response": {
            "status_code": 200,
            "headers": {"content-type": "application/json", "x-lean": "1"},
            "body": b64("not JSON"),
        }
    }
    client, _ = serve_lean("http_post_hook", answer)
    response = client.get("/lights")
    with PluginHarness(
        wasm, spec=LIGHTS, config={"http_post_hook": text(answer)}, hook_input=LEAN
    ) as h:
        result = h.request("GET", "/lights", hook="http_post_hook", response=MockReply(200, LIST))
    assert result.response is not None
    assert response.json() == result.response.json() == LIST
    assert response.headers["x-lean"] == result.response.headers["x-lean"] == "1"


def test_the_harness_refuses_an_unknown_hook_input_key(wasm: bytes) -> None:
    with pytest.raises(ValueError, match="not headers"):
        PluginHarness(wasm, spec=LIGHTS, hook_input={"headers": True})
