"""Shared pieces of the gateway tests (conftest.py makes the fixtures available):
Lago's document, signed webhooks, WAT plug-ins, a fake billing app on 127.0.0.1
and gateway.yaml files."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import wat
from conftest import compile_wat
from hostwire._hostapi import OpenAPIDocument, load_openapi
from live_server import serving

ROOT = Path(__file__).resolve().parents[2]
LAGO = ROOT / "tests" / "documents" / "lago" / "openapi.yaml"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
API_KEY = "lago-api-key-1234"
INVOICE_CREATED = Path(__file__).with_name("invoice_created.json")


@pytest.fixture(scope="session")
def lago() -> OpenAPIDocument:
    """Lago's document, loaded once for the session (it takes seconds)."""
    return load_openapi(LAGO)


def sign(
    body: Any,
    *,
    secret: str = SECRET,
    webhook_id: str | None = None,
    at: float | None = None,
) -> tuple[bytes, dict[str, str]]:
    """``body`` as JSON bytes and the Standard Webhooks headers that sign it."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    signature = Webhook(secret).sign(msg_id, moment, data.decode())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return data, headers


def invoice_created(lago_id: str | None = None) -> dict[str, Any]:
    """A Lago ``invoice.created`` webhook body that keeps the document's schema
    (its required fields, from the document's examples)."""
    body: dict[str, Any] = json.loads(INVOICE_CREATED.read_text(encoding="utf-8"))
    body["invoice"]["lago_id"] = lago_id or str(uuid.uuid4())
    return body


# -- plug-ins -----------------------------------------------------------------------


def caller_wat(export: str, function: str) -> str:
    """A plug-in whose ``export`` calls host function ``function`` with config ``call``
    as input (the event itself is not passed on) and outputs the reply."""
    return f"""(module
{wat.KERNEL}
  (import "extism:host/user" "{function}" (func $f (param i64) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "call")
{wat.TO_BLOCK}
  (func (export "{export}") (result i32) (local $r i64)
    (local.set $r (call $f (call $config_get (call $to_block (i32.const 0) (i32.const 4)))))
    (call $output_set (local.get $r) (call $length (local.get $r)))
    (i32.const 0))
)"""


def answering_wat(*exports: str) -> str:
    """A plug-in whose exports output the config value named after them (nothing if unset)."""
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


def write_plugin(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.wasm"
    path.write_bytes(compile_wat(text))
    return path


# -- the fake billing app -------------------------------------------------------------


@dataclass
class FakeApp:
    """What the fake app saw: one (method, path, headers) per request."""

    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def seen(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [h for _, p, h in self.calls if p == path]


def fake_app_routes(fake: FakeApp) -> Starlette:
    async def customer(request: Request) -> Response:
        with fake.lock:
            fake.calls.append((request.method, request.url.path, dict(request.headers)))
        key = request.path_params["external_id"]
        return JSONResponse({"customer": {"external_id": key}})

    async def stream(request: Request) -> Response:
        with fake.lock:
            fake.calls.append((request.method, request.url.path, dict(request.headers)))
        body = await request.body()

        async def chunks() -> Any:
            yield b"echo:"
            yield body

        return StreamingResponse(chunks(), media_type="text/plain")

    async def moved(request: Request) -> Response:
        return Response(status_code=302, headers={"location": "http://example.invalid/"})

    return Starlette(
        routes=[
            Route("/api/v1/customers/{external_id}", customer, methods=["GET"]),
            Route("/api/v1/echo", stream, methods=["POST"]),
            Route("/api/v1/moved", moved, methods=["GET"]),
        ]
    )


@pytest.fixture
def fake_app() -> Iterator[FakeApp]:
    """A tiny billing app on 127.0.0.1 (uvicorn in a thread) that records every call."""
    fake = FakeApp()
    with serving(fake_app_routes(fake)) as url:
        fake.url = url
        yield fake


# -- gateway.yaml -------------------------------------------------------------------


@pytest.fixture
def gateway_file(tmp_path: Path) -> Callable[..., Path]:
    """Writes a gateway.yaml in tmp_path for the fake app at ``url``; keys override."""

    def write(url: str, **overrides: Any) -> Path:
        plugin = write_plugin(
            tmp_path, "on-invoice", caller_wat("invoice_created", "find_customer")
        )
        config: dict[str, Any] = {
            "openapi": str(LAGO),
            "app": {
                "base_url": f"{url}/api/v1",
                "headers": {"Authorization": "Bearer ${BILLING_API_KEY}"},
            },
            "webhooks": {
                "secret": "${WEBHOOK_SECRET}",
                "event_type": "/webhook_type",
                "subject": ["/{object_type}/lago_id"],
            },
            "plugins": [
                {
                    "name": "on-invoice",
                    "path": plugin.name,
                    "grants": ["findCustomer"],
                    "config": {"call": json.dumps({"path": {"external_customer_id": "cus_1"}})},
                }
            ],
            "events": {"backoff_s": 0.05, "poll_s": 0.2, "grace_s": 2},
        }
        for key, value in overrides.items():
            config[key] = value
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    return write


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_API_KEY", API_KEY)
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
