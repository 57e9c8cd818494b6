"""The contract's vocabulary, written once (DESIGN.md, Contracts 1 to 3).

What a host call's input and output hold, the body of an error reply, which
export names are lifecycle events and HTTP hooks, and what a failing handler
means. The host API, the events, the hooks, the PDK model and the test harness
all take these words from here, so they cannot drift apart. It imports nothing
of hostwire.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

# Contract 1: the input keys that hold parameters, with each one's OpenAPI
# location; the fourth key is "body". The output holds "status", "headers"
# and "body".
INPUT_SECTIONS = {"path": "path", "query": "query", "headers": "header"}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """An error reply's body: ``{"error": {"code", "message", "details"}}``, details if any."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def error_reply(status: int, code: str, message: str, details: Any = None) -> bytes:
    """A host call's error answer (Contract 1 output), as compact JSON."""
    reply = {"status": status, "headers": {}, "body": error_body(code, message, details)}
    return json.dumps(reply, separators=(",", ":"), ensure_ascii=False).encode()


# Contract 2: an event is ``<model>.<phase>_<step>`` (``light.before_save``, the
# webhook's name and the envelope's type); a plug-in handles it by exporting
# ``<model>_<phase>_<step>`` (``light_before_save``).
PHASES = ("before", "after")
LIFECYCLE_STEPS = ("validation", "create", "save", "update", "destroy")
_MODEL = r"(?P<model>[a-z][a-z0-9_]*)"
_STEP = rf"(?P<step>(?P<phase>{'|'.join(PHASES)})_(?:{'|'.join(LIFECYCLE_STEPS)}))"
EVENT_TYPE = re.compile(rf"^{_MODEL}\.{_STEP}$")
EVENT_EXPORT = re.compile(rf"^{_MODEL}_{_STEP}$")

# Contract 3: the HTTP hooks a plug-in may export, in the order they run.
HTTP_HOOKS = ("http_pre_hook", "http_post_hook", "http_stream_chunk_hook")

# What a failing before-handler or hook means: refuse the change or request
# (fail_closed), or go on as if the plug-in were not there (fail_open).
OnError = Literal["fail_closed", "fail_open"]


def event_export(model: str, step: str) -> str:
    """The export that handles event ``<model>.<step>``: ``light_before_save``."""
    return f"{model}_{step}"


def lifecycle_webhook(export: str) -> str:
    """The lifecycle webhook an export handles: ``light_before_save`` → ``light.before_save``."""
    found = EVENT_EXPORT.match(export)
    if found is None:
        raise ValueError(f'"{export}" is not named like a lifecycle event, <model>_<phase>_<step>.')
    return f"{found['model']}.{found['step']}"


def lifecycle_exports(exports: frozenset[str]) -> list[str]:
    """Exports named like model lifecycle events, e.g. ``light_before_save``."""
    return sorted(name for name in exports if EVENT_EXPORT.match(name))


def http_hook_exports(exports: frozenset[str]) -> list[str]:
    """Exports that are HTTP hooks, in the order the hooks run."""
    return [name for name in HTTP_HOOKS if name in exports]
