"""The billing example end to end: an app hostwire does not import, plug-ins through the gateway.

Two real processes on 127.0.0.1: the billing stand-in (billing_standin.py, a
subset of Lago's API that sends Standard Webhooks-signed webhooks) and
`hostwire gateway` with examples/billing/gateway.yaml. The invoice_review
plug-in reacts to invoice_created by calling the app's updateInvoice; the
stand-in sees that call, with the gateway's credentials.
"""

from __future__ import annotations

import ast
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml
from billing_run import (
    HERE,
    HOSTWIRE,
    BillingClient,
    Pair,
    new_secret,
    resend,
    review,
    start_gateway,
    start_standin,
    stop,
    wait_for,
)
from standardwebhooks.webhooks import Webhook

from live_server import free_port

WASM = HERE / "plugins" / "invoice_review" / "build" / "plugin.wasm"


@pytest.fixture(autouse=True)
def _built() -> None:
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: run the tests with `make test`, which builds it.")


def gateway_config(tmp_path: Path) -> Path:
    """examples/billing/gateway.yaml with its paths made absolute and its outbox in tmp_path."""
    config = yaml.safe_load((HERE / "gateway.yaml").read_text(encoding="utf-8"))
    config["openapi"] = str(HERE / config["openapi"])
    for plugin in config["plugins"]:
        plugin["path"] = str(HERE / plugin["path"])
    config["database"] = f"sqlite:///{tmp_path / 'gateway.db'}"
    target = tmp_path / "gateway.yaml"
    target.write_text(yaml.safe_dump(config), encoding="utf-8")
    return target


@pytest.fixture
def pair() -> Pair:
    return Pair(free_port(), free_port(), "test-billing-key", new_secret())


@dataclass
class Running:
    """The two processes of a test, and what it needs to kill and restart the gateway."""

    pair: Pair
    config: Path
    log: IO[bytes]
    standin: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes]
    billing: BillingClient

    def restart_gateway(self) -> None:
        self.gateway = start_gateway(self.pair, self.config, self.log)


@pytest.fixture
def running(pair: Pair, tmp_path: Path) -> Iterator[Running]:
    config = gateway_config(tmp_path)
    with (tmp_path / "processes.log").open("wb") as log:
        standin = start_standin(pair, log)
        try:
            gateway = start_gateway(pair, config, log)
        except RuntimeError:
            stop(standin)
            raise
        run = Running(pair, config, log, standin, gateway, BillingClient(pair))
        try:
            yield run
        finally:
            run.billing.close()
            stop(run.gateway)
            stop(run.standin)


def updates_of(billing: BillingClient, lago_id: str) -> list[dict[str, Any]]:
    return [c for c in billing.calls("updateInvoice") if c["path"].endswith(f"/{lago_id}")]


def test_the_standin_is_an_app_hostwire_does_not_import() -> None:
    for file in ("billing_standin.py",):
        tree = ast.parse((HERE / file).read_text(encoding="utf-8"))
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
        }
        assert "hostwire" not in imported


def test_a_plugin_reacts_to_invoice_created_by_calling_the_app(
    running: Running, pair: Pair
) -> None:
    billing = running.billing
    billing.customer("acme", "Acme Corp")
    big = billing.invoice("acme", 12000, units="2")
    small = billing.invoice("acme", 500)

    assert wait_for(
        "the review of both invoices",
        lambda: all(review(billing.find_invoice(i["lago_id"])) for i in (big, small)),
    )
    assert review(billing.find_invoice(big["lago_id"])) == "required: 24000 cents"
    assert review(billing.find_invoice(small["lago_id"])) == "auto-approved"
    (call,) = updates_of(billing, big["lago_id"])
    # The gateway's credentials, which the plug-in never sees; the plug-in's own body.
    assert call["authorization"] == f"Bearer {pair.api_key}"
    assert call["body"] == {
        "invoice": {"metadata": [{"key": "review", "value": "required: 24000 cents"}]}
    }
    # Every webhook was taken at its first attempt: customer.created (no plug-in
    # handles it) and both invoice.created.
    sent = billing.webhooks()
    assert [(s["type"], s["attempts"]) for s in sent] == [
        ("customer.created", [202]),
        ("invoice.created", [202]),
        ("invoice.created", [202]),
    ]


def test_a_replayed_tampered_or_stale_webhook_is_refused(running: Running, pair: Pair) -> None:
    billing = running.billing
    billing.customer("acme", "Acme Corp")
    invoice = billing.invoice("acme", 700)
    wait_for("the review", lambda: review(billing.find_invoice(invoice["lago_id"])))
    sent = billing.webhooks()[-1]
    assert sent["type"] == "invoice.created"

    replay = resend(pair, sent)
    assert replay.status_code == 200
    assert replay.json()["duplicate"] is True

    tampered = json.loads(sent["body"])
    tampered["invoice"]["total_amount_cents"] = 1
    forged = resend(pair, sent, json.dumps(tampered, separators=(",", ":")))
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "invalid_signature"

    old = datetime.now(UTC) - timedelta(minutes=10)
    body = sent["body"]
    stale = httpx.post(
        f"{pair.gateway}/webhooks",
        content=body,
        headers={
            "content-type": "application/json",
            "webhook-id": "msg_stale",
            "webhook-timestamp": str(int(old.timestamp())),
            "webhook-signature": Webhook(pair.secret).sign("msg_stale", old, body),
        },
        timeout=10,
    )
    assert stale.status_code == 401

    # None of the three ran the plug-in again.
    assert len(updates_of(billing, invoice["lago_id"])) == 1


def test_an_event_received_before_a_kill_is_delivered_after_the_restart(
    running: Running, tmp_path: Path
) -> None:
    billing = running.billing
    billing.customer("acme", "Acme Corp")
    billing.hold("updateInvoice")  # the plug-in's call hangs: delivery is in flight
    invoice = billing.invoice("acme", 30000)
    wait_for("the plug-in's call", lambda: updates_of(billing, invoice["lago_id"]))
    # The gateway took the webhook (the app will not send it again) and dies mid-delivery.
    assert billing.webhooks()[-1]["attempts"] == [202]
    assert stop(running.gateway, kill=True) == -9
    billing.release()

    running.restart_gateway()
    assert wait_for(
        "the delivery after the restart",
        lambda: len(updates_of(billing, invoice["lago_id"])) >= 2,
    )
    assert review(billing.find_invoice(invoice["lago_id"])) == "required: 30000 cents"
    assert billing.webhooks()[-1]["attempts"] == [202]  # still sent once, by the app
    # The outbox: one event, delivered to the plug-in (after two attempts or one).
    listed = subprocess.run(
        [str(HOSTWIRE), "events", "list", "--db", str(tmp_path / "gateway.db"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    (delivery,) = [
        d for d in json.loads(listed.stdout) if d["event_id"] == billing.webhooks()[-1]["id"]
    ]
    assert delivery["plugin"] == "invoice-review"
    assert delivery["state"] == "delivered"
