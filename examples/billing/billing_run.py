"""Start the billing stand-in and `hostwire gateway` as two processes, as a user would.

The demo (scripts/demo_gateway.py) and the end-to-end tests share this: each
process is a real command line, talking to the other over 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
HOSTWIRE = Path(sys.executable).with_name("hostwire")


def new_secret() -> str:
    """A Standard Webhooks secret: whsec_ and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass
class Pair:
    """The two processes' addresses and the secrets they share."""

    standin_port: int
    gateway_port: int
    api_key: str
    secret: str

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.standin_port}/api/v1"

    @property
    def standin(self) -> str:
        return f"http://127.0.0.1:{self.standin_port}"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def environment(self) -> dict[str, str]:
        """What gateway.yaml reads from the environment."""
        return {
            **os.environ,
            "BILLING_URL": self.api,
            "BILLING_API_KEY": self.api_key,
            "BILLING_WEBHOOK_SECRET": self.secret,
        }


def start_standin(pair: Pair, output: IO[Any] | int | None = None) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        str(HERE / "billing_standin.py"),
        "--port",
        str(pair.standin_port),
        "--webhook-url",
        f"{pair.gateway}/webhooks",
        "--api-key",
        pair.api_key,
        "--secret",
        pair.secret,
    ]
    process = subprocess.Popen(command, stdout=output, stderr=output)
    wait_until_up(f"{pair.standin}/_standin/calls", process, "the billing stand-in")
    return process


def start_gateway(
    pair: Pair, config: Path, output: IO[Any] | int | None = None
) -> subprocess.Popen[bytes]:
    command = [str(HOSTWIRE), "gateway", "--config", str(config), "--port", str(pair.gateway_port)]
    process = subprocess.Popen(command, stdout=output, stderr=output, env=pair.environment())
    wait_until_up(f"{pair.gateway}/healthz", process, "hostwire gateway")
    return process


def wait_until_up(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before it served")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{what} did not answer {url} within 30 s")


def stop(process: subprocess.Popen[bytes], *, kill: bool = False) -> int:
    """SIGTERM (or SIGKILL) ``process`` and wait for it; its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class BillingClient:
    """The stand-in's API, as an app's own client would call it."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.client = httpx.Client(
            base_url=pair.api, headers={"Authorization": f"Bearer {pair.api_key}"}, timeout=10
        )

    def customer(self, external_id: str, name: str) -> dict[str, Any]:
        body = {"customer": {"external_id": external_id, "name": name}}
        return self._ok(self.client.post("/customers", json=body))["customer"]  # type: ignore[no-any-return]

    def invoice(self, external_id: str, cents: int, units: str = "1") -> dict[str, Any]:
        fee = {"add_on_code": "setup_fee", "unit_amount_cents": cents, "units": units}
        body = {"invoice": {"external_customer_id": external_id, "fees": [fee]}}
        return self._ok(self.client.post("/invoices", json=body))["invoice"]  # type: ignore[no-any-return]

    def find_invoice(self, lago_id: str) -> dict[str, Any]:
        return self._ok(self.client.get(f"/invoices/{lago_id}"))["invoice"]  # type: ignore[no-any-return]

    def calls(self, operation: str | None = None) -> list[dict[str, Any]]:
        found = httpx.get(f"{self.pair.standin}/_standin/calls", timeout=10).json()
        return [c for c in found if operation is None or c["operation"] == operation]

    def webhooks(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.pair.standin}/_standin/webhooks", timeout=10).json()  # type: ignore[no-any-return]

    def hold(self, operation: str, count: int = 1) -> None:
        body = {"operation": operation, "count": count}
        httpx.post(f"{self.pair.standin}/_standin/hold", json=body, timeout=10)

    def release(self) -> None:
        httpx.post(f"{self.pair.standin}/_standin/release", timeout=10)

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def _ok(response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise AssertionError(f"{response.request.url}: {response.status_code} {response.text}")
        return response.json()  # type: ignore[no-any-return]


def review(invoice: Mapping[str, Any]) -> str | None:
    """The invoice's "review" metadata, which the plug-in sets."""
    for item in invoice.get("metadata") or []:
        if item.get("key") == "review":
            return str(item.get("value"))
    return None


def resend(pair: Pair, sent: Mapping[str, Any], body: str | None = None) -> httpx.Response:
    """POST one webhook the stand-in sent to the gateway again (its very signed request)."""
    content = sent["body"] if body is None else body
    return httpx.post(
        f"{pair.gateway}/webhooks", content=content, headers=dict(sent["headers"]), timeout=10
    )
