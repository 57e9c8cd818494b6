"""The remote target: the app at a fixed base URL, over HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

import httpx

from hostwire._errors import DispatchError
from hostwire._targets.call import (
    MAX_RESPONSE_BYTES,
    Caller,
    HttpCall,
    Reply,
    header_map,
    plugin_headers,
)


class HttpTarget:
    """Calls the app at a fixed base URL over HTTP with each plug-in's bearer token.

    Redirects are not followed and the final URL is checked: a call can never
    leave the base URL's scheme, host, port or path prefix. ``headers`` go with
    every call (the app's credentials, for a gateway): they replace any header
    of the same name the plug-in or its token would set, and never appear in
    messages.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base = httpx.URL(base_url)
        if self.base.scheme not in {"http", "https"} or not self.base.host:
            raise ValueError(f"base URL must be http(s)://host[:port][/prefix], not {base_url!r}")
        # Messages name the app without any user:password the URL holds.
        self.shown = self.base.copy_with(username=None, password=None)
        self._headers = [(k.lower(), v) for k, v in (headers or {}).items()]
        self._header_names = frozenset(k for k, _ in self._headers)
        self._prefix = self.base.raw_path.split(b"?")[0].rstrip(b"/")
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self._client = httpx.Client(
            timeout=timeout_s, follow_redirects=False, trust_env=False, transport=transport
        )

    def url_for(self, call: HttpCall) -> httpx.URL:
        raw = self._prefix + call.path.encode("ascii")
        if call.query:
            raw += b"?" + urlencode(call.query).encode("ascii")
        url = self.base.copy_with(raw_path=raw)
        same_origin = (url.scheme, url.host, url.port) == (
            self.base.scheme,
            self.base.host,
            self.base.port,
        )
        if not same_origin or not url.raw_path.startswith(self._prefix + b"/"):
            raise DispatchError(400, "invalid_request", f"{call.path!r} leaves the app's base URL.")
        return url

    def send(self, call: HttpCall, caller: Caller) -> Reply:
        limit = caller.timeout(self.timeout_s)
        try:
            url = self.url_for(call)
            request = self._client.build_request(
                call.method,
                url,
                headers=self._with_defaults(plugin_headers(call, caller)),
                content=call.body,
                timeout=limit,
            )
        except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
            raise DispatchError(400, "invalid_request", f"Cannot build the request: {exc}") from exc
        try:
            response = self._client.send(request, stream=True)
            try:
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        raise DispatchError(
                            502,
                            "response_too_large",
                            f"The app's response is over {self.max_response_bytes} bytes.",
                        )
                    chunks.append(chunk)
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise DispatchError(
                504, "upstream_timeout", f"{self.shown} did not answer within {limit:.3g} s."
            ) from exc
        except httpx.HTTPError as exc:
            raise DispatchError(
                502, "upstream_unreachable", f"Cannot reach {self.shown}: {exc!r}"
            ) from exc
        return Reply(
            response.status_code, header_map(response.headers.raw, lower=True), b"".join(chunks)
        )

    def _with_defaults(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if not self._headers:
            return headers
        kept = [(k, v) for k, v in headers if k.lower() not in self._header_names]
        return kept + self._headers

    def close(self) -> None:
        self._client.close()
