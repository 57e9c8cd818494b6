"""The event walkthrough of `make demo`, run against the demo server."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import httpx

url, token = sys.argv[1], sys.argv[2]
# api-guard (an HTTP hook) wants an API key on top of the app's bearer token.
headers = {"Authorization": f"Bearer {token}", "X-API-Key": "demo-key"}
client = httpx.Client(base_url=url, headers=headers, timeout=10)


def show(method: str, path: str, body: object = None) -> httpx.Response:
    response = client.request(method, path, json=body)
    shown = f" {json.dumps(body)}" if body is not None else ""
    print(f"\n\033[1m{method} {path}{shown}\033[0m\n  -> {response.status_code} {response.text}")
    return response


print("\nLifecycle events: follow (light_after_update) makes 'lamp' copy the default light.")
show("POST", "/lights", {"id": "lamp", "name": "Lamp"})
show("POST", "/light_color", {"action": "ToBlue"})
show("POST", "/light_control", {"action": "TurnOn"})
deadline = time.monotonic() + 10
while client.get("/lights/lamp").json().get("status") != "on" and time.monotonic() < deadline:
    time.sleep(0.02)  # the outbox delivers right after the commit; this only waits for it
show("GET", "/lights/lamp")
show("GET", "/events/deliveries?plugin=follow&limit=2")
print("\nnight-mode (light_before_save) turns white light red between 22:00 and 07:00 UTC:")
show("POST", "/light_color", {"action": "ToWhite"})

print("\nHTTP hooks: api-guard refuses a request without an API key, before the app:")
response = httpx.get(f"{url}/states", headers={"Authorization": f"Bearer {token}"})
print(f"  GET /states without X-API-Key -> {response.status_code} {response.text}")
response = client.get("/lights/default")
print(
    f"  GET /lights/default -> {response.status_code}, X-Served-By: "
    f"{response.headers.get('x-served-by')}, name: {response.json()['name']}"
    "  (redactor's post-hook; the spec at /openapi.json is left as it is)"
)

admin_token = os.environ.get("HOSTWIRE_ADMIN_TOKEN")
if admin_token:
    admin = httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30
    )
    print("\nOperators: Prometheus metrics at /metrics (the admin token, not the API's):")
    scrape = admin.get("/metrics")
    calls = [line for line in scrape.text.splitlines() if line.startswith("hostwire_plugin_calls")]
    print(f"  GET /metrics -> {scrape.status_code}; the plug-ins' calls so far:")
    for line in calls[:6]:
        print(f"    {line}")
    refused = httpx.get(f"{url}/metrics", headers=headers)
    print(f"  GET /metrics with the API's token -> {refused.status_code}")
    module = Path("sample_plugins/night_mode/build/plugin.wasm").read_bytes()
    print("\nHot reload: a new night-mode module, checked before it replaces the old one:")
    for label, digest in (
        ("a wrong sha256", "0" * 64),
        ("its sha256", hashlib.sha256(module).hexdigest()),
    ):
        answer = admin.put(
            "/hostwire/plugins/night-mode",
            content=module,
            headers={"Content-Type": "application/wasm", "X-Hostwire-Sha256": digest},
        )
        body = answer.json()
        said = body["error"]["message"] if "error" in body else f"version {body['version']}"
        print(f"  PUT /hostwire/plugins/night-mode with {label} -> {answer.status_code}: {said}")
    show("POST", "/light_color", {"action": "ToBlue"})  # served by the new version
