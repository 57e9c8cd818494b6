"""Every webhook is an event (issue 14): emitted through the outbox, enveloped or bare.

Lago's billing API (tests/documents/lago) declares its webhooks as bare payloads
(``{"webhook_type": "invoice.created", "object_type": "invoice", "invoice": {...}}``);
the small document here declares an enveloped one, an envelope without an id,
a bare one without an object inside, and a lifecycle before-event.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from conftest import ROOT, compile_wat
from event_plugins import wait_for
from hostwire import EventBus, Hostwire, OpenAPIDocument, SpecError, load_openapi

LAGO = ROOT / "tests/documents/lago/openapi.yaml"

# The operation the test plug-in hands every event it receives to (the app records it).
RECORD_EVENT = {
    "post": {
        "operationId": "recordEvent",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        "responses": {"204": {"description": "kept"}},
    }
}

INVOICE = {
    "lago_id": "1a901a90-1a90-1a90-1a90-1a901a901a90",
    "billing_entity_code": "acme",
    "number": "LAG-1234-001-002",
    "issuing_date": "2026-12-01",
    "invoice_type": "subscription",
    "status": "finalized",
    "payment_status": "pending",
    "currency": "EUR",
    "fees_amount_cents": 100,
    "coupons_amount_cents": 0,
    "credit_notes_amount_cents": 0,
    "sub_total_excluding_taxes_amount_cents": 100,
    "taxes_amount_cents": 20,
    "sub_total_including_taxes_amount_cents": 120,
    "prepaid_credit_amount_cents": 0,
    "progressive_billing_credit_amount_cents": 0,
    "total_amount_cents": 120,
    "version_number": 4,
    "created_at": "2026-12-01T10:00:00Z",
    "updated_at": "2026-12-01T10:00:00Z",
}
INVOICE_CREATED = {
    "webhook_type": "invoice.created",
    "object_type": "invoice",
    "organization_id": "2b902b90-2b90-2b90-2b90-2b902b902b90",
    "invoice": INVOICE,
}


def _envelope(data: dict[str, Any], *, closed: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "type": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
        "data": data,
    }
    if not closed:
        properties["id"] = {"type": "string", "pattern": "^evt_"}
    schema = {"type": "object", "required": ["type", "timestamp", "data"], "properties": properties}
    return {**schema, "additionalProperties": False} if closed else schema


def _webhook(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {"200": {"description": "handled"}},
        }
    }


ORDER = {
    "type": "object",
    "required": ["id", "carrier"],
    "properties": {"id": {"type": "string"}, "carrier": {"type": "string"}},
    "additionalProperties": False,
}
SHOP: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "shop", "version": "1"},
    "paths": {"/received": RECORD_EVENT},
    "webhooks": {
        "order.shipped": _webhook(_envelope(ORDER)),
        "order.sealed": _webhook(_envelope(ORDER, closed=True)),
        "stock_low": _webhook(
            {
                "type": "object",
                "required": ["sku", "count"],
                "properties": {"sku": {"type": "string"}, "count": {"type": "integer"}},
            }
        ),
        "order.before_save": _webhook(_envelope({"type": "object"})),
    },
}


def forwarder(*exports: str) -> str:
    """A plug-in whose exports call ``record_event`` with ``{"body": <their input>}``."""
    functions = "\n".join(
        f"""  (func (export "{e}") (result i32)
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
    (i32.const 0))"""
        for e in exports
    )
    return rf"""(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "load_u8" (func $load_u8 (param i64) (result i32)))
  (import "extism:host/user" "record_event" (func $record_event (param i64) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{{\"body\":")
  (func $copy_mem (param $block i64) (param $ptr i32) (param $len i32)
    (local $i i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $block) (i64.extend_i32_u (local.get $i)))
        (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next))))
{functions}
)"""


@pytest.fixture(scope="module")
def lago() -> OpenAPIDocument:
    """Lago's document, with the app's operation the test plug-in reports to."""
    document = copy.deepcopy(load_openapi(LAGO).document)
    document["paths"]["/received"] = RECORD_EVENT
    return load_openapi(document, name="Lago's document")


def recording_app(base_path: str = "") -> Starlette:
    """An app that keeps what ``recordEvent`` is sent; ``base_path`` is its document's
    (Lago's servers are at ``/api/v1``)."""

    async def record(request: Request) -> JSONResponse:
        request.app.state.received.append(await request.json())
        return JSONResponse(None, status_code=204)

    app = Starlette(routes=[Route(f"{base_path}/received", record, methods=["POST"])])
    app.state.received = []
    return app


def config_file(tmp_path: Path, *exports: str) -> Path:
    (tmp_path / "forward.wasm").write_bytes(compile_wat(forwarder(*exports)))
    path = tmp_path / "plugins.yaml"
    plugin = {"name": "forward", "path": "forward.wasm", "grants": ["recordEvent"]}
    path.write_text(json.dumps({"plugins": [plugin], "events": {"poll_s": 0.2}}))
    return path


def test_a_lago_plugin_gets_invoice_created_exactly_as_emitted(
    tmp_path: Path, lago: OpenAPIDocument
) -> None:
    app = recording_app(lago.base_path)
    config = config_file(tmp_path, "invoice_created")
    hw = Hostwire(app, config=config, spec=lago, database=tmp_path / "app.db")
    with TestClient(app):
        assert hw.outbox is not None
        event_id = hw.emit("invoice_created", INVOICE_CREATED)
        outbox = hw.outbox
        wait_for(
            lambda: outbox.deliveries(event_id=event_id, state="delivered") != [],
            "the event's delivery",
        )
        [delivery] = hw.outbox.deliveries(event_id=event_id)
    assert app.state.received == [INVOICE_CREATED]  # the bare payload, no envelope around it
    assert event_id.startswith("evt_")
    assert (delivery["type"], delivery["export"]) == ("invoice_created", "invoice_created")
    # Ordered with the invoice's other events: the id of the object inside.
    assert delivery["subject"] == f"invoice/{INVOICE['lago_id']}"


def test_a_lago_payload_that_breaks_its_schema_is_refused_naming_the_field(
    tmp_path: Path, lago: OpenAPIDocument
) -> None:
    app = recording_app(lago.base_path)
    config = config_file(tmp_path, "invoice_created")
    hw = Hostwire(app, config=config, spec=lago, database=tmp_path / "app.db")
    broken = {**INVOICE_CREATED, "invoice": {**INVOICE, "total_amount_cents": "120"}}
    with TestClient(app):
        assert hw.outbox is not None
        with pytest.raises(ValueError, match=r"^invoice_created event does not match") as caught:
            hw.emit("invoice_created", broken)
        assert "/invoice/total_amount_cents" in str(caught.value)
        assert "\n" not in str(caught.value)
        assert hw.outbox.deliveries() == []


def test_an_enveloped_webhook_gets_the_envelope_around_data(tmp_path: Path) -> None:
    app = recording_app()
    config = config_file(tmp_path, "order_shipped", "order_sealed", "stock_low")
    hw = Hostwire(app, config=config, spec=SHOP, database=tmp_path / "app.db")
    order = {"id": "o-1", "carrier": "post"}
    with TestClient(app):
        assert hw.outbox is not None
        shipped = hw.emit("order.shipped", order)
        sealed = hw.emit("order_sealed", order)  # the export names the webhook too
        low = hw.emit("stock_low", {"sku": "lamp", "count": 2})
        wait_for(lambda: len(app.state.received) == 3, "the events' deliveries")
        subjects = {d["event_id"]: d["subject"] for d in hw.outbox.deliveries()}
    by_type = {event.get("type", "stock_low"): event for event in app.state.received}
    envelope = by_type["order.shipped"]
    assert envelope == {
        "id": shipped,
        "type": "order.shipped",
        "timestamp": envelope["timestamp"],
        "data": order,
    }
    assert envelope["timestamp"].endswith("Z")
    # The declared envelope has no id and allows nothing else: hostwire keeps it beside.
    assert set(by_type["order.sealed"]) == {"type", "timestamp", "data"}
    assert by_type["stock_low"] == {"sku": "lamp", "count": 2}
    assert subjects == {shipped: "order/o-1", sealed: "order/o-1", low: low}


def test_emit_refuses_before_events_and_unknown_webhooks(tmp_path: Path) -> None:
    app = recording_app()
    config = config_file(tmp_path, "order_before_save", "stock_low")
    hw = Hostwire(app, config=config, spec=SHOP, database=tmp_path / "app.db")
    with TestClient(app):
        assert hw.outbox is not None
        with pytest.raises(ValueError, match=r'"order.before_save" is a before-event: .*cannot'):
            hw.emit("order.before_save", {"record": {}})
        with pytest.raises(ValueError, match=r'"stock_high" is not a webhook of .*stock_low'):
            hw.emit("stock_high", {"sku": "lamp", "count": 2})
        with pytest.raises(ValueError, match=r"stock_low event does not match .*/count"):
            hw.emit("stock_low", {"sku": "lamp"})
        assert hw.outbox.deliveries() == []


def test_an_event_nobody_handles_gets_an_id_and_no_delivery(tmp_path: Path) -> None:
    app = recording_app()
    hw = Hostwire(
        app, config=config_file(tmp_path, "stock_low"), spec=SHOP, database=tmp_path / "a.db"
    )
    with TestClient(app):
        assert hw.outbox is not None
        event_id = hw.emit("order.shipped", {"id": "o-2", "carrier": "post"})
        assert event_id.startswith("evt_")
        assert hw.outbox.deliveries() == []


def test_the_bus_checks_bare_payloads_and_envelopes_by_webhook(lago: OpenAPIDocument) -> None:
    bus = EventBus([], spec=lago)
    assert bus.problems(INVOICE_CREATED, "invoice_created") == []
    [problem] = bus.problems({**INVOICE_CREATED, "object_type": "fee"}, "invoice_created")
    assert problem["field"] == "/object_type"
    assert bus.webhook("feature_created").name == "feature.created"  # found by its export
    event = bus.event("invoice_created", INVOICE_CREATED)
    assert (event.payload, event.type, event.export) == (
        INVOICE_CREATED,
        "invoice_created",
        "invoice_created",
    )
    shop = EventBus([], spec=load_openapi(SHOP))
    envelope = shop.event("order.shipped", {"id": "o-3", "carrier": "post"}).payload
    assert shop.problems(envelope) == []  # an envelope names its webhook by its type
    assert shop.problems({**envelope, "data": {"id": "o-3"}})[0]["field"] == "/data/carrier"


def test_two_webhooks_on_one_export_fail_at_load_naming_both(tmp_path: Path) -> None:
    document = copy.deepcopy(SHOP)
    document["webhooks"]["stock.low"] = document["webhooks"]["stock_low"]
    expected = r'webhooks "stock.low" and "stock_low" both map to the plug-in export "stock_low"'
    with pytest.raises(SpecError, match=expected):
        load_openapi(document)
    hw = Hostwire(recording_app(), config=config_file(tmp_path, "stock_low"), spec=document)
    with pytest.raises(SpecError, match=expected):
        hw.start()


def test_the_load_summary_lists_the_webhooks_a_plugin_handles(
    tmp_path: Path, lago: OpenAPIDocument, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_file(tmp_path, "invoice_created", "feature_created", "not_an_event")
    caplog.set_level(logging.INFO, logger="hostwire.plugins")
    with Hostwire(recording_app(lago.base_path), config=config, spec=lago):
        pass
    assert 'loaded plug-in "forward": events feature_created, invoice_created;' in caplog.text
