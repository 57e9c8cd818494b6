"""The plug-in API: list, replace (hot reload), enable and disable plug-ins."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from hostwire._admin.host import AdminHost


def routes(hostwire: AdminHost) -> list[BaseRoute]:
    async def listing(request: Request) -> JSONResponse:
        return JSONResponse({"plugins": hostwire.plugin_states()})

    return [Route("/hostwire/plugins", listing, methods=["GET"])]
