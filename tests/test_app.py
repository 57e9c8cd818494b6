"""``Hostwire``: one object gives a Starlette or FastAPI app its plug-in system."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from conftest import compile_wat
from event_plugins import wait_for
from hostwire import (
    ConfigError,
    EventRejected,
    Hostwire,
    SpecError,
    StorageError,
)

ENVELOPE = {
    "type": "object",
    "required": ["id", "type", "timestamp", "data"],
    "properties": {
        "id": {"type": "string"},
        "type": {"type": "string"},
        "timestamp": {"type": "string"},
        "data": {
            "type": "object",
            "required": ["id", "reason"],
            "properties": {"id": {"type": "string"}, "reason": {"type": "string"}},
            "additionalProperties": False,
        },
    },
}
SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "items", "version": "1"},
    "paths": {
        "/items/{item_id}": {
            "get": {
                "operationId": "getItem",
                "parameters": [
                    {
                        "name": "item_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": {"description": "the item"}},
            }
        },
        "/received": {
            "post": {
                "operationId": "recordEvent",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {"204": {"description": "kept"}},
            }
        },
        "/refuse": {"get": {"operationId": "refuse", "responses": {"422": {"description": "x"}}}},
        "/full": {"get": {"operationId": "full", "responses": {"503": {"description": "x"}}}},
    },
    "webhooks": {
        "item.archived": {
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ENVELOPE}},
                },
                "responses": {"200": {"description": "handled"}},
            }
        }
    },
}

# Calls get_item for item 42 (export call_get_item), and hands every
# item.archived event to the app's recordEvent operation (export item_archived).
PLUGIN = r"""
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "load_u8" (func $load_u8 (param i64) (result i32)))
  (import "extism:host/user" "get_item" (func $get_item (param i64) (result i64)))
  (import "extism:host/user" "record_event" (func $record_event (param i64) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{\"body\":")
  (data (i32.const 16) "}")
  (data (i32.const 32) "{\"path\":{\"item_id\":\"42\"}}")
  (func $copy_mem (param $block i64) (param $ptr i32) (param $len i32)
    (local $i i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $block) (i64.extend_i32_u (local.get $i)))
        (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next))))
  (func (export "call_get_item") (result i32) (local $in i64) (local $out i64)
    (local.set $in (call $alloc (i64.const 25)))
    (call $copy_mem (local.get $in) (i32.const 32) (i32.const 25))
    (local.set $out (call $get_item (local.get $in)))
    (call $output_set (local.get $out) (call $length (local.get $out)))
    (i32.const 0))
  (func (export "item_archived") (result i32)
    (local $n i64) (local $block i64) (local $i i64)
    (local.set $n (call $input_length))
    (local.set $block (call $alloc (i64.add (local.get $n) (i64.const 9))))
    (call $copy_mem (local.get $block) (i32.const 0) (i32.const 8))
    (block $done (loop $next
      (br_if $done (i64.ge_u (local.get $i) (local.get $n)))
      (call $store_u8 (i64.add (local.get $block) (i64.add (i64.const 8) (local.get $i)))
        (call $load_u8 (i64.add (call $input_offset) (local.get $i))))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $next)))
    (call $store_u8 (i64.add (local.get $block) (i64.add (i64.const 8) (local.get $n)))
      (i32.const 125))
    (drop (call $record_event (local.get $block)))
    (i32.const 0)))
"""

# Answers every request itself with a 418 (an HTTP pre-hook that short-circuits).
TEAPOT_ANSWER = '{"has_response":true,"response":{"status_code":418,"headers":{},"body":""}}'
_TEAPOT_WAT_TEXT = TEAPOT_ANSWER.replace('"', '\\"')
TEAPOT = rf"""
(module
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{_TEAPOT_WAT_TEXT}")
  (func (export "http_pre_hook") (result i32) (local $block i64) (local $i i32)
    (local.set $block (call $alloc (i64.const {len(TEAPOT_ANSWER)})))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (i32.const {len(TEAPOT_ANSWER)})))
      (call $store_u8 (i64.add (local.get $block) (i64.extend_i32_u (local.get $i)))
        (i32.load8_u (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $output_set (local.get $block) (i64.const {len(TEAPOT_ANSWER)}))
    (i32.const 0)))
