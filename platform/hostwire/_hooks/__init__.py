"""HTTP hooks: plug-ins before and after an app's requests, as ASGI middleware.

It owns the middleware that runs ``http_pre_hook``, ``http_post_hook`` and
``http_stream_chunk_hook`` around the app (``middleware``), calling the
plug-ins' hooks in their passes (``calls``), one request's way through them and
the app's buffered or streamed answer (``exchange``), which bodies a plug-in's
hooks read (``parts``), the hooks' JSON shapes (``shapes``) and the check of a
hook's answer against the operation's documented responses (``responses``).
``hostwire.testing`` runs a plug-in's hooks through ``Hooks``' passes, so the
harness checks answers as production does.
It imports ``hostwire._runtime``, ``hostwire._targets``, ``hostwire._hostapi``
and ``hostwire._events``.
"""

from hostwire._hooks.calls import Hooks
from hostwire._hooks.exchange import Exchange
from hostwire._hooks.middleware import MAX_BODY_BYTES, HttpHooksMiddleware
from hostwire._hooks.parts import HookInput, declare_hook_input, hook_input
from hostwire._hooks.responses import ResponseContract
from hostwire._hooks.shapes import b64, hook_request, rewritten_scope

__all__ = [
    "MAX_BODY_BYTES",
    "Exchange",
    "HookInput",
    "Hooks",
    "HttpHooksMiddleware",
    "ResponseContract",
    "b64",
    "declare_hook_input",
    "hook_input",
    "hook_request",
    "rewritten_scope",
]
