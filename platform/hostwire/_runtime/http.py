"""Plug-in HTTP (the kernel's ``http_request``), done by hostwire with httpx.

Extism's own ``http_request`` follows redirects wherever they lead, so a
plug-in allowed to reach host A could be sent on to any host B. hostwire links
its own ``http_request``, ``http_status_code`` and ``http_headers`` in their
place (see ``kernel``), never hands ``allowed_hosts`` to Extism, and:

- sends requests only to hosts matching ``allowed_hosts`` (glob patterns on the
  host name, as Extism: ``api.example.com``, ``*.example.com``), over http or
  https; anything else fails the call: ``HTTP request to URL is not allowed``;
- follows at most ``MAX_REDIRECTS`` redirects, and only to allowed hosts: a
  redirect anywhere else is not followed and the plug-in gets the 3xx response
  itself (its status, and its ``Location`` in ``http_headers``);
- gives each request what is left of the plug-in's ``timeout_ms`` (to connect
  and for each read) and fails the call with ``PluginTimeoutError`` after it;
- reads at most ``max_input_bytes`` of a response body (raw: it asks for
  ``Accept-Encoding: identity`` unless the plug-in says otherwise), and reads
  the request and its body only up to ``max_host_input_bytes``;
- offers the response headers to ``http_headers`` as a JSON object with
  lower-case names (Extism offers none unless told to).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

import httpx

from hostwire._errors import HostFunctionError, PluginTimeoutError
from hostwire._runtime.hostfn import (
    CallContext,
    block_length,
    check_deadline,
    free_block,
    read_block,
    write_block,
)

MAX_REDIRECTS = 5
_FUNCTION = "http_request"


class PluginHttp:
    """One plug-in's HTTP policy and connection pool (opened on first use)."""

    def __init__(self, allowed_hosts: Sequence[str], max_response_bytes: int) -> None:
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)
        self.max_response_bytes = max_response_bytes
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def allows(self, url: httpx.URL) -> bool:
        host = url.host.lower()
        return url.scheme in {"http", "https"} and any(
            fnmatchcase(host, pattern) for pattern in self.allowed_hosts
        )

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    follow_redirects=False,
                    trust_env=False,
                    headers={"accept-encoding": "identity"},
                )
            return self._client

    def fetch(
        self, context: CallContext, request: httpx.Request
    ) -> tuple[int, dict[str, str], bytes]:
        """Send ``request``, following redirects within the allow-list."""
        client = self._http()
        for hop in range(MAX_REDIRECTS + 1):
            request.extensions["timeout"] = httpx.Timeout(_time_left(context)).as_dict()
            response = client.send(request, stream=True)
            try:
                following = response.next_request
                if hop < MAX_REDIRECTS and following is not None and self.allows(following.url):
                    request = following
                    continue
                return response.status_code, _headers(response), self._body(context, response)
            finally:
                response.close()
        raise AssertionError("unreachable: the last hop always returns")  # pragma: no cover

    def _body(self, context: CallContext, response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > self.max_response_bytes:
                raise _error(
                    context,
                    f"the HTTP response from {response.request.url} is over "
                    f"{self.max_response_bytes} bytes (limit max_input_bytes)",
                )
            check_deadline(context, f"an HTTP request to {response.request.url}")
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _time_left(context: CallContext) -> float:
    if context.deadline is None:
        return 30.0
    left = context.deadline - time.monotonic()
    if left <= 0:
        check_deadline(context, "an HTTP request")
    return max(left, 0.001)


def _headers(response: httpx.Response) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _error(context: CallContext, reason: str) -> HostFunctionError:
    return HostFunctionError(
        f"{context.where} failed: {reason}.",
        plugin=context.plugin,
        export=context.export,
        function=_FUNCTION,
    )


def _take_block(current: Any, context: CallContext, offset: int, what: str) -> bytes:
    """Read and free a block the guest handed over (http_request owns them)."""
    length = block_length(current, context, offset, _FUNCTION)
    try:
        if length > context.max_host_input_bytes:
            raise _error(
                context,
                f"{what} is {length} bytes, over the limit of {context.max_host_input_bytes} "
                "(max_host_input_bytes)",
            )
        return read_block(current, offset, length)
    finally:
        free_block(current, offset)


def _parse_request(context: CallContext, data: bytes, body: bytes | None) -> httpx.Request:
    try:
        spec = json.loads(data.decode("utf-8"))
        url = spec["url"]
        method = spec.get("method") or "GET"
        headers = spec.get("headers") or {}
        if not (isinstance(url, str) and isinstance(method, str) and isinstance(headers, dict)):
            raise TypeError("url and method must be strings and headers an object")
        return httpx.Request(
            method.upper(),
            url,
            headers={str(k): str(v) for k, v in headers.items()},
            content=body,
        )
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        RecursionError,
        httpx.InvalidURL,
    ) as exc:
        raise _error(
            context,
            f'its HTTP request is not {{"url", "method", "headers"}} JSON ({type(exc).__name__}: '
            f"{str(exc)[:200]})",
        ) from exc


def http_request(current: Any, context: CallContext, inputs: Any, outputs: Any) -> None:
    """``http_request(request, body) -> response body``, as Extism's, see the module doc."""
    context.http_status = 0
    context.http_headers = None
    data = _take_block(current, context, inputs[0].v.i64, "its HTTP request")
    body_offset = inputs[1].v.i64
    body = (
        _take_block(current, context, body_offset, "its HTTP request body") if body_offset else None
    )
    request = _parse_request(context, data, body)
    http = context.http
    if http is None or not http.allows(request.url):
        allowed = ", ".join(http.allowed_hosts) if http and http.allowed_hosts else ""
        why = f"allowed_hosts: {allowed}" if allowed else "allowed_hosts is empty"
        raise _error(context, f"HTTP request to {request.url} is not allowed ({why})")
    try:
        status, headers, content = http.fetch(context, request)
    except httpx.TimeoutException as exc:
        raise PluginTimeoutError(
            f"{context.where} ran out of time (limit timeout_ms) during an HTTP request "
            f"to {request.url}.",
            plugin=context.plugin,
            export=context.export,
        ) from exc
    except httpx.HTTPError as exc:
        raise _error(context, f"HTTP request to {request.url} failed: {exc}") from exc
    context.http_status = status
    context.http_headers = headers
    if content:
        outputs[0].v.i64 = write_block(current, context, content, "an HTTP request")


def http_status_code(current: Any, context: CallContext, inputs: Any, outputs: Any) -> None:
    outputs[0].v.i32 = context.http_status


def http_headers(current: Any, context: CallContext, inputs: Any, outputs: Any) -> None:
    if context.http_headers is not None:
        data = json.dumps(context.http_headers).encode()
        outputs[0].v.i64 = write_block(current, context, data, "http_headers")