"""


def items_app(*, serve_spec: bool = True) -> Starlette:
    received: list[Any] = []

    async def get_item(request: Request) -> JSONResponse:
        return JSONResponse({"id": request.path_params["item_id"]})

    async def record(request: Request) -> JSONResponse:
        received.append(await request.json())
        return JSONResponse(None, status_code=204)

    async def refuse(request: Request) -> JSONResponse:
        raise EventRejected(
            'Plug-in "guard" rejected the change: no', plugin="guard", export="x", reason="no"
        )

    async def full(request: Request) -> JSONResponse:
        raise StorageError("Storage is unavailable: the disk is full.", kind="disk_full")

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(SPEC)

    routes = [
        Route("/items/{item_id}", get_item),
        Route("/received", record, methods=["POST"]),
        Route("/refuse", refuse),
        Route("/full", full),
    ]
    if serve_spec:
        routes.append(Route("/openapi.json", openapi))
    app = Starlette(routes=routes)
    app.state.received = received
    return app


def config_file(tmp_path: Path, **plugins: str) -> Path:
    entries = []
    for name, text in plugins.items():
        wasm = tmp_path / f"{name}.wasm"
        wasm.write_bytes(compile_wat(text))
        entries.append({"name": name, "path": wasm.name, "grants": ["*"]})
    path = tmp_path / "plugins.yaml"
    path.write_text(json.dumps({"plugins": entries, "events": {"poll_s": 0.2}}))
    return path


def test_a_starlette_app_gets_host_functions_for_its_served_document(tmp_path: Path) -> None:
    app = items_app()
    hw = Hostwire(app, config=config_file(tmp_path, items=PLUGIN))
    with TestClient(app):
        assert hw.document is not None
        assert hw.document.source == "the app's OpenAPI document"
        assert hw.plugins is not None
        output = json.loads(hw.plugins.plugins[0].call("call_get_item", b""))
    assert output["status"] == 200
    assert output["body"] == {"id": "42"}
    assert hw.plugins is None  # closed with the app


def test_emit_delivers_a_declared_webhook_to_its_handler_after_commit(tmp_path: Path) -> None:
    app = items_app()
    hw = Hostwire(app, config=config_file(tmp_path, items=PLUGIN), database=tmp_path / "app.db")
    with TestClient(app):
        event_id = hw.emit("item.archived", {"id": "7", "reason": "old"})
        wait_for(lambda: len(app.state.received) == 1, "the event's delivery")
    [envelope] = app.state.received
    assert envelope["id"] == event_id
    assert envelope["type"] == "item.archived"
    assert envelope["data"] == {"id": "7", "reason": "old"}


def test_emit_refuses_undeclared_events_and_data_that_breaks_the_webhook(
    tmp_path: Path,
) -> None:
    app = items_app()
    hw = Hostwire(app, config=config_file(tmp_path, items=PLUGIN), database=tmp_path / "a.db")
    with pytest.raises(RuntimeError, match="before Hostwire started"):
        hw.emit("item.archived", {"id": "7", "reason": "old"})
    with TestClient(app):
        with pytest.raises(ValueError, match=r'"item.gone" is not a webhook of .*item.archived'):
            hw.emit("item.gone", {"id": "7"})
        with pytest.raises(ValueError, match=r"does not match its webhook: .*reason"):
            hw.emit("item.archived", {"id": "7"})
    assert app.state.received == []


def test_emit_without_a_database_says_what_to_give(tmp_path: Path) -> None:
    app = items_app()
    hw = Hostwire(app, config=config_file(tmp_path, items=PLUGIN))
    with TestClient(app), pytest.raises(ConfigError, match=r"Hostwire\(database=...\)"):
        hw.emit("item.archived", {"id": "7", "reason": "old"})


def test_http_hooks_see_the_apps_requests(tmp_path: Path) -> None:
    app = items_app()
    Hostwire(app, config=config_file(tmp_path, teapot=TEAPOT))
    with TestClient(app) as client:
        assert client.get("/items/1").status_code == 418


def test_hostwire_errors_get_their_answers(tmp_path: Path) -> None:
    app = items_app()
    Hostwire(app, config=config_file(tmp_path))
    with TestClient(app) as client:
        refused = client.get("/refuse")
        full = client.get("/full")
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "rejected"
    assert refused.headers["x-hostwire-plugin"] == "guard"
    assert full.status_code == 503
    assert full.headers["retry-after"] == "5"


def test_an_app_without_a_document_fails_at_startup_with_what_to_do(tmp_path: Path) -> None:
    app = items_app(serve_spec=False)
    Hostwire(app, config=config_file(tmp_path))
    expected = r"answered 404 for /openapi.json: give Hostwire\(spec"
    with pytest.raises(SpecError, match=expected), TestClient(app):
        pass


def test_spec_can_be_a_dict_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    for spec in (SPEC, tmp_path / "spec.json"):
        app = items_app(serve_spec=False)
        hw = Hostwire(app, config=config_file(tmp_path, items=PLUGIN), spec=spec)
        with TestClient(app):
            assert hw.plugins is not None
            reply = json.loads(hw.plugins.plugins[0].call("call_get_item", b""))
            assert reply["body"] == {"id": "42"}


def test_a_bad_plugin_fails_start_with_the_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "broken.wasm").write_bytes(b"not wasm")
    config = tmp_path / "plugins.yaml"
    config.write_text("plugins: [{name: broken, path: broken.wasm}]")
    hw = Hostwire(items_app(), config=config, spec=SPEC)
    with pytest.raises(ConfigError, match='plugin "broken"'):
        hw.start()


def test_fastapi_documents_are_used_and_served_through_hostwire(tmp_path: Path) -> None:
    app = FastAPI(title="items", version="1")

    @app.get("/items/{item_id}", operation_id="getItem")
    def get_item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @app.post("/received", operation_id="recordEvent", status_code=204)
    def record_event(body: dict[str, Any]) -> None:
        return None

    hw = Hostwire(app, config=config_file(tmp_path, items=PLUGIN))
    with TestClient(app) as client:
        assert hw.plugins is not None
        reply = json.loads(hw.plugins.plugins[0].call("call_get_item", b""))
        served = client.get("/openapi.json").json()
    assert reply["body"] == {"id": "42"}
    assert served == hw.openapi()
    assert "/items/{item_id}" in served["paths"]


def test_emit_inside_a_session_commits_and_rolls_back_with_it(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    app = items_app()
    hw = Hostwire(app, config=config_file(tmp_path, items=PLUGIN), database=engine)
    with TestClient(app):
        assert hw.outbox is not None
        with Session(engine) as session:
            dropped = hw.emit("item.archived", {"id": "1", "reason": "no"}, connection=session)
            session.rollback()
        with Session(engine) as session:
            kept = hw.emit("item.archived", {"id": "2", "reason": "yes"}, connection=session)
            session.commit()
        wait_for(lambda: len(app.state.received) == 1, "the event's delivery")
        assert hw.outbox.deliveries(event_id=dropped) == []
    assert [e["id"] for e in app.state.received] == [kept]
    engine.dispose()
