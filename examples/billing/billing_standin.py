"""A stand-in for a billing API (a subset of Lago's), in its own process.

It plays "an existing app, written in any language": it knows nothing of
hostwire (it never imports it) and does what such an app does. It answers
seven operations of Lago's API (openapi.yaml here) for callers with its API
key, and sends Standard Webhooks-signed webhooks (``customer.created``,
``invoice.created``, ``invoice.voided`` as Lago's ``webhook_type``) to one
URL, retrying with the same ``webhook-id`` until it gets a 2xx, as real apps
do.

    python examples/billing/billing_standin.py --port 8700 \\
        --webhook-url http://127.0.0.1:8600/webhooks \\
        --api-key demo-billing-key --secret whsec_...

Routes under ``/_standin/`` are for tests and the demo, not part of the API:
the calls it received, the webhooks it sent (with the exact signed requests,
for replay tests), and a switch that holds calls of one operation unanswered
until released (to kill a caller mid-call).
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import httpx
import uvicorn
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("billing-standin")
ORGANIZATION = "1a901a90-1a90-1a90-1a90-1a901a901a90"
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Sent:
    """One webhook: its exact signed request, and how its deliveries went."""

    id: str
    type: str
    body: str
    headers: dict[str, str]
    attempts: list[int | str] = field(default_factory=list)  # status codes or errors

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "body": self.body,
            "headers": self.headers,
            "attempts": self.attempts,
        }


class Sender:
    """Signs and sends webhooks from one thread, in order, retrying each until 2xx."""

    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.signer = Webhook(secret)
        self.sent: list[Sent] = []
        self._queue: queue.Queue[Sent | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)
        self._thread.start()

    def send(self, webhook_type: str, payload: dict[str, Any]) -> Sent:
        msg_id = f"msg_{uuid.uuid4().hex}"
        body = json.dumps(payload, separators=(",", ":"))
        stamp = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": self.signer.sign(msg_id, stamp, body),
        }
        sent = Sent(msg_id, webhook_type, body, headers)
        self.sent.append(sent)
        self._queue.put(sent)
        return sent

    def _run(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while (sent := self._queue.get()) is not None:
                for delay in (*RETRY_DELAYS_S, None):
                    try:
                        status: int | str = client.post(
                            self.url, content=sent.body, headers=sent.headers
                        ).status_code
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    sent.attempts.append(status)
                    log.info("webhook %s %s -> %s", sent.type, sent.id, status)
                    if (isinstance(status, int) and 200 <= status < 300) or delay is None:
                        break
                    time.sleep(delay)


class Billing:
    """The stand-in's state: customers, invoices, the calls it got, held operations."""

    def __init__(self, api_key: str, sender: Sender) -> None:
        self.api_key = api_key
        self.sender = sender
        self.customers: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.held: dict[str, int] = {}  # operation -> calls still to hold
        self.release = threading.Event()

    # -- helpers ---------------------------------------------------------------

    def record(self, request: Request, operation: str, body: Any) -> None:
        self.calls.append(
            {
                "operation": operation,
                "method": request.method,
                "path": request.url.path,
                "authorization": request.headers.get("authorization"),
                "user_agent": request.headers.get("user-agent"),
                "body": body,
                "at": time.time(),
            }
        )

    async def begin(self, request: Request, operation: str) -> tuple[Any, Response | None]:
        """Read and log a call; answer 401 for a wrong key, hold it if asked to."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return None, error(400, "bad_request", "The body is not JSON.")
        self.record(request, operation, body)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return body, JSONResponse({"status": 401, "error": "Unauthorized"}, status_code=401)
        if self.held.get(operation, 0) > 0:
            self.held[operation] -= 1
            await anyio.to_thread.run_sync(self.release.wait)
        return body, None

    def customer(self, fields: dict[str, Any]) -> dict[str, Any]:
        sequential = len(self.customers) + 1
        external = str(fields["external_id"])
        return {
            "lago_id": str(uuid.uuid4()),
            "sequential_id": sequential,
            "slug": f"standin-{sequential:03d}",
            "external_id": external,
            "name": fields.get("name") or external,
            "email": fields.get("email"),
            "currency": fields.get("currency") or "EUR",
            "applicable_timezone": "UTC",
            "created_at": now(),
        }

    def invoice(self, customer: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        total = 0
        for fee in fields.get("fees") or []:
            units = float(fee.get("units") or 1)
            total += round((fee.get("unit_amount_cents") or 0) * units)
        number = len(self.invoices) + 1
        stamp = now()
        return {
            "lago_id": str(uuid.uuid4()),
            "billing_entity_code": "default",
            "sequential_id": number,
            "number": f"STANDIN-{number:04d}",
            "issuing_date": stamp[:10],
            "invoice_type": "one_off",
            "status": "finalized",
            "payment_status": "pending",
            "currency": fields.get("currency") or customer["currency"],
            "fees_amount_cents": total,
            "coupons_amount_cents": 0,
            "credit_notes_amount_cents": 0,
            "sub_total_excluding_taxes_amount_cents": total,
            "taxes_amount_cents": 0,
            "sub_total_including_taxes_amount_cents": total,
            "prepaid_credit_amount_cents": 0,
            "progressive_billing_credit_amount_cents": 0,
            "total_amount_cents": total,
            "version_number": 4,
            "created_at": stamp,
            "updated_at": stamp,
            "customer": customer,
            "metadata": [],
        }

    def webhook(self, kind: str, name: str, value: dict[str, Any]) -> None:
        self.sender.send(
            kind,
            {
                "webhook_type": kind,
                "object_type": name,
                "organization_id": ORGANIZATION,
                name: value,
            },
        )

    # -- the API ---------------------------------------------------------------

    async def create_customer(self, request: Request) -> Response:
        body, refused = await self.begin(request, "createCustomer")
        if refused:
            return refused
        fields = (body or {}).get("customer") if isinstance(body, dict) else None
        if not isinstance(fields, dict) or not fields.get("external_id"):
            return error(422, "validation_errors", "customer.external_id is required.")
        with self.lock:
            existing = self.customers.get(str(fields["external_id"]))
            customer = existing or self.customer(fields)
            self.customers[customer["external_id"]] = customer
        if existing is None:
            self.webhook("customer.created", "customer", customer)
        return JSONResponse({"customer": customer})

    async def list_customers(self, request: Request) -> Response:
        _, refused = await self.begin(request, "findAllCustomers")
        if refused:
            return refused
        customers = list(self.customers.values())
        return JSONResponse({"customers": customers, "meta": meta(len(customers))})

    async def find_customer(self, request: Request) -> Response:
        _, refused = await self.begin(request, "findCustomer")
        if refused:
            return refused
        customer = self.customers.get(request.path_params["external_customer_id"])
        if customer is None:
            return error(404, "customer_not_found", "No such customer.")
        return JSONResponse({"customer": customer})

    async def create_invoice(self, request: Request) -> Response:
        body, refused = await self.begin(request, "createInvoice")
        if refused:
            return refused
        fields = (body or {}).get("invoice") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return error(422, "validation_errors", "invoice is required.")
        customer = self.customers.get(str(fields.get("external_customer_id")))
        if customer is None:
            return error(404, "customer_not_found", "No such customer.")
        with self.lock:
            invoice = self.invoice(customer, fields)
            self.invoices[invoice["lago_id"]] = invoice
        self.webhook("invoice.created", "invoice", invoice)
        return JSONResponse({"invoice": invoice})

    async def list_invoices(self, request: Request) -> Response:
        _, refused = await self.begin(request, "findAllInvoices")
        if refused:
            return refused
        invoices = list(self.invoices.values())
        return JSONResponse({"invoices": invoices, "meta": meta(len(invoices))})

    async def find_invoice(self, request: Request) -> Response:
        _, refused = await self.begin(request, "findInvoice")
        if refused:
            return refused
        invoice = self.invoices.get(request.path_params["lago_id"])
        if invoice is None:
            return error(404, "invoice_not_found", "No such invoice.")
        return JSONResponse({"invoice": invoice})

    async def update_invoice(self, request: Request) -> Response:
        body, refused = await self.begin(request, "updateInvoice")
        if refused:
            return refused
        invoice = self.invoices.get(request.path_params["lago_id"])
        if invoice is None:
            return error(404, "invoice_not_found", "No such invoice.")
        fields = (body or {}).get("invoice") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return error(422, "validation_errors", "invoice is required.")
        with self.lock:
            for item in fields.get("metadata") or []:
                kept = [m for m in invoice["metadata"] if m["key"] != item.get("key")]
                kept.append(
                    {
                        "lago_id": str(uuid.uuid4()),
                        "key": str(item.get("key")),
                        "value": str(item.get("value")),
                        "created_at": now(),
                    }
                )
                invoice["metadata"] = kept
            if fields.get("payment_status"):
                invoice["payment_status"] = fields["payment_status"]
            invoice["updated_at"] = now()
        return JSONResponse({"invoice": invoice})

    # -- for tests and the demo --------------------------------------------------

    async def standin_calls(self, request: Request) -> Response:
        return JSONResponse(self.calls)

    async def standin_webhooks(self, request: Request) -> Response:
        return JSONResponse([sent.view() for sent in self.sender.sent])

    async def standin_hold(self, request: Request) -> Response:
        body = await request.json()
        self.release.clear()
        self.held[str(body["operation"])] = int(body.get("count", 1))
        return JSONResponse({"held": self.held})

    async def standin_release(self, request: Request) -> Response:
        self.held.clear()
        self.release.set()
        return JSONResponse({"released": True})


def meta(count: int) -> dict[str, Any]:
    return {
        "current_page": 1,
        "next_page": None,
        "prev_page": None,
        "total_pages": 1,
        "total_count": count,
    }


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"status": status, "error": message, "code": code}, status_code=status)


def create_app(*, api_key: str, webhook_url: str, secret: str) -> Starlette:
    billing = Billing(api_key, Sender(webhook_url, secret))
    api = "/api/v1"
    routes = [
        Route(f"{api}/customers", billing.create_customer, methods=["POST"]),
        Route(f"{api}/customers", billing.list_customers, methods=["GET"]),
        Route(f"{api}/customers/{{external_customer_id}}", billing.find_customer, methods=["GET"]),
        Route(f"{api}/invoices", billing.create_invoice, methods=["POST"]),
        Route(f"{api}/invoices", billing.list_invoices, methods=["GET"]),
        Route(f"{api}/invoices/{{lago_id}}", billing.find_invoice, methods=["GET"]),
        Route(f"{api}/invoices/{{lago_id}}", billing.update_invoice, methods=["PUT"]),
        Route("/_standin/calls", billing.standin_calls, methods=["GET"]),
        Route("/_standin/webhooks", billing.standin_webhooks, methods=["GET"]),
        Route("/_standin/hold", billing.standin_hold, methods=["POST"]),
        Route("/_standin/release", billing.standin_release, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.billing = billing
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--webhook-url", required=True, help="where to POST webhooks")
    parser.add_argument("--api-key", required=True, help="the bearer token callers must send")
    parser.add_argument("--secret", required=True, help="Standard Webhooks secret (whsec_...)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="standin: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its own line per webhook is enough
    app = create_app(api_key=args.api_key, webhook_url=args.webhook_url, secret=args.secret)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
