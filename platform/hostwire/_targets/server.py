"""Serving an app with uvicorn, with a deadline for each request's headers.

uvicorn bounds the idle time between keep-alive requests but not the time a
client takes to send a request's headers: one that trickles them a byte at a
time holds its connection for ever. ``HeaderTimeoutProtocol`` answers
``408 request_timeout`` and closes the connection when the headers are not
complete ``header_timeout_s`` after the connection opened (or after the first
byte of a later request on it). The body's own deadline is the app's (it sees
the body; the server only passes it on).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from hostwire._contract import error_body
from hostwire._errors import ConfigError

HEADER_TIMEOUT_S = 10.0
HEADER_TIMEOUT_ENV = "HOSTWIRE_HEADER_TIMEOUT_S"
log = logging.getLogger("hostwire.server")


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request headers."""

    header_timeout_s = HEADER_TIMEOUT_S
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._waiting_for_headers():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a request that was pipelined
        if not self.transport.is_closing() and self._waiting_for_headers():
            self._disarm()
            self._arm()  # the next request's headers, on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._waiting_for_headers():
            return
        message = f"The request headers did not arrive within {self.header_timeout_s:g} s."
        body = json.dumps(error_body("request_timeout", message)).encode()
        head = (
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        log.info(
            "%s sent no complete request headers within %g s: 408.", client, self.header_timeout_s
        )
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()


def header_timeout_from_env() -> float:
    """``HOSTWIRE_HEADER_TIMEOUT_S``, or the default of 10 s when it is unset."""
    text = os.environ.get(HEADER_TIMEOUT_ENV, "").strip()
    if not text:
        return HEADER_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{HEADER_TIMEOUT_ENV}={text!r}: give a number of seconds above 0.")
    return value


def server_config(
    app: Any, *, host: str, port: int, header_timeout_s: float | None = None, **options: Any
) -> uvicorn.Config:
    """A uvicorn configuration that serves ``app`` with a header deadline
    (``header_timeout_s``, else ``HOSTWIRE_HEADER_TIMEOUT_S``, else 10 s)."""
    timeout = header_timeout_s if header_timeout_s is not None else header_timeout_from_env()
    protocol = type(
        "HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": timeout}
    )
    options.setdefault("access_log", False)
    return uvicorn.Config(app, host=host, port=port, http=protocol, **options)
