"""The admin routes assembled in front of the app (skeleton: filled in by issue 18)."""

from __future__ import annotations

import hmac

from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from hostwire._admin import metrics, plugins
from hostwire._admin.host import AdminHost

PREFIX = "/hostwire"
METRICS_PATH = "/metrics"


def _is_admin_path(path: str) -> bool:
    return path in (PREFIX, METRICS_PATH) or path.startswith(PREFIX + "/")


class AdminEntry:
    """Answers the admin paths when an admin token is configured; passes the rest on."""

    def __init__(self, app: ASGIApp, hostwire: AdminHost) -> None:
        self.app = app
        self.hostwire = hostwire
        self._router: Router | None = None

    def routes(self) -> list[BaseRoute]:
        return [*plugins.routes(self.hostwire), *metrics.routes(self.hostwire)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.hostwire.admin_token
        if token is None or scope["type"] != "http" or not _is_admin_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, b"Bearer " + token.encode()):
            response = JSONResponse(
                {"error": {"code": "unauthorized", "message": "an admin token is required"}},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="hostwire admin"'},
            )
            await response(scope, receive, send)
            return
        if self._router is None:
            self._router = Router(self.routes())
        await self._router(scope, receive, send)
