"""Receiving signed webhooks: verified, known, valid, recorded once, delivered."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from event_plugins import wait_for
from gateway.kit import API_KEY, SECRET, FakeApp, invoice_created, sign
from hostwire._events.outbox import events
from hostwire._gateway import Gateway, load_gateway_config
from hostwire._hostapi import OpenAPIDocument
from postgres import PostgresServer

pytestmark = pytest.mark.usefixtures("environ")
CUSTOMER_PATH = "/api/v1/customers/cus_1"


@pytest.fixture
def gateway(
    fake_app: FakeApp, gateway_file: Callable[..., Path], lago: OpenAPIDocument
) -> Iterator[tuple[Gateway, TestClient]]:
    with (
        Gateway(load_gateway_config(gateway_file(fake_app.url)), document=lago) as gw,
        TestClient(gw.app) as client,
    ):
        yield gw, client


def stored_payload(gw: Gateway, event_id: str) -> Any:
    assert gw.outbox is not None
    with gw.outbox.engine.connect() as conn:
        row = conn.execute(select(events.c.payload).where(events.c.id == event_id)).one()
    return json.loads(row.payload)


def delivered(gw: Gateway, event_id: str) -> bool:
    assert gw.outbox is not None
    found = gw.outbox.deliveries(event_id=event_id)
    return bool(found) and all(d["state"] == "delivered" for d in found)


def test_a_signed_webhook_is_recorded_then_delivered_and_the_plugin_calls_the_app(
    gateway: tuple[Gateway, TestClient], fake_app: FakeApp
) -> None:
    gw, client = gateway
    body = invoice_created()
    data, headers = sign(body)

    response = client.post("/webhooks", content=data, headers=headers)

    assert response.status_code == 202, response.text
    assert response.json() == {
        "id": headers["webhook-id"],
        "type": "invoice_created",
        "plugins": ["on-invoice"],
    }
    # The handler gets the body exactly as the app sent it (a bare payload).
    assert stored_payload(gw, headers["webhook-id"]) == body
    wait_for(lambda: delivered(gw, headers["webhook-id"]), "the delivery")
    [call] = fake_app.seen(CUSTOMER_PATH)
    assert call["authorization"] == f"Bearer {API_KEY}"  # the configured credentials
    assert call["x-hostwire-plugin"] == "on-invoice"
    [row] = gw.outbox.deliveries(event_id=headers["webhook-id"])  # type: ignore[union-attr]
    assert row["subject"] == f"invoice/{body['invoice']['lago_id']}"


def test_a_replayed_webhook_id_is_delivered_once(
    gateway: tuple[Gateway, TestClient], fake_app: FakeApp
) -> None:
    gw, client = gateway
    data, headers = sign(invoice_created())

    first = client.post("/webhooks", content=data, headers=headers)
    wait_for(lambda: delivered(gw, headers["webhook-id"]), "the first delivery")
    again = client.post("/webhooks", content=data, headers=headers)
    # A retry with a fresh signature and timestamp is the same event too.
    resigned = sign(json.loads(data), webhook_id=headers["webhook-id"])
    third = client.post("/webhooks", content=resigned[0], headers=resigned[1])

    assert first.status_code == 202
    assert again.status_code == third.status_code == 200
    assert again.json()["duplicate"] is True
    assert len(gw.outbox.deliveries(event_id=headers["webhook-id"])) == 1  # type: ignore[union-attr]
    assert len(fake_app.seen(CUSTOMER_PATH)) == 1


def _other_secret(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return sign(body, secret="whsec_" + "QUJD" * 8)


def _tampered(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body.replace(b'"draft"', b'"finalized"'), headers


def _stale(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return sign(body, at=time.time() - 600)


def _future(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return sign(body, at=time.time() + 600)


def _unsigned(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {"content-type": "application/json", "webhook-id": headers["webhook-id"]}


def _garbled(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {**headers, "webhook-signature": "v1"}


@pytest.mark.parametrize(
    ("forge", "says"),
    [
        pytest.param(_other_secret, "No webhook-signature matches", id="wrong-secret"),
        pytest.param(_tampered, "No webhook-signature matches", id="tampered-body"),
        pytest.param(_stale, "too old", id="stale-timestamp"),
        pytest.param(_future, "in the future", id="future-timestamp"),
        pytest.param(_unsigned, "headers are required", id="missing-signature"),
        pytest.param(_garbled, "malformed", id="malformed-signature"),
    ],
)
def test_a_webhook_not_signed_by_the_app_is_refused_with_401(
    gateway: tuple[Gateway, TestClient],
    forge: Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]],
    says: str,
) -> None:
    gw, client = gateway
    data, headers = forge(*sign(invoice_created()))

    response = client.post("/webhooks", content=data, headers=headers)

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_signature"
    assert says in error["message"]
    assert "\n" not in error["message"]
    assert gw.outbox.deliveries() == []  # type: ignore[union-attr]


def test_the_tolerance_narrows_the_timestamp_window(
    fake_app: FakeApp, gateway_file: Callable[..., Path], lago: OpenAPIDocument
) -> None:
    path = gateway_file(
        fake_app.url,
        webhooks={"secret": SECRET, "event_type": "/webhook_type", "tolerance_s": 30},
    )
    with Gateway(path, document=lago) as gw, TestClient(gw.app) as client:
        late = client.post(
            "/webhooks",
            content=(s := sign(invoice_created(), at=time.time() - 90))[0],
            headers=s[1],
        )
        fresh = client.post("/webhooks", content=(f := sign(invoice_created()))[0], headers=f[1])
    assert late.status_code == 401
    assert "30 s" in late.json()["error"]["message"]
    assert fresh.status_code == 202


def test_a_body_that_is_not_json_is_refused_with_400(gateway: tuple[Gateway, TestClient]) -> None:
    _, client = gateway
    data, headers = sign(b"{not json")
    response = client.post("/webhooks", content=data, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_an_unknown_event_type_is_refused_naming_it(gateway: tuple[Gateway, TestClient]) -> None:
    _, client = gateway
    unknown = {**invoice_created(), "webhook_type": "invoice.exploded"}
    untyped = {k: v for k, v in invoice_created().items() if k != "webhook_type"}

    named = client.post("/webhooks", content=(s := sign(unknown))[0], headers=s[1])
    missing = client.post("/webhooks", content=(m := sign(untyped))[0], headers=m[1])

    assert named.status_code == missing.status_code == 422
    assert named.json()["error"]["code"] == "unknown_event"
    assert '"invoice.exploded" is not a webhook of' in named.json()["error"]["message"]
    assert "/webhook_type" in missing.json()["error"]["message"]


def test_a_body_that_breaks_the_webhooks_schema_is_refused_with_422(
    gateway: tuple[Gateway, TestClient],
) -> None:
    gw, client = gateway
    body = invoice_created()
    body["invoice"]["total_amount_cents"] = "a lot"
    data, headers = sign(body)

    response = client.post("/webhooks", content=data, headers=headers)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_payload"
    assert error["message"].startswith('The body breaks the schema of webhook "invoice_created": ')
    assert error["details"][0]["field"] == "/invoice/total_amount_cents"
    assert gw.outbox.deliveries() == []  # type: ignore[union-attr]


def test_healthz_answers_while_the_gateway_runs(gateway: tuple[Gateway, TestClient]) -> None:
    _, client = gateway
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert client.get("/nothing").status_code == 404
    assert client.get("/webhooks").status_code == 405


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_outbox_may_be_sqlite_or_postgresql(
    kind: str,
    request: pytest.FixtureRequest,
    fake_app: FakeApp,
    gateway_file: Callable[..., Path],
    lago: OpenAPIDocument,
    tmp_path: Path,
) -> None:
    if kind == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        database = server.create_database()
        request.addfinalizer(lambda: server.drop_database(database))
    else:
        database = "sqlite:///events/outbox.db"
        (tmp_path / "events").mkdir()
    path = gateway_file(fake_app.url, database=database)
    data, headers = sign(invoice_created())
    with Gateway(path, document=lago) as gw, TestClient(gw.app) as client:
        first = client.post("/webhooks", content=data, headers=headers)
        again = client.post("/webhooks", content=data, headers=headers)
        wait_for(lambda: delivered(gw, headers["webhook-id"]), "the delivery")
    assert (first.status_code, again.status_code) == (202, 200)
    assert len(fake_app.seen(CUSTOMER_PATH)) == 1
    if kind == "sqlite":
        assert (tmp_path / "events" / "outbox.db").is_file()  # relative to the file
