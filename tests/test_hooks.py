"""HTTP hooks (Contract 3) around a small Starlette app, with test plug-ins."""

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
from hostwire import CallContext, HostFunction, HttpHooksMiddleware, Limits, Plugin, Subscriber

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

    def make(*subscribers: Subscriber) -> TestClient:
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
            middleware=[Middleware(HttpHooksMiddleware, subscribers=lambda: chosen)],
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
    client = make_client(Subscriber(hook_plugin(recorder, "rewriter", http_pre_hook=rewrite)))
    client.post("/items?x=1&x=2", content=b"hello", headers={"X-Mixed-Case": "v"})
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


def test_post_hooks_may_replace_the_response(make_client: Any, recorder: Recorder) -> None:
    replaced = {
        "response": {
            "status_code": 200,
            "headers": {"content-type": "application/json", "x-redacted": "1"},
            "body": b64(json.dumps({"items": [1, 2], "secret": "[redacted]"})),
        }
    }
    client = make_client(Subscriber(hook_plugin(recorder, "redact", http_post_hook=replaced)))
    response = client.get("/items")
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
        pytest.param({"http_pre_hook": "not json"}, "not valid JSON", id="garbage"),
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
    from hostwire._hooks import INLINE_TIMEOUT_MS, _inline

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
