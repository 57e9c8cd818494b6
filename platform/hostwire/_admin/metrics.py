"""``GET /metrics``: Prometheus text format through prometheus-client (issue 18)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from hostwire._admin.host import AdminHost


def routes(hostwire: AdminHost) -> list[BaseRoute]:
    return []
