"""Forwarding the app's API: ``/api/<rest>`` → ``<base_url>/<rest>``, streamed both ways.

The request's body streams to the app and the app's answer streams back, its
bytes as sent (compressed ones stay compressed). Redirects are answered to
the client, not followed. Hop-by-hop headers (RFC 9110 section 7.6.1, and those
``Connection`` names) are dropped both ways. The gateway's own credentials for
the app are never added: a client brings its own. A path with ``.`` or
``..`` segments is refused, so a request cannot leave the base URL's prefix.
An app that cannot be reached is a 502, one that does not answer in time 504,
both one-line JSON errors.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from urllib.parse import unquote

import httpx
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from hostwire._contract import error_body
from hostwire._runtime import log_safe

log = logging.getLogger("hostwire.gateway.proxy")

PREFIX = "/api"
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def _hop_by_hop(headers: list[tuple[bytes, bytes]]) -> frozenset[str]:
    named = {
        token.strip().lower()
        for key, value in headers
        if key.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
    }
    return HOP_BY_HOP | named


def _end_to_end(
    headers: list[tuple[bytes, bytes]], *, drop: frozenset[str]
) -> list[tuple[bytes, bytes]]:
    skip = _hop_by_hop(headers) | drop
    return [(k, v) for k, v in headers if k.decode("latin-1").lower() not in skip]


class UpstreamProxy:
    """An ASGI app that forwards every HTTP request to ``base_url``.

    Its scope's path is the path the app serves (``base_url``'s path + the
    rest), which is what the HTTP hooks in front of it see and may rewrite.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base = httpx.URL(base_url)
        self.prefix = self.base.raw_path.split(b"?")[0].rstrip(b"/")
        self.shown = self.base.copy_with(username=None, password=None)
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            timeout=timeout_s, follow_redirects=False, trust_env=False, transport=transport
        )

    def upstream_path(self, path: str) -> str:
        """The app's path for the gateway's ``/api<rest>``."""
        return self.prefix.decode("ascii") + path.removeprefix(PREFIX)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") or scope["path"].encode("utf-8")
        if not raw.startswith(self.prefix + b"/") and raw != self.prefix:
            await _answer(send, 404, "not_found", "The path is outside the app's base URL.")
            return
        segments = unquote(raw.decode("latin-1")).split("/")
        if any(s in (".", "..") for s in segments):
            await _answer(send, 400, "invalid_path", "The path holds . or .. segments.")
            return
        query = scope.get("query_string", b"")
        url = self.base.copy_with(raw_path=raw + (b"?" + query if query else b""))
        headers = _end_to_end(list(scope["headers"]), drop=frozenset({"host", "content-length"}))
        if not any(k.lower() == b"accept-encoding" for k, _ in headers):
            headers.append((b"accept-encoding", b"identity"))  # not httpx's default gzip
        has_body = any(k.lower() == b"content-length" for k, _ in scope["headers"]) or any(
            k.lower() == b"transfer-encoding" for k, _ in scope["headers"]
        )
        request = self._client.build_request(
            scope["method"],
            url,
            headers=headers,
            content=_body(receive) if has_body else None,
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            log.warning(
                "%s %s: the app did not answer in time", scope["method"], log_safe(str(raw))
            )
            await _answer(
                send,
                504,
                "upstream_timeout",
                f"{self.shown} did not answer within {self.timeout_s:g} s.",
            )
            return
        except httpx.HTTPError as exc:
            log.warning("%s %s: bad gateway: %r", scope["method"], log_safe(str(raw)), exc)
            await _answer(send, 502, "bad_gateway", f"Cannot reach {self.shown}: {exc!r}")
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": _end_to_end(list(response.headers.raw), drop=frozenset()),
                }
            )
            async for chunk in response.aiter_raw():
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except httpx.HTTPError as exc:
            # The status went out already: all that is left is to cut the answer short.
            log.warning(
                "%s %s: the app's answer broke off: %r", scope["method"], log_safe(str(raw)), exc
            )
            raise
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    response = JSONResponse(error_body(code, message), status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
