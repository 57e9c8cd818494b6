"""An app with one hot-reloadable WAT plug-in, for the reload tests."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import wat
from conftest import compile_wat
from hostwire import Hostwire

TOKEN = "reload-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "reload", "version": "1"},
    "paths": {
        "/note": {
            "post": {
                "operationId": "note",
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "noted"}},
            }
        },
        "/hello": {"get": {"operationId": "hello", "responses": {"200": {"description": "hi"}}}},
    },
    "webhooks": {
        "ping": {
            "post": {
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "ok"}},
            }
        }
    },
}


def _text(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def module(version: str, *, gated: bool = False) -> bytes:
    """A plug-in whose http_pre_hook answers every request itself with header
    ``x-version: <version>`` (``gated``: after a host call to ``note`` that the app
    holds until released), and whose ``ping`` export notes ``{"ping": version}``."""
    answer = json.dumps(
        {
            "context": {},
            "has_response": True,
            "response": {"status_code": 200, "headers": {"x-version": version}, "body": ""},
        },
        separators=(",", ":"),
    )
    hook_note = json.dumps({"body": {"hook": version}}, separators=(",", ":"))
    ping_note = json.dumps({"body": {"ping": version}}, separators=(",", ":"))
    gate = (
        f"(drop (call $note (call $to_block (i32.const 2048) (i32.const {len(hook_note)}))))"
        if gated
        else ""
    )
    text = f"""(module
{wat.KERNEL}
  (import "extism:host/user" "note" (func $note (param i64) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{_text(answer)}")
  (data (i32.const 2048) "{_text(hook_note)}")
  (data (i32.const 3072) "{_text(ping_note)}")
{wat.TO_BLOCK}
  (func (export "http_pre_hook") (result i32)
    {gate}
    (call $output_set (call $to_block (i32.const 0) (i32.const {len(answer)}))
      (i64.const {len(answer)}))
    (i32.const 0))
  (func (export "ping") (result i32)
    (drop (call $note (call $to_block (i32.const 3072) (i32.const {len(ping_note)}))))
    (i32.const 0))
)"""
    return compile_wat(text)


class Notes:
    """What the plug-ins noted, and the gate that holds the hooks' notes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[dict[str, Any]] = []
        self.gate = threading.Event()
        self.held = threading.Event()  # a hook's note is waiting at the gate

    def pings(self) -> list[str]:
        with self.lock:
            return [n["ping"] for n in self.seen if "ping" in n]


def make_app(tmp_path: Path, entry: dict[str, Any] | None = None) -> tuple[Starlette, Notes]:
    """An app serving plug-in ``ver`` (``ver.wasm``, version v1) from ``plugins.yaml``."""
    notes = Notes()

    async def note(request: Request) -> JSONResponse:
        body = await request.json()
        with notes.lock:
            notes.seen.append(body)
        if "hook" in body:
            notes.held.set()
            await anyio.to_thread.run_sync(notes.gate.wait, 20.0)
        return JSONResponse({"noted": True})

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"from": "app"})

    app = Starlette(routes=[Route("/note", note, methods=["POST"]), Route("/hello", hello)])
    (tmp_path / "ver.wasm").write_bytes(module("v1"))
    plugin = {"name": "ver", "path": "ver.wasm", "grants": ["note"], **(entry or {})}
    config = {
        "plugins": [plugin],
        "events": {"poll_s": 0.05, "backoff_s": 0.01, "max_backoff_s": 0.05},
    }
    (tmp_path / "plugins.yaml").write_text(json.dumps(config))
    Hostwire(
        app,
        config=tmp_path / "plugins.yaml",
        spec=SPEC,
        database=tmp_path / "outbox.db",
        admin_token=TOKEN,
    )
    return app, notes
