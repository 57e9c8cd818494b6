"""Which webhook a body is: by name, export or pinned value; envelopes; before-events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from starlette.testclient import TestClient

from event_plugins import wait_for
from gateway.kit import SECRET, answering_wat, sign, write_plugin
from hostwire._events.outbox import events
from hostwire._gateway import Gateway

ENVELOPE = {
    "type": "object",
    "required": ["type", "timestamp", "data"],
    "properties": {
        "id": {"type": "string"},
        "type": {"type": "string"},
        "timestamp": {"type": "string"},
        "data": {"type": "object", "properties": {"id": {"type": "string"}}},
    },
}
SHOP = {
    "openapi": "3.1.0",
    "info": {"title": "shop", "version": "1"},
    "paths": {},
    "webhooks": {
        # Named unlike its event type: found by the value its schema pins.
        "new-order": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["type", "order"],
                                "properties": {
                                    "type": {"const": "order.placed"},
                                    "order": {
                                        "type": "object",
                                        "properties": {"id": {"type": "string"}},
                                    },
                                },
                            }
                        }
                    }
                }
            }
        },
        "order.shipped": {
            "post": {"requestBody": {"content": {"application/json": {"schema": ENVELOPE}}}}
        },
        "order.before_save": {
            "post": {"requestBody": {"content": {"application/json": {"schema": ENVELOPE}}}}
        },
    },
}


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[Gateway, TestClient]]:
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump(SHOP), encoding="utf-8")
    write_plugin(tmp_path, "orders", answering_wat("new_order", "order_shipped"))
    config = {
        "openapi": "shop.yaml",
        "app": {"base_url": "http://127.0.0.1:9/"},
        "webhooks": {"secret": SECRET, "subject": ["/data/id", "/order/id"]},
        "plugins": [{"name": "orders", "path": "orders.wasm"}],
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with Gateway(tmp_path / "gateway.yaml") as gw, TestClient(gw.app) as client:
        yield gw, client


def post(client: TestClient, body: Any) -> tuple[int, Any, str]:
    data, headers = sign(body)
    response = client.post("/webhooks", content=data, headers=headers)
    return response.status_code, response.json(), headers["webhook-id"]


def stored(gw: Gateway, event_id: str) -> tuple[str, str, Any]:
    assert gw.outbox is not None
    with gw.outbox.engine.connect() as conn:
        row = conn.execute(
            select(events.c.type, events.c.subject, events.c.payload).where(events.c.id == event_id)
        ).one()
    return row.type, row.subject, json.loads(row.payload)


def test_a_webhook_is_found_by_the_value_its_schema_pins(
    shop: tuple[Gateway, TestClient],
) -> None:
    gw, client = shop
    status, answer, event_id = post(client, {"type": "order.placed", "order": {"id": "o1"}})

    assert (status, answer["type"], answer["plugins"]) == (202, "new-order", ["orders"])
    assert stored(gw, event_id) == (
        "new-order",
        "order/o1",
        {"type": "order.placed", "order": {"id": "o1"}},
    )
    wait_for(
        lambda: (
            [d["state"] for d in gw.outbox.deliveries(event_id=event_id)]  # type: ignore[union-attr]
            == ["delivered"]
        ),
        "the delivery",
    )


def test_an_envelope_gets_the_webhook_id_as_its_id(shop: tuple[Gateway, TestClient]) -> None:
    gw, client = shop
    body = {"type": "order.shipped", "timestamp": "2026-01-01T00:00:00Z", "data": {"id": "o1"}}

    status, answer, event_id = post(client, body)

    assert (status, answer["type"]) == (202, "order.shipped")
    assert stored(gw, event_id) == ("order.shipped", "order/o1", {"id": event_id, **body})


def test_a_lifecycle_before_event_never_comes_from_outside(
    shop: tuple[Gateway, TestClient],
) -> None:
    gw, client = shop
    body = {"type": "order.before_save", "timestamp": "2026-01-01T00:00:00Z", "data": {}}

    status, answer, _ = post(client, body)

    assert status == 422
    assert "lifecycle before-event" in answer["error"]["message"]
    assert gw.outbox.deliveries() == []  # type: ignore[union-attr]
