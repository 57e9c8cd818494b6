"""HTTP hooks (Contract 3) around a small Starlette app, with test plug-ins."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
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
    CallContext,
    HostFunction,
    HttpHooksMiddleware,
    Limits,
    OpenAPIDocument,
    Plugin,
    Subscriber,
    load_openapi,
)
from hostwire._hooks import HookInput, declare_hook_input

HOOKS = ("http_pre_hook", "http_post_hook", "http_stream_chunk_hook")


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def note(self) -> HostFunction:
        def record(context: CallContext, data: bytes) -> bytes:
            self.seen.append((context.plugin, context.export, json.loads(data)))
            return b"{}"

        return HostFunction("note", record)

    def exports(self) -> list[tuple[str, str]]:
        return [(plugin, export) for plugin, export, _ in self.seen]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def app_seen() -> list[dict[str, Any]]:
    return []


def hook_plugin(
    recorder: Recorder,
    name: str,
    exports: tuple[str, ...] = HOOKS,
    trap: bool = False,
    **answers: Any,
) -> Plugin:
    config = {k: v if isinstance(v, str) else json.dumps(v) for k, v in answers.items()}
    if trap:
        config["trap"] = "yes"
    return Plugin(
        name,
        compile_wat(wat.hook_handler(*exports)),
        config=config,
        host_functions=[recorder.note()],
        limits=Limits(timeout_ms=2000),
    )


@pytest.fixture
def make_client(app_seen: list[dict[str, Any]]) -> Iterator[Any]:
    clients: list[TestClient] = []
    plugins: list[Plugin] = []

    def make(*subscribers: Subscriber, spec: OpenAPIDocument | None = None) -> TestClient:
        plugins.extend(s.plugin for s in subscribers)
        chosen = list(subscribers)

        async def items(request: Request) -> Response:
            app_seen.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "query": dict(request.query_params),
                    "headers": dict(request.headers),
                    "body": (await request.body()).decode(),
                }
            )
            return JSONResponse({"items": [1, 2], "secret": "s3"})

        async def stream(request: Request) -> Response:
            async def chunks() -> AsyncIterator[bytes]:
                for part in ("one\n", "two\n", "three\n"):
                    yield part.encode()

            return StreamingResponse(chunks(), media_type="text/event-stream")

        async def cookies(request: Request) -> Response:
            response = JSONResponse({})
            response.set_cookie("a", "1")
            response.set_cookie("b", "2")
            return response

        async def delete(request: Request) -> Response:
            return Response(status_code=204)

        app = Starlette(
            routes=[
                Route("/items", items, methods=["GET", "POST"]),
                Route("/items", delete, methods=["DELETE"]),
                Route("/cookies", cookies),
                Route("/other", items, methods=["GET"]),
                Route("/stream", stream),
            ],
            middleware=[Middleware(HttpHooksMiddleware, subscribers=lambda: chosen, spec=spec)],
        )
        client = TestClient(app)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    for plugin in plugins:
        plugin.close()


def test_without_hook_plugins_requests_pass_through_untouched(
    make_client: Any, recorder: Recorder, app_seen: list[dict[str, Any]]
) -> None:
    events_only = hook_plugin(recorder, "events", exports=("light_after_update",))
    client = make_client(Subscriber(events_only))
    response = client.post("/items?x=1", content=b"hello")
    assert response.json() == {"items": [1, 2], "secret": "s3"}
    assert app_seen[0]["body"] == "hello"
    assert recorder.seen == []  # a plug-in without hooks is never called


def test_pre_hooks_see_the_request_and_may_rewrite_it(
    make_client: Any, recorder: Recorder, app_seen: list[dict[str, Any]]
) -> None:
    rewrite = {
        "context": {"rewritten": True},
        "request": {
            "method": "GET",
            "path": "/other",
            "headers": {"x-added": "yes"},
            "query": {"q": "new"},
            "body": b64("changed"),
        },
    }
    rewriter = hook_plugin(recorder, "rewriter", http_pre_hook=rewrite)
    client = make_client(Subscriber(rewriter))
    client.post("/items?x=1&x=2", content=b"hello", headers={"X-Mixed-Case": "v"})
    assert rewriter.stats.hooks == {"pass": 1, "rewrite": 1, "short_circuit": 0}  # pre, post
    (_, export, seen), *_ = recorder.seen
    assert export == "http_pre_hook"
    request = seen["request"]
    assert (request["method"], request["path"]) == ("POST", "/items")
    assert request["query"] == {"x": "1,2"}
    assert request["headers"]["x-mixed-case"] == "v"
    assert base64.b64decode(request["body"]) == b"hello"
    assert app_seen == [
        {
            "method": "GET",
            "path": "/other",
            "query": {"q": "new"},
            "headers": {"x-added": "yes", "content-length": "7"},
            "body": "changed",
        }
    ]  # fmt: skip  (Content-Length follows the new body)


def test_order_context_and_short_circuit(make_client: Any, recorder: Recorder) -> None:
    first = hook_plugin(recorder, "first", http_pre_hook={"context": {"first": 1}})
    answer = {
        "context": {"first": 1, "second": 2},
        "has_response": True,
        "response": {"status_code": 429, "headers": {"retry-after": "3"}, "body": b64("slow down")},
    }
    second = hook_plugin(recorder, "second", http_pre_hook=answer)
    third = hook_plugin(recorder, "third")
    client = make_client(Subscriber(first), Subscriber(second), Subscriber(third))
    response = client.get("/items")
    assert (response.status_code, response.text) == (429, "slow down")
    assert response.headers["retry-after"] == "3"
    # Pre-hooks in order until the short-circuit; post-hooks in reverse, only
    # for the plug-ins the request reached; the route and "third" never ran.
    assert recorder.exports() == [
        ("first", "http_pre_hook"), ("second", "http_pre_hook"),
        ("second", "http_post_hook"), ("first", "http_post_hook"),
    ]  # fmt: skip
    post_context = recorder.seen[3][2]["context"]
    assert post_context == {"first": 1, "second": 2}
    # What /metrics counts as hostwire_hook_decisions_total, per plug-in.
    decisions = {p.name: p.stats.hooks for p in (first, second, third)}
    assert decisions == {
        "first": {"pass": 2, "rewrite": 0, "short_circuit": 0},
        "second": {"pass": 1, "rewrite": 0, "short_circuit": 1},
        "third": {"pass": 0, "rewrite": 0, "short_circuit": 0},
    }


def test_post_hooks_may_replace_the_response(make_client: Any, recorder: Recorder) -> None:
    replaced = {
        "response": {
            "status_code": 200,
            "headers": {"content-type": "application/json", "x-redacted": "1"},
            "body": b64(json.dumps({"items": [1, 2], "secret": "[redacted]"})),
        }
    }
    redact = hook_plugin(recorder, "redact", http_post_hook=replaced)
    client = make_client(Subscriber(redact))
    response = client.get("/items")
    assert redact.stats.hooks == {"pass": 1, "rewrite": 1, "short_circuit": 0}  # pre, post
    assert response.json() == {"items": [1, 2], "secret": "[redacted]"}
    assert response.headers["x-redacted"] == "1"
    assert int(response.headers["content-length"]) == len(response.content)
    (_, _, seen) = recorder.seen[1]
    assert seen["response"]["status_code"] == 200
    assert json.loads(base64.b64decode(seen["response"]["body"])) == {
        "items": [1, 2], "secret": "s3"
    }  # fmt: skip


def test_streaming_responses_go_through_the_chunk_hooks_only(
    make_client: Any, recorder: Recorder
) -> None:
    upper = hook_plugin(recorder, "chunks", http_stream_chunk_hook={"chunk": b64("CHUNK\n")})
    skipper = hook_plugin(recorder, "skipper", http_stream_chunk_hook={"skip": True})
    client = make_client(Subscriber(upper))
    assert client.get("/stream").text == "CHUNK\nCHUNK\nCHUNK\n"
    exports = [e for _, e in recorder.exports()]
    assert exports.count("http_stream_chunk_hook") == 3
    assert "http_post_hook" not in exports
    chunks = [base64.b64decode(s["chunk"]) for _, e, s in recorder.seen if e.endswith("chunk_hook")]
    assert chunks == [b"one\n", b"two\n", b"three\n"]
    assert make_client(Subscriber(skipper)).get("/stream").text == ""


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        pytest.param({"trap": True}, "trapped", id="trap"),
        pytest.param({"http_pre_hook": "not json"}, "is not JSON", id="garbage"),
        pytest.param({"http_pre_hook": {"error": "database down"}}, "database down", id="error"),
        pytest.param(
            {"http_pre_hook": {"has_response": True, "response": {"status_code": 99}}},
            "status_code",
            id="bad-response",
        ),
        pytest.param(
            {"http_pre_hook": {"request": {"path": "no-slash"}}}, "starts with /", id="bad-path"
        ),
        pytest.param(
            {"http_pre_hook": {"request": {"query": "a=1"}}},
            "query must be an object",
            id="bad-query",
        ),
        pytest.param(
            {
                "http_pre_hook": {
                    "has_response": True,
                    "response": {
                        "status_code": 200,
                        "headers": {"x": "a\r\nSet-Cookie: evil=1"},
                        "body": "",
                    },
                }
            },
            "not valid HTTP",
            id="crlf-header",
        ),
        pytest.param(
            {"http_pre_hook": {"has_response": True, "response": {"status_code": 101}}},
            "status_code",
            id="switching-protocols",
        ),
    ],
)
def test_failing_hooks_follow_their_policy(
    make_client: Any, recorder: Recorder, answers: dict[str, Any], message: str
) -> None:
    trap = bool(answers.pop("trap", False))
    closed = make_client(Subscriber(hook_plugin(recorder, "flaky", trap=trap, **answers)))
    response = closed.get("/items")
    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["code"], error["plugin"]) == ("plugin_failed", "flaky")
    assert message in error["message"]
    opened = make_client(
        Subscriber(hook_plugin(recorder, "flaky", trap=trap, **answers), "fail_open")
    )
    assert opened.get("/items").json()["secret"] == "s3"
    assert opened.get("/items").status_code == 200  # and the next request too


def test_hooks_with_short_timeouts_run_on_the_event_loop(
    make_client: Any, recorder: Recorder
) -> None:
    from hostwire._hooks.calls import INLINE_TIMEOUT_MS, _inline

    def quick(name: str, **answers: Any) -> Plugin:
        config = {k: json.dumps(v) for k, v in answers.items()}
        return Plugin(
            name,
            compile_wat(wat.hook_handler(*HOOKS)),
            config=config,
            host_functions=[recorder.note()],
            limits=Limits(timeout_ms=INLINE_TIMEOUT_MS),
        )

    plain = Plugin(
        "plain",
        compile_wat(
            wat.hook_handler("http_pre_hook")
            .replace('(import "extism:host/user" "note" (func $note (param i64) (result i64)))', "")
            .replace("(drop (call $note (call $input_offset)))", "")
        ),
        limits=Limits(timeout_ms=INLINE_TIMEOUT_MS),
    )
    assert _inline(Subscriber(plain))
    assert not _inline(Subscriber(quick("calls-the-host")))  # it imports a host function
    assert not _inline(Subscriber(hook_plugin(recorder, "slow-timeout")))
    answer = {"has_response": True, "response": {"status_code": 418, "headers": {}, "body": ""}}
    client = make_client(
        Subscriber(plain), Subscriber(hook_plugin(recorder, "teapot", http_pre_hook=answer))
    )
    assert client.get("/items").status_code == 418
    # Every hook inline: the request is answered without a worker thread.
    assert make_client(Subscriber(plain)).get("/items").json()["secret"] == "s3"


def test_a_plugin_that_drops_the_context_cannot_erase_another_ones(
    make_client: Any, recorder: Recorder
) -> None:
    marker = hook_plugin(recorder, "marker", http_pre_hook={"context": {"marker": True}})
    rude = hook_plugin(recorder, "rude", http_pre_hook={"context": {"rude": 1}})
    client = make_client(Subscriber(marker), Subscriber(rude))
    client.get("/items")
    post_contexts = {p: s["context"] for p, e, s in recorder.seen if e == "http_post_hook"}
    assert post_contexts["marker"] == {"marker": True, "rude": 1}


def test_unrewritten_requests_and_responses_pass_as_they_were(
    make_client: Any, recorder: Recorder, app_seen: list[dict[str, Any]]
) -> None:
    client = make_client(Subscriber(hook_plugin(recorder, "watcher")))
    client.get("/items?x=1&x=2&y=a%2Cb&flag")
    assert app_seen[0]["query"] == {"x": "2", "y": "a,b", "flag": ""}  # Starlette's view
    cookies = client.get("/cookies")
    assert [c.split(";")[0] for c in cookies.headers.get_list("set-cookie")] == ["a=1", "b=2"]
    assert [e for _, e in recorder.exports()].count("http_post_hook") == 2


def test_post_hooks_run_for_responses_without_a_body(make_client: Any, recorder: Recorder) -> None:
    client = make_client(Subscriber(hook_plugin(recorder, "watcher")))
    assert client.delete("/items").status_code == 204
    assert [e for _, e in recorder.exports()] == ["http_pre_hook", "http_post_hook"]


def test_a_failing_chunk_hook_ends_the_stream(make_client: Any, recorder: Recorder) -> None:
    broken = hook_plugin(recorder, "broken", http_stream_chunk_hook="not json")
    client = make_client(Subscriber(broken))
    response = client.get("/stream")
    assert response.status_code == 200  # sent before the first chunk
    assert response.text == ""
    assert client.get("/items").status_code == 200  # and other requests keep flowing


def test_hook_plugins_with_too_small_an_input_limit_are_reported(
    make_client: Any, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(Subscriber(hook_plugin(recorder, "small")))
    with caplog.at_level("WARNING", logger="hostwire.hooks"):
        client.get("/items")
        client.get("/items")
    (record,) = [r for r in caplog.records if "max_input_bytes" in r.getMessage()]
    assert 'Plug-in "small"' in record.getMessage()


# -- answers that must never pass ------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"response": {"status_code": 401, "headers": {}, "body": ""}}, id="no-flag"),
        pytest.param(
            {"has_response": False, "response": {"status_code": 401, "headers": {}, "body": ""}},
            id="flag-false",
        ),
        pytest.param(
            {"has_response": "yes", "response": {"status_code": 401, "headers": {}, "body": ""}},
            id="flag-not-a-boolean",
        ),
    ],
)
def test_a_response_without_has_response_is_a_failure_not_a_pass(
    make_client: Any, recorder: Recorder, app_seen: list[dict[str, Any]], answer: dict[str, Any]
) -> None:
    # The C PDK once dropped has_response and sent only the response: a guard's
    # refusal must not turn into "go on".
    closed = make_client(Subscriber(hook_plugin(recorder, "guard", http_pre_hook=answer)))
    response = closed.get("/items")
    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["code"], error["plugin"]) == ("plugin_failed", "guard")
    assert "has_response" in error["message"]
    assert app_seen == []
    opened = make_client(
        Subscriber(hook_plugin(recorder, "guard", http_pre_hook=answer), "fail_open")
    )
    assert opened.get("/items").status_code == 200  # fail_open: as if the hook were not there


def raw_answer_plugin(name: str, answers: dict[str, bytes], limits: Limits | None = None) -> Plugin:
    """A plug-in with the three hooks; each answers exactly its bytes in ``answers``
    (together up to 60 KB), or nothing."""
    data, functions, offset = [], [], 0
    for export in HOOKS:
        answer = answers.get(export, b"")
        text = "".join(f"\\{b:02x}" for b in answer)
        data.append(f'  (data (i32.const {offset}) "{text}")')
        functions.append(
            f"""  (func (export "{export}") (result i32)
    (call $output_set (call $to_block (i32.const {offset}) (i32.const {len(answer)}))
      (i64.const {len(answer)}))
    (i32.const 0))"""
        )
        offset += len(answer)
    module = f"""(module
{wat.KERNEL}
  (memory (export "memory") 1)
{chr(10).join(data)}
{wat.TO_BLOCK}
{chr(10).join(functions)}
)"""
    return Plugin(name, compile_wat(module), limits=limits or Limits(timeout_ms=2000))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            b'{"context": {}, "x": "\xff"}', "not UTF-8 (byte 0xff at offset 22)", id="utf8"
        ),
        # json.loads(bytes) would guess UTF-16 from this and blame a 'utf-16-le' codec.
        pytest.param(b"{\x00 }\xff", "not UTF-8 (byte 0xff at offset 4)", id="utf16-looking"),
        pytest.param(b'{"context": NaN}', "not JSON: NaN is not a JSON number", id="nan"),
    ],
)
@pytest.mark.parametrize("export", ["http_pre_hook", "http_post_hook"])
def test_answers_that_are_not_utf8_json_fail_naming_the_plugin(
    make_client: Any, data: bytes, message: str, export: str
) -> None:
    client = make_client(Subscriber(raw_answer_plugin("garbled", {export: data})))
    response = client.get("/items")
    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["code"], error["plugin"]) == ("plugin_failed", "garbled")
    assert f"{export} failed: its answer is {message}" in error["message"]
    assert "codec" not in error["message"]


def test_a_chunk_answer_that_is_not_utf8_ends_the_stream_and_is_logged(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    garbled = raw_answer_plugin("garbled", {"http_stream_chunk_hook": b'{\x00"\xc3'})
    client = make_client(Subscriber(garbled))
    with caplog.at_level("ERROR", logger="hostwire.hooks"):
        assert client.get("/stream").text == ""
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "http_stream_chunk_hook failed" in line
    assert "its answer is not UTF-8 (byte 0xc3 at offset 3)" in line


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("export", ["http_pre_hook", "http_post_hook"])
def test_deep_json_answers_fail_naming_the_plugin(
    make_client: Any, recorder: Recorder, export: str
) -> None:
    answers: dict[str, Any] = {export: DEEP}
    client = make_client(Subscriber(hook_plugin(recorder, "deep", **answers)))
    response = client.get("/items")
    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["code"], error["plugin"]) == ("plugin_failed", "deep")
    assert f"{export} failed: its answer is JSON nested too deeply" in error["message"]


def test_a_deep_json_chunk_answer_ends_the_stream_and_is_logged(
    make_client: Any, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(Subscriber(hook_plugin(recorder, "deep", http_stream_chunk_hook=DEEP)))
    with caplog.at_level("ERROR", logger="hostwire.hooks"):
        assert client.get("/stream").text == ""
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert 'Plug-in "deep" http_stream_chunk_hook failed on GET "/stream"' in line
    assert "nested too deeply" in line
    assert client.get("/items").status_code == 200  # and the server goes on


def test_an_answer_over_max_output_bytes_is_refused(make_client: Any) -> None:
    big = b'{"context": {"pad": "' + b"x" * 5000 + b'"}}'
    chatty = raw_answer_plugin(
        "chatty", {"http_pre_hook": big}, Limits(timeout_ms=2000, max_output_bytes=1000)
    )
    response = make_client(Subscriber(chatty)).get("/items")
    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["code"], error["plugin"]) == ("plugin_failed", "chatty")
    assert "max_output_bytes" in error["message"]


# -- the request body ----------------------------------------------------------------


def test_a_client_that_leaves_before_its_body_is_complete_runs_nothing(
    recorder: Recorder,
) -> None:
    ran: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ran.append(scope["path"])

    plugin = hook_plugin(recorder, "watcher")
    middleware = HttpHooksMiddleware(app, lambda: [Subscriber(plugin)])
    messages = [
        {"type": "http.request", "body": b'{"action":"TurnOn"}', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Any] = []

    async def receive() -> Any:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/light_control", "query_string": b"",
        "headers": [(b"content-length", b"100")],
    }  # fmt: skip
    try:
        anyio.run(middleware, scope, receive, send)
    finally:
        plugin.close()
    assert (ran, recorder.seen, sent) == ([], [], [])  # no hook, no route, no answer


# -- the server's log ----------------------------------------------------------------


def test_a_fail_closed_failure_is_logged_on_the_server_in_one_escaped_line(
    make_client: Any, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    answer = {"error": "database down\nFAKE ERROR line\u202e"}
    client = make_client(Subscriber(hook_plugin(recorder, "flaky", http_pre_hook=answer)))
    with caplog.at_level("WARNING", logger="hostwire.hooks"):
        response = client.get("/items%0Aforged", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 502
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.getMessage() == (
        'Plug-in "flaky" http_pre_hook failed on GET "/items\\nforged" (request_id=req-42): '
        "it reported an error: database down\\nFAKE ERROR line\\u202e; "
        "its policy is fail_closed, so the client got 502."
    )
    # The fields --log-format json writes, for filtering by plug-in and outcome.
    fields = (record.plugin, record.export, record.outcome)  # type: ignore[attr-defined]
    assert fields == ("flaky", "http_pre_hook", "fail_closed")


def test_a_fail_open_failure_is_logged_escaped(
    make_client: Any, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    answer = {"error": "a\nb\u0000c"}
    plugin = hook_plugin(recorder, "flaky", http_pre_hook=answer)
    client = make_client(Subscriber(plugin, "fail_open"))
    with caplog.at_level("WARNING", logger="hostwire.hooks"):
        assert client.get("/items").status_code == 200
    (line,) = [r.getMessage() for r in caplog.records if "fail_open" in r.getMessage()]
    assert "it reported an error: a\\nb\\x00c; its policy is fail_open" in line


# -- rewrites keep the API's contract -------------------------------------------------

ITEMS_SPEC = """
openapi: 3.1.0
info: {title: items, version: "1"}
paths:
  /items:
    get:
      operationId: listItems
      responses:
        "200":
          description: The items.
          content:
            application/json:
              schema:
                type: object
                required: [items, secret]
                additionalProperties: false
                properties:
                  items: {type: array, items: {type: integer}}
                  secret: {type: string}
        4XX:
          description: A client error.
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Error"}
    delete:
      operationId: deleteItems
      responses:
        "204": {description: Deleted.}
