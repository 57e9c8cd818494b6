"""The admin routes assembled in front of the app, and the admin token's protection.

API clients and Prometheus send ``Authorization: Bearer <token>``. Browsers log
in at ``/hostwire/login``: the right token sets an HttpOnly, SameSite=Strict
cookie (an HMAC of the token, never the token itself) that opens the
``/hostwire/`` paths only, not ``/metrics``. Unsafe methods from another site
are refused whatever their credentials; another site's other requests need the
token itself (the cookie opens only a page opened by following a link).
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request, cookie_parser
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostwire._admin import console, metrics, plugins
from hostwire._admin.host import AdminHost
from hostwire._errors import StorageError

PREFIX = "/hostwire"
METRICS_PATH = "/metrics"
LOGIN_PATH = PREFIX + "/login"
LOGOUT_PATH = PREFIX + "/logout"
COOKIE = "hostwire_admin"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SAME_SITE = frozenset({"same-origin", "none"})
MAX_LOGIN_BODY = 4096
# Paths a browser may load without a session: the form and its stylesheet.
PUBLIC_PATHS = frozenset({LOGIN_PATH, console.STATIC_PATH + "/console.css"})


def _is_admin_path(path: str) -> bool:
    return path in (PREFIX, METRICS_PATH) or path.startswith(PREFIX + "/")


def session_value(token: str) -> str:
    """What the session cookie holds: an HMAC of the token, so the cookie never
    carries the token and changing the token ends every session."""
    return hmac.new(token.encode(), b"hostwire admin session", hashlib.sha256).hexdigest()


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}")


async def _storage_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StorageError)
    retry = str(exc.retry_after_s)
    return _error(503, "storage_unavailable", str(exc), {"Retry-After": retry})


def cross_site(headers: Headers) -> bool:
    """Whether an unsafe request comes from another site (``Sec-Fetch-Site``, else
    ``Origin`` against ``Host``; a request with neither is not a browser's)."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in SAME_SITE
    origin = headers.get("origin")
    if origin is None:
        return False
    scheme, _, rest = origin.partition("://")
    return not rest or rest != headers.get("host", "") or scheme not in ("http", "https")


def _navigation(headers: Headers) -> bool:
    """A browser opening a page at the top (a link followed from another site gets
    the login page: the SameSite=Strict cookie stays home), not a script, an image
    or a frame reading one."""
    return (
        headers.get("sec-fetch-mode") == "navigate"
        and headers.get("sec-fetch-dest", "document") == "document"
    )


# On every admin answer: no other page may frame the console (clickjacking), and a
# browser takes each answer as the type it says.
_GUARD_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class AdminEntry:
    """Answers the admin paths when an admin token is configured; passes the rest on."""

    def __init__(self, app: ASGIApp, hostwire: AdminHost) -> None:
        self.app = app
        self.hostwire = hostwire
        self._router: ASGIApp | None = None
        self._pages = 0  # console pages in the router (an app may add one late)

    def routes(self) -> list[BaseRoute]:
        return [
            *plugins.routes(self.hostwire),
            *metrics.routes(self.hostwire),
            *console.routes(self.hostwire),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.hostwire.admin_token
        if token is None or scope["type"] != "http" or not _is_admin_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *_GUARD_HEADERS]
            await send(message)

        await self._answer(token, scope, receive, guarded)

    async def _answer(self, token: str, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._gate(token, scope, receive)
        if response is not None:
            await response(scope, receive, send)
            return
        if self._router is None or self._pages != len(self.hostwire.console_pages):
            self._pages = len(self.hostwire.console_pages)
            # Unknown admin paths and wrong methods answer JSON, not the app's pages.
            self._router = ExceptionMiddleware(
                Router(self.routes()),
                handlers={HTTPException: _http_error, StorageError: _storage_error},
            )
        await self._router(scope, receive, send)

    async def _gate(self, token: str, scope: Scope, receive: Receive) -> Response | None:
        """The answer that stops a request here (None: it goes on to the routes)."""
        headers = Headers(scope=scope)
        method = scope["method"]
        path = scope["path"]
        foreign = cross_site(headers)
        # Another site's page may load ours (a sibling subdomain's even with the
        # cookie): only following a link to one passes, to the login if need be.
        read_elsewhere = foreign and not _navigation(headers)
        if foreign and method in UNSAFE_METHODS:
            return _error(403, "cross_site", "cross-site requests to the admin routes are refused")
        if path == LOGIN_PATH:
            return await self._login(token, Request(scope, receive))
        if path == LOGOUT_PATH and method == "POST":
            response = RedirectResponse(LOGIN_PATH, status_code=303)
            response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
            return response
        if path in PUBLIC_PATHS and method == "GET":
            return None
        if self._authenticated(token, headers, path, session=not read_elsewhere):
            return None
        if read_elsewhere:
            return _error(403, "cross_site", "cross-site requests to the admin routes are refused")
        if method == "GET" and path != METRICS_PATH and "text/html" in headers.get("accept", ""):
            return RedirectResponse(LOGIN_PATH, status_code=303)
        return _error(
            401,
            "unauthorized",
            "an admin token is required",
            {"WWW-Authenticate": 'Bearer realm="hostwire admin"'},
        )

    def _authenticated(self, token: str, headers: Headers, path: str, *, session: bool) -> bool:
        """Whether the bearer token, or where ``session`` allows the session cookie, is
        the admin's (the cookie opens pages, not another site's reads of them)."""
        given = headers.get("authorization", "").encode()
        if hmac.compare_digest(given, b"Bearer " + token.encode()):
            return True  # whoever holds the token, from whichever site
        if path == METRICS_PATH or not session:
            return False  # a browser session opens the console, not the scrape endpoint
        cookie = cookie_parser(headers.get("cookie", "")).get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(), session_value(token).encode())

    async def _login(self, token: str, request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse(console.render("login.html", error=None))
        if request.method != "POST":
            return _error(405, "method_not_allowed", "the login page takes GET and POST")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BODY:
                return _error(413, "too_large", "the login form is larger than 4096 bytes")
        given = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
        if not hmac.compare_digest(given.encode(), token.encode()):
            page = console.render("login.html", error="That is not the admin token.")
            return HTMLResponse(page, status_code=401)
        response = RedirectResponse(PREFIX + "/", status_code=303)
        response.set_cookie(
            COOKIE,
            session_value(token),
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response
