"""Where host-function calls go: interchangeable targets behind one protocol.

It owns the ``Target`` protocol and the request it sends (``HttpCall``), the
in-process ASGI and remote HTTP targets (``dispatch``), running an ASGI app on
a blocking portal for sync callers (``apprunner``) and the uvicorn settings of
``hostwire serve`` (``server``). It imports ``hostwire._runtime`` (logging, the
call chain) and ``hostwire._errors``, never the host API that uses it.
``server`` is not re-exported here: it imports uvicorn, which only
``hostwire serve`` needs, so the CLI imports it on demand.
"""

from hostwire._errors import DispatchError
from hostwire._targets.apprunner import run_app
from hostwire._targets.dispatch import (
    ASGI_EXTENSION,
    RESERVED_HEADERS,
    RESERVED_PREFIX,
    AsgiTarget,
    Caller,
    HttpCall,
    HttpTarget,
    Reply,
    Target,
    calling_plugin,
    header_map,
)

__all__ = [
    "ASGI_EXTENSION",
    "RESERVED_HEADERS",
    "RESERVED_PREFIX",
    "AsgiTarget",
    "Caller",
    "DispatchError",
    "HttpCall",
    "HttpTarget",
    "Reply",
    "Target",
    "calling_plugin",
    "header_map",
    "run_app",
]