components:
  schemas:
    Error:
      type: object
      required: [error]
      properties:
        error: {type: string}
"""


@pytest.fixture
def items_spec(tmp_path: Any) -> OpenAPIDocument:
    path = tmp_path / "items.yaml"
    path.write_text(ITEMS_SPEC, encoding="utf-8")
    return load_openapi(path)


def rewrite(body: object, status: int = 200, content_type: str = "application/json") -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": content_type, "x-rewritten": "1"}
    return {"response": {"status_code": status, "headers": headers, "body": b64(data)}}


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        pytest.param("/items", rewrite({"items": [1, 2], "secret": "[redacted]"}), id="a-string"),
        pytest.param("/items", rewrite({"error": "gone"}, 404), id="a-declared-status-range"),
        # Only the headers changed: nothing the document declares.
        pytest.param("/other", rewrite(b'{"items":[1,2],"secret":"s3"}'), id="headers-only"),
    ],
)
def test_rewrites_that_keep_the_declared_response_pass(
    make_client: Any, recorder: Recorder, items_spec: OpenAPIDocument, path: str, answer: Any
) -> None:
    plugin = hook_plugin(recorder, "rewriter", http_post_hook=answer)
    response = make_client(Subscriber(plugin), spec=items_spec).get(path)
    assert response.headers["x-rewritten"] == "1"
    assert response.content == base64.b64decode(answer["response"]["body"])


@pytest.mark.parametrize(
    ("path", "answer", "reason"),
    [
        pytest.param(
            "/items",
            rewrite({"items": "[redacted]", "secret": "s3"}),
            "the body breaks the 200 schema of GET /items: /items: '[redacted]' is not of "
            "type 'array'",
            id="wrong-type",
        ),
        pytest.param(
            "/items",
            rewrite({"items": [1], "secret": "s3", "extra": 1}),
            "Additional properties are not allowed",
            id="undeclared-member",
        ),
        pytest.param(
            "/items", rewrite({"error": 1}, 403), "the body breaks the 4XX schema", id="bad-error"
        ),
        pytest.param(
            "/items", rewrite({}, 500), "GET /items declares no 500 response", id="status"
        ),
        pytest.param(
            "/items",
            rewrite(b"hidden", content_type="text/plain"),
            "GET /items 200 declares application/json, not text/plain",
            id="media-type",
        ),
        pytest.param("/items", rewrite(b"{not json"), "the body is not JSON", id="not-json"),
        pytest.param(
            "/other",
            rewrite({"items": [1, 2], "secret": "[redacted]"}),
            "the OpenAPI document declares no operation GET /other",
            id="undeclared-path",
        ),
    ],
)
def test_rewrites_that_break_the_declared_response_are_refused(
    make_client: Any,
    recorder: Recorder,
    items_spec: OpenAPIDocument,
    caplog: pytest.LogCaptureFixture,
    path: str,
    answer: Any,
    reason: str,
) -> None:
    closed = hook_plugin(recorder, "rewriter", http_post_hook=answer)
    with caplog.at_level("WARNING", logger="hostwire.hooks"):
        response = make_client(Subscriber(closed), spec=items_spec).get(path)
    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["code"], error["plugin"]) == ("plugin_failed", "rewriter")
    assert "its rewritten response breaks the API" in error["message"]
    assert reason in error["message"]
    assert any(reason in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    # fail_open: the rewrite is dropped (and logged); the app's own answer goes out.
    opened = hook_plugin(recorder, "rewriter", http_post_hook=answer)
    caplog.clear()
    with caplog.at_level("WARNING", logger="hostwire.hooks"):
        kept = make_client(Subscriber(opened, "fail_open"), spec=items_spec).get(path)
    assert (kept.status_code, kept.json()) == (200, {"items": [1, 2], "secret": "s3"})
    assert "x-rewritten" not in kept.headers
    assert any(reason in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_a_short_circuit_answer_without_a_body_can_be_passed_on_by_post_hooks(
    make_client: Any, recorder: Recorder, items_spec: OpenAPIDocument
) -> None:
    answer = {"has_response": True, "response": {"status_code": 204, "headers": {}}}
    passed_on = {"response": {"status_code": 204, "headers": {"x-seen": "1"}, "body": ""}}
    plugin = hook_plugin(recorder, "guard", http_pre_hook=answer, http_post_hook=passed_on)
    response = make_client(Subscriber(plugin), spec=items_spec).delete("/items")
    assert (response.status_code, response.headers["x-seen"]) == (204, "1")


# -- hook_input: the bodies a plug-in reads ----------------------------------------


def test_a_plugin_that_reads_no_bodies_gets_none_and_cannot_change_them(
    make_client: Any, recorder: Recorder, app_seen: list[dict[str, Any]]
) -> None:
    # It echoes a request and a response with empty bodies, as a typed PDK that
    # copies what it got would: the real bodies must survive that.
    echo_request = {
        "request": {"method": "POST", "path": "/items", "headers": {}, "query": {}, "body": ""}
    }
    echo_response = {
        "response": {
            "status_code": 200,
            "headers": {"content-type": "application/json", "x-seen": "1"},
            "body": "",
        }
    }
    lean = hook_plugin(recorder, "lean", http_pre_hook=echo_request, http_post_hook=echo_response)
    declare_hook_input(lean, HookInput(request_body=False, response_body=False))
    full = hook_plugin(recorder, "full")
    client = make_client(Subscriber(lean), Subscriber(full))
    response = client.post("/items", content=b"hello")
    assert response.json() == {"items": [1, 2], "secret": "s3"}  # the app's body
    assert response.headers["x-seen"] == "1"  # its header change did apply
    assert app_seen[0]["body"] == "hello"
    seen = {(plugin, export): value for plugin, export, value in recorder.seen}
    # The lean plug-in got "body": "" (the field stays: typed PDKs need it).
    assert seen["lean", "http_pre_hook"]["request"]["body"] == ""
    assert seen["lean", "http_post_hook"]["request"]["body"] == ""
    assert seen["lean", "http_post_hook"]["response"]["body"] == ""
    assert seen["lean", "http_pre_hook"]["request"]["headers"]["content-length"] == "5"
    # The plug-in that reads bodies gets them, the same request as always.
    assert base64.b64decode(seen["full", "http_pre_hook"]["request"]["body"]) == b"hello"
    assert base64.b64decode(seen["full", "http_post_hook"]["request"]["body"]) == b"hello"
    assert json.loads(base64.b64decode(seen["full", "http_post_hook"]["response"]["body"])) == {
        "items": [1, 2], "secret": "s3"
    }  # fmt: skip


def test_a_plugin_that_reads_the_response_body_only_may_rewrite_it(
    make_client: Any, recorder: Recorder
) -> None:
    replaced = {
        "response": {
            "status_code": 200,
            "headers": {"content-type": "application/json"},
            "body": b64(json.dumps({"items": [], "secret": "[redacted]"})),
        }
    }
    redact = hook_plugin(recorder, "redact", http_post_hook=replaced)
    declare_hook_input(redact, HookInput(request_body=False))
    client = make_client(Subscriber(redact))
    response = client.post("/items", content=b"hello")
    assert response.json() == {"items": [], "secret": "[redacted]"}
    (_, _, pre), (_, _, post) = recorder.seen
    assert pre["request"]["body"] == post["request"]["body"] == ""
    assert json.loads(base64.b64decode(post["response"]["body"]))["secret"] == "s3"


def test_a_lean_plugins_own_answer_keeps_its_body(make_client: Any, recorder: Recorder) -> None:
    answer = {
        "has_response": True,
        "response": {"status_code": 401, "headers": {}, "body": b64("no key")},
    }
    guard = hook_plugin(recorder, "guard", http_pre_hook=answer)
    declare_hook_input(guard, HookInput(request_body=False, response_body=False))
    response = make_client(Subscriber(guard)).get("/items")
    assert (response.status_code, response.text) == (401, "no key")


def test_a_lean_plugin_needs_no_room_for_the_body_in_its_input(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    small = Limits(timeout_ms=2000, max_input_bytes=4096)
    lean = Plugin("lean", compile_wat(wat.hook_handler(*HOOKS)), limits=small,
                  host_functions=[recorder.note()])  # fmt: skip
    full = Plugin("full", compile_wat(wat.hook_handler(*HOOKS)), limits=small,
                  host_functions=[recorder.note()])  # fmt: skip
    declare_hook_input(lean, HookInput(request_body=False))
    try:
        with caplog.at_level("WARNING", logger="hostwire.hooks"):
            middleware = HttpHooksMiddleware(
                Starlette(), subscribers=lambda: [Subscriber(lean), Subscriber(full)]
            )
            middleware._hooked()
        warned = [r.getMessage() for r in caplog.records if "max_input_bytes" in r.getMessage()]
        assert len(warned) == 1
        assert '"full"' in warned[0]
    finally:
        lean.close()
        full.close()
