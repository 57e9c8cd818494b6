"""Check every HTTP response a test sees against openapi/light.yaml (openapi-core)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from werkzeug.datastructures import Headers, ImmutableMultiDict

from lightcontrol._spec import problems, spec

UNDOCUMENTED = ("/openapi.json", "/openapi.yaml", "/.well-known/", "/logo.png", "/legal")


class _Request:
    def __init__(self, request: httpx.Request) -> None:
        url = urlsplit(str(request.url))
        self.host_url = f"{url.scheme}://{url.netloc}"
        self.path = url.path
        self.method = request.method.lower()
        self.body = request.content or None
        self.content_type = request.headers.get("content-type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qs(url.query)),
            header=Headers(dict(request.headers)),
            cookie=ImmutableMultiDict({}),
        )


class _Response:
    def __init__(self, response: httpx.Response) -> None:
        self.data = response.content
        self.status_code = response.status_code
        self.content_type = response.headers.get("content-type", "")
        self.headers = Headers(dict(response.headers))


class SpecChecker:
    """An httpx response hook that fails on any response that drifts from the spec."""

    def __init__(self) -> None:
        self.openapi = OpenAPI.from_dict(spec())
        self.checked = 0

    def __call__(self, response: httpx.Response) -> Any:
        response.read()
        path = response.request.url.path
        if path.startswith(UNDOCUMENTED) or response.request.method == "OPTIONS":
            return
        try:
            self.openapi.validate_response(_Request(response.request), _Response(response))
        except (PathNotFound, OperationNotFound):
            # Not an API operation (unknown route or method): still the one error shape.
            assert response.status_code in {404, 405}
            assert problems("Error", response.json()) == []
        self.checked += 1
