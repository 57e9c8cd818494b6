"""What every target shares: the call it sends, who sends it, the reply and the protocol.

A target takes a validated ``HttpCall`` and the ``Caller`` (which plug-in, its
credentials, the chain of nested calls) and returns a ``Reply``. Failures of
the platform itself raise ``DispatchError`` with the status the plug-in sees:
502 when the app cannot be reached or fails, 504 when it is too slow.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hostwire._errors import DispatchError

PLUGIN_HEADER = "x-hostwire-plugin"
MAX_RESPONSE_BYTES = 1024 * 1024

# Headers a plug-in may never set: the host decides who it is and where it goes.
RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "forwarded",
        "host",
        "proxy-authorization",
        "transfer-encoding",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    }
)
RESERVED_PREFIX = "x-hostwire-"


@dataclass(slots=True)
class HttpCall:
    """A validated request, ready for a target to send."""

    method: str
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    content_type: str | None = None
    operation: str = ""  # the host function's name, for targets that route by it
    operation_id: str = ""  # its operationId (what grants name)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a host-function call."""

    plugin: str
    token: str | None = None
    chain: tuple[str, ...] = ()
    deadline: float | None = None  # time.monotonic() by which the plug-in needs an answer

    def timeout(self, limit_s: float) -> float:
        """The time this call may take: the target's limit or what the plug-in has left."""
        if self.deadline is None:
            return limit_s
        # Keep a little of the plug-in's time for it to read the answer.
        left = self.deadline - time.monotonic()
        left -= min(0.05, left / 10)
        if left <= 0:
            raise DispatchError(
                504, "upstream_timeout", "The plug-in's own time (timeout_ms) is already up."
            )
        return min(limit_s, left)


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class Target(Protocol):
    """Sends validated calls somewhere and returns the app's reply."""

    def send(self, call: HttpCall, caller: Caller) -> Reply: ...

    def close(self) -> None: ...


def header_map(raw: Sequence[tuple[bytes, bytes]], *, lower: bool = False) -> dict[str, str]:
    """Raw ASGI/HTTP headers as one JSON object; repeated ones joined with ", "."""
    merged: dict[str, str] = {}
    for key, value in raw:
        name, text = key.decode("latin-1"), value.decode("latin-1")
        if lower:
            name = name.lower()
        merged[name] = f"{merged[name]}, {text}" if name in merged else text
    return merged


def plugin_headers(call: HttpCall, caller: Caller) -> list[tuple[str, str]]:
    """The headers a target sends: the plug-in's own, less reserved ones, and the host's."""
    # The validator already refuses reserved headers; dropping them again here
    # keeps the guarantee local to the code that sends.
    headers = [
        (k, v)
        for k, v in call.headers
        if k.lower() not in RESERVED_HEADERS and not k.lower().startswith(RESERVED_PREFIX)
    ]
    headers.append((PLUGIN_HEADER, caller.plugin))
    if call.content_type and call.body is not None:
        headers.append(("content-type", call.content_type))
    if caller.token:
        headers.append(("authorization", f"Bearer {caller.token}"))
    return headers
