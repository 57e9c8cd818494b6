"""The host API: an OpenAPI document's operations as host functions.

It owns reading the document (``openapi``), checking each call against its
operation (``validate``), the host functions that validate, check grants and
send calls to a target (``functions``) and what export names mean
(``exports``). It imports ``hostwire._runtime`` and ``hostwire._targets``.
"""

from hostwire._hostapi.exports import HTTP_HOOKS, http_hook_exports, lifecycle_exports
from hostwire._hostapi.functions import ALL_OPERATIONS, HostApi
from hostwire._hostapi.openapi import (
    Node,
    OpenAPIDocument,
    Operation,
    Webhook,
    dumps,
    is_json,
    load_openapi,
    snake_case,
)
from hostwire._hostapi.validate import HEADER_VALUE, compile_schema

__all__ = [
    "ALL_OPERATIONS",
    "HEADER_VALUE",
    "HTTP_HOOKS",
    "HostApi",
    "Node",
    "OpenAPIDocument",
    "Operation",
    "Webhook",
    "compile_schema",
    "dumps",
    "http_hook_exports",
    "is_json",
    "lifecycle_exports",
    "load_openapi",
    "snake_case",
]
