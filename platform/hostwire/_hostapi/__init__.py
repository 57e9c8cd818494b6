"""The host API: an OpenAPI document's operations as host functions.

It owns reading the document (``openapi``; validated once per content,
``speccache``), checking each call against its
operation (``validate``), the host functions that validate, check grants and
send calls to a target (``functions``). It imports ``hostwire._runtime``,
``hostwire._targets`` and ``hostwire._contract``.
"""

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
    webhook_export,
)
from hostwire._hostapi.validate import HEADER_VALUE, Schema, compile_schema

__all__ = [
    "ALL_OPERATIONS",
    "HEADER_VALUE",
    "HostApi",
    "Node",
    "OpenAPIDocument",
    "Operation",
    "Schema",
    "Webhook",
    "compile_schema",
    "dumps",
    "is_json",
    "load_openapi",
    "snake_case",
    "webhook_export",
]
