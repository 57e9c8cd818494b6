"""Cut a subset out of an OpenAPI document: chosen operations and webhooks, and
every component they reach. It made openapi.yaml here from Lago's document:

    python examples/billing/subset.py tests/documents/lago/openapi.yaml \
        examples/billing/openapi.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

OPERATIONS = {
    "createCustomer",
    "findCustomer",
    "findAllCustomers",
    "createInvoice",
    "findInvoice",
    "updateInvoice",
    "findAllInvoices",
}
WEBHOOKS = {"customer_created", "invoice_created", "invoice_voided", "feature.created"}
METHODS = ("get", "put", "post", "delete", "patch")


def refs(value: Any) -> set[str]:
    """The local component refs inside ``value``."""
    found: set[str] = set()
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/"):
            found.add(ref)
        for item in value.values():
            found |= refs(item)
    elif isinstance(value, list):
        for item in value:
            found |= refs(item)
    return found


def subset(document: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, item in document["paths"].items():
        kept = {
            m: op for m, op in item.items() if m in METHODS and op.get("operationId") in OPERATIONS
        }
        if kept:
            shared = {k: v for k, v in item.items() if k not in METHODS}
            paths[path] = {**shared, **kept}
    webhooks = {name: document["webhooks"][name] for name in sorted(WEBHOOKS)}
    components: dict[str, dict[str, Any]] = {}
    todo = refs(paths) | refs(webhooks)
    while todo:
        ref = todo.pop()
        _, _, kind, name = ref.split("/", 3)
        if name in components.get(kind, {}):
            continue
        value = document["components"][kind][name]
        components.setdefault(kind, {})[name] = value
        todo |= refs(value)
    if "securitySchemes" in document["components"]:
        components["securitySchemes"] = document["components"]["securitySchemes"]
    info = dict(document["info"])
    info["title"] = "Billing stand-in (a subset of the Lago API)"
    info["description"] = (
        "Seven operations and four webhooks of Lago's API documentation "
        "(https://github.com/getlago/lago-openapi, AGPL-3.0), cut by subset.py."
    )
    return {
        "openapi": document["openapi"],
        "info": info,
        "servers": [{"url": "http://127.0.0.1:8700/api/v1", "description": "The stand-in"}],
        "security": document.get("security", []),
        "paths": paths,
        "webhooks": webhooks,
        "components": {kind: dict(sorted(v.items())) for kind, v in sorted(components.items())},
    }


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    document = yaml.load(source.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    text = yaml.safe_dump(subset(document), sort_keys=False, allow_unicode=True, width=100)
    target.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
