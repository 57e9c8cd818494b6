"""`make demo`'s gateway part: plug-ins for an app that hostwire does not import.

Starts the billing stand-in (examples/billing/billing_standin.py, seven of
Lago's operations, Standard Webhooks-signed webhooks) and `hostwire gateway`
(examples/billing/gateway.yaml) as two processes, creates a customer and two
invoices at the app, and shows the invoice_review plug-in reacting to
invoice_created by calling the app's updateInvoice; then a replayed and a
tampered webhook, refused. Both processes stop at the end.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "billing"))
from billing_run import (
    HERE,
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


def main() -> int:
    pair = Pair(
        int(os.environ.get("BILLING_PORT", "8700")),
        int(os.environ.get("GATEWAY_PORT", "8600")),
        "demo-billing-key",
        new_secret(),
    )
    with tempfile.TemporaryDirectory(prefix="hostwire-gateway-demo-") as tmp:
        config = yaml.safe_load((HERE / "gateway.yaml").read_text(encoding="utf-8"))
        config["database"] = f"sqlite:///{Path(tmp) / 'gateway.db'}"  # a fresh outbox each run
        config_file = HERE / ".demo-gateway.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        print(f"the billing stand-in on {pair.standin}, hostwire gateway on {pair.gateway}")
        standin = start_standin(pair)
        try:
            gateway = start_gateway(pair, config_file)
        except RuntimeError:
            stop(standin)
            raise
        billing = BillingClient(pair)
        try:
            return walkthrough(billing, pair)
        finally:
            billing.close()
            print(f"gateway stopped (exit status {stop(gateway)}); the stand-in too")
            stop(standin)
            config_file.unlink(missing_ok=True)


def walkthrough(billing: BillingClient, pair: Pair) -> int:
    print("\nThe app creates a customer and two invoices; each sends a signed webhook:")
    billing.customer("acme", "Acme Corp")
    invoices = [billing.invoice("acme", 12000, units="2"), billing.invoice("acme", 500)]
    for invoice in invoices:
        print(f"  invoice {invoice['number']}: {invoice['total_amount_cents']} cents")
    wait_for(
        "the plug-in's reviews",
        lambda: all(review(billing.find_invoice(i["lago_id"])) for i in invoices),
    )
    print("\nThe gateway took each webhook (the app's delivery log):")
    for sent in billing.webhooks():
        print(f"  {sent['type']:<17} {sent['id']}  answers {sent['attempts']}")
    print("\nThe invoice-review plug-in (C) got invoice_created and called updateInvoice:")
    for call in billing.calls("updateInvoice"):
        print(f"  {call['method']} {call['path']}  {json.dumps(call['body'])}")
        print(f"    authorization: {call['authorization'][:13]}... (the gateway's key)")
    for invoice in invoices:
        found = review(billing.find_invoice(invoice["lago_id"]))
        print(f"  invoice {invoice['number']}: review = {found}")
    sent = billing.webhooks()[-1]
    replay = resend(pair, sent)
    print(f"\nThe same webhook again (the app retrying): {replay.status_code} {replay.text}")
    forged = resend(
        pair, sent, sent["body"].replace('"total_amount_cents":500', '"total_amount_cents":5')
    )
    print(f"A tampered copy: {forged.status_code} {forged.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
