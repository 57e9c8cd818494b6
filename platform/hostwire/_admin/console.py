"""The operators' console at ``/hostwire/``: plug-ins, their numbers, recent
failures and event deliveries, rendered on the server and kept live by a small
script that polls ``/hostwire/api/overview``."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import jinja2
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hostwire._admin.host import AdminHost

STATIC_PATH = "/hostwire/static"
STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}
DELIVERY_STATES = ("pending", "delivered", "dead")
LATEST_DELIVERIES = 50
RECENT_FAILURES = 20
PAGE_NAME = re.compile(r"[a-z][a-z0-9-]{0,40}")
# Console paths of hostwire's own: an app's page may not take them.
RESERVED_PAGES = frozenset(
    {"api", "login", "logout", "static", "plugins", "deliveries", "metrics", "events"}
)
_HERE = Path(__file__).parent
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


Rows = Callable[[], Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True)
class ConsolePage:
    """A console page an app adds: a table of ``rows()`` at ``/hostwire/<name>``."""

    name: str
    title: str
    rows: Rows

    def __post_init__(self) -> None:
        if not PAGE_NAME.fullmatch(self.name) or self.name in RESERVED_PAGES:
            raise ValueError(
                f'console page "{self.name}": a name is lowercase letters, digits and "-", '
                f"starts with a letter and is none of {', '.join(sorted(RESERVED_PAGES))}"
            )


def render(template: str, **values: Any) -> str:
    """A console template rendered with ``values`` (escaped)."""
    values.setdefault("pages", ())
    return _ENV.get_template(template).render(static=STATIC_PATH, **values)


def _filters(request: Request) -> dict[str, str | None]:
    plugin = request.query_params.get("plugin") or None
    state = request.query_params.get("state") or None
    return {"plugin": plugin, "state": state if state in DELIVERY_STATES else None}


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return "> 10 s" if value == float("inf") else f"{value:.1f}"


def _plugin_row(state: dict[str, Any]) -> dict[str, Any]:
    stats = state.get("stats") or {}
    exports = stats.get("exports", {})
    # The slowest export's quantiles stand for the plug-in's (an upper bound).
    p50 = max((e["p50_ms"] for e in exports.values() if e["p50_ms"] is not None), default=None)
    p99 = max((e["p99_ms"] for e in exports.values() if e["p99_ms"] is not None), default=None)
    return {
        "name": state["name"],
        "state": state["state"],
        "source": state.get("source"),
        "sha256": state.get("sha256"),
        "exports": state.get("exports", []),
        "grants": state.get("grants", []),
        "limits": state.get("limits", {}),
        "calls": stats.get("calls", 0),
        "failures": stats.get("failures", 0),
        "p50_ms": _ms(p50),
        "p99_ms": _ms(p99),
    }


def overview(host: AdminHost, plugin: str | None, state: str | None) -> dict[str, Any]:
    """What the console shows, as JSON-able data (reads the database: call off the loop)."""
    states = host.plugin_states()
    failures = [f for s in states for f in (s.get("stats") or {}).get("recent_failures", [])]
    failures.sort(key=lambda f: f["at"], reverse=True)
    outbox = host.outbox
    return {
        "plugins": [_plugin_row(s) for s in states],
        "recent_failures": [
            {**f, "at_text": time.strftime("%H:%M:%S", time.gmtime(f["at"]))}
            for f in failures[:RECENT_FAILURES]
        ],
        "events": outbox is not None,
        "delivery_counts": outbox.recent_summary() if outbox is not None else [],
        "deliveries": (
            outbox.deliveries(plugin=plugin, state=state, limit=LATEST_DELIVERIES)
            if outbox is not None
            else []
        ),
    }


def routes(host: AdminHost) -> list[BaseRoute]:
    async def page(request: Request) -> Response:
        filters = _filters(request)
        data = await anyio.to_thread.run_sync(lambda: overview(host, **filters))
        page = render(
            "console.html",
            filters=filters,
            states=DELIVERY_STATES,
            pages=host.console_pages,
            **data,
        )
        return HTMLResponse(page)

    async def api_overview(request: Request) -> Response:
        filters = _filters(request)
        data = await anyio.to_thread.run_sync(lambda: overview(host, **filters))
        return JSONResponse(data)

    async def replay(request: Request) -> Response:
        outbox = host.outbox
        if outbox is None:
            return JSONResponse(
                {"error": {"code": "no_events", "message": "this host keeps no events"}},
                status_code=404,
            )
        event_id = request.path_params["event_id"]
        plugin = request.query_params.get("plugin") or None
        count = await anyio.to_thread.run_sync(outbox.replay, event_id, plugin)
        if not count:
            message = f'no dead or delivered delivery of event "{event_id}" to replay'
            return JSONResponse(
                {"error": {"code": "not_found", "message": message}}, status_code=404
            )
        return JSONResponse({"replayed": count})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return JSONResponse(
                {"error": {"code": "not_found", "message": f'no static file "{name}"'}},
                status_code=404,
            )
        return FileResponse(_HERE / "static" / name, media_type=STATIC_FILES[name])

    return [
        *_app_pages(host),
        Route("/hostwire", page, methods=["GET"]),
        Route("/hostwire/", page, methods=["GET"]),
        Route("/hostwire/api/overview", api_overview, methods=["GET"]),
        Route("/hostwire/deliveries/{event_id}/replay", replay, methods=["POST"]),
        Route(STATIC_PATH + "/{name}", static, methods=["GET"]),
    ]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _app_pages(host: AdminHost) -> list[BaseRoute]:
    """The routes of the pages the app added: the page and its rows as JSON (polled)."""

    def view(page: ConsolePage) -> tuple[Route, Route]:
        async def html(request: Request) -> Response:
            rows = await page.rows()
            text = render(
                "page.html", page=page, pages=host.console_pages, rows=rows, columns=_columns(rows)
            )
            return HTMLResponse(text)

        async def data(request: Request) -> Response:
            rows = await page.rows()
            return JSONResponse({"title": page.title, "columns": _columns(rows), "rows": rows})

        return (
            Route(f"/hostwire/{page.name}", html, methods=["GET"]),
            Route(f"/hostwire/api/pages/{page.name}", data, methods=["GET"]),
        )

    return [route for page in host.console_pages for route in view(page)]
