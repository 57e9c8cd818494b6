"""The JSON a hook reads and writes (``hooks.yaml``), and its way to and from ASGI.

Bodies and chunks travel in base64. Whatever a hook writes (a rewritten
request, a response, headers) is checked here before any of it reaches the
app or the client; the checks raise ``ValueError`` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.types import Scope

from hostwire._hostapi import HEADER_VALUE
from hostwire._targets import header_map

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not valid base64: {exc}") from exc


def strings(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{what} must be an object of strings")
    return value


def header_list(headers: Any, what: str) -> list[tuple[bytes, bytes]]:
    """Headers a hook wrote, checked: token names; values without CR, LF or NUL."""
    for name, text in strings(headers, what).items():
        if not _TOKEN.match(name) or not HEADER_VALUE.match(text):
            raise ValueError(f"{what} has a header that is not valid HTTP: {name!r}")
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def content_type(response: dict[str, Any]) -> str:
    headers = response.get("headers") or {}
    return next((str(v) for k, v in headers.items() if k.lower() == "content-type"), "")


# -- the request -----------------------------------------------------------------


def hook_request(scope: Scope) -> dict[str, Any]:
    """The request as hooks see it but its body (``Exchange.body``, sent in base64 to
    the hooks that read it); a repeated query parameter is joined with ","."""
    query: dict[str, str] = {}
    for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"), True):
        query[key] = f"{query[key]},{value}" if key in query else value
    return {
        "method": scope["method"],
        "path": scope["path"],
        "headers": header_map(scope["headers"]),
        "query": query,
    }


def check_request(request: dict[str, Any]) -> None:
    """A pre-hook's request (merged over the one it saw), checked; its body apart."""
    header_list(request["headers"], "request.headers")
    if not isinstance(request["method"], str) or not _TOKEN.match(request["method"]):
        raise ValueError("request.method must be an HTTP method")
    if not isinstance(request["path"], str) or not request["path"].startswith("/"):
        raise ValueError("request.path must be a string that starts with /")
    strings(request["query"], "request.query")


def rewritten_scope(scope: Scope, request: dict[str, Any], body: bytes) -> dict[str, Any]:
    """``scope`` carrying a request that a pre-hook rewrote (and ``check_request`` passed)."""
    headers = [
        (k, v)
        for k, v in header_list(request["headers"], "request.headers")
        if k != b"content-length"
    ]
    if body or request["method"].upper() not in ("GET", "HEAD"):
        headers.append((b"content-length", str(len(body)).encode()))
    return {
        **scope,
        "method": request["method"].upper(),
        "path": request["path"],
        "raw_path": quote(request["path"]).encode("ascii"),
        "query_string": urlencode(request["query"]).encode("ascii"),
        "headers": headers,
    }


# -- the response ----------------------------------------------------------------


def check_response(response: Any) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """A hook's response, checked; returns its headers as ASGI sends them, and its body."""
    if not isinstance(response, dict):
        raise ValueError("its response must be a JSON object")
    status = response.get("status_code")
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise ValueError("response.status_code must be an integer from 200 to 599")
    headers = header_list(response.get("headers", {}), "response.headers")
    return headers, unb64(response.get("body", ""), "response.body")


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    plugin: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The hooks' own answer (not a plug-in's): ``{"error": {"code", "message", "plugin"}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if plugin:
        error["plugin"] = plugin
    return {
        "status_code": status,
        "headers": {"content-type": "application/json", **(headers or {})},
        "body": b64(json.dumps({"error": error}).encode()),
    }
