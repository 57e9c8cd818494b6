"""The plug-in API: list, replace (hot reload), enable and disable plug-ins, and
reload the whole configuration.

- ``GET /hostwire/plugins``: ``{"plugins": [state, ...]}``
- ``PUT /hostwire/plugins/{name}``: the body is the new module
  (``application/wasm`` or ``application/octet-stream``, at most
  ``MAX_MODULE_BYTES``), with its sha256 in ``X-Hostwire-Sha256`` or
  ``?sha256=`` (optional); answers the plug-in's state
- ``POST /hostwire/plugins/{name}/enable`` and ``.../disable``: its state
- ``POST /hostwire/reload``: every plug-in's state

A module or configuration that fails to load is refused (422, its one-line
reason) and the serving version stays. Errors are hostwire's error body.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from hostwire._admin.host import AdminHost
from hostwire._contract import error_body
from hostwire._errors import HostwireError

# The largest module a PUT may carry (a plug-in download's limit too).
MAX_MODULE_BYTES = 64 * 1024 * 1024
MODULE_TYPES = frozenset({"application/wasm", "application/octet-stream"})
SHA256_HEADER = "x-hostwire-sha256"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status)


def routes(hostwire: AdminHost) -> list[BaseRoute]:
    def state(name: str) -> dict[str, Any]:
        found = hostwire.plugin_state(name)
        if found is None:
            names = ", ".join(s["name"] for s in hostwire.plugin_states()) or "none"
            raise _Refused(404, "not_found", f'No plug-in is named "{name}" (plug-ins: {names}).')
        return found

    async def run(change: Callable[[], None], answer: Callable[[], Any]) -> JSONResponse:
        """``change()`` in a worker thread (it compiles, and may wait for deliveries),
        then ``answer()``; refusals as hostwire's errors."""
        try:
            await anyio.to_thread.run_sync(change)
        except HostwireError as exc:
            return _error(422, "plugin_refused", str(exc))
        except RuntimeError as exc:  # before the app's startup
            return _error(503, "not_started", str(exc))
        return JSONResponse(answer())

    async def listing(request: Request) -> JSONResponse:
        return JSONResponse({"plugins": hostwire.plugin_states()})

    async def one(request: Request) -> JSONResponse:
        try:
            return JSONResponse(state(request.path_params["name"]))
        except _Refused as exc:
            return _error(exc.status, exc.code, str(exc))

    async def replace(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        try:
            state(name)
            sha256 = _sha256(request)
            module = await _module(request)
        except _Refused as exc:
            return _error(exc.status, exc.code, str(exc))
        return await run(
            lambda: hostwire.replace_plugin(name, module, sha256=sha256), lambda: state(name)
        )

    def switch(enabled: bool) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> JSONResponse:
            name = request.path_params["name"]
            try:
                state(name)
            except _Refused as exc:
                return _error(exc.status, exc.code, str(exc))
            return await run(lambda: hostwire.set_enabled(name, enabled), lambda: state(name))

        return endpoint

    async def reload(request: Request) -> JSONResponse:
        return await run(hostwire.reload_config, lambda: {"plugins": hostwire.plugin_states()})

    return [
        Route("/hostwire/plugins", listing, methods=["GET"]),
        Route("/hostwire/plugins/{name}", one, methods=["GET"]),
        Route("/hostwire/plugins/{name}", replace, methods=["PUT"]),
        Route("/hostwire/plugins/{name}/enable", switch(True), methods=["POST"]),
        Route("/hostwire/plugins/{name}/disable", switch(False), methods=["POST"]),
        Route("/hostwire/reload", reload, methods=["POST"]),
    ]


def _sha256(request: Request) -> str | None:
    given = request.headers.get(SHA256_HEADER) or request.query_params.get("sha256")
    if given is None:
        return None
    if not _SHA256.match(given):
        raise _Refused(
            400, "invalid_sha256", "The sha256 must be 64 hex digits (the module's SHA-256)."
        )
    return given.lower()


async def _module(request: Request) -> bytes:
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind not in MODULE_TYPES:
        raise _Refused(
            415,
            "unsupported_media_type",
            f"The module goes in the body as application/wasm or application/octet-stream, "
            f"not {kind or 'no content type'}.",
        )
    too_large = _Refused(
        413, "payload_too_large", f"The module is larger than {MAX_MODULE_BYTES} bytes."
    )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_MODULE_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_MODULE_BYTES:
            raise too_large
        chunks.append(chunk)
    if not size:
        raise _Refused(400, "empty_module", "The body is empty: send the module's bytes.")
    return b"".join(chunks)
