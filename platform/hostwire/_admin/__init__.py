"""Operators' routes: the console (``/hostwire/``), the plug-in API
(``/hostwire/plugins/...``) and ``/metrics``, behind an admin token of their own.

``AdminEntry`` sits outside the app's own middleware, so the app's
authentication never sees an admin request and the HTTP hooks never run on
one. Off (requests pass through to the app) unless a token is configured.
"""

from hostwire._admin.app import AdminEntry
from hostwire._admin.console import ConsolePage
from hostwire._admin.token import admin_token, check_plugins

__all__ = ["AdminEntry", "ConsolePage", "admin_token", "check_plugins"]
