"""The gateway: an app's document, its plug-ins and their outbox, as one ASGI app.

``Gateway(config)`` loads everything at once (the document, the plug-ins with
host functions that call the app over HTTP, the outbox), so a bad
configuration fails before anything listens. Its ``app`` serves:

- ``POST <webhooks.path>``: the app's signed webhooks (``receiver``);
- ``GET /healthz``: 200 while the gateway runs;
- with ``proxy: true``, ``/api/...``: the app's API (``proxy``), the plug-ins'
  HTTP hooks in front;
- with an admin token (``admin`` in the file, or ``HOSTWIRE_ADMIN_TOKEN``), the
  operators' routes as ``Hostwire`` serves them: the console at ``/hostwire/``,
  the plug-in API (hot reload, enable, disable) and ``/metrics``;

and its lifespan starts the delivery workers (and the watch of ``watch: true``
plug-ins) and, at shutdown, stops them the way ``Hostwire`` does (deliveries in
flight get ``events.grace_s``), then closes the plug-ins and the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio.to_thread
import httpx
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from hostwire._admin import AdminEntry, ConsolePage, admin_token, check_plugins
from hostwire._contract import error_body
from hostwire._errors import ConfigError
from hostwire._events import Outbox, RateLimit, RateLimiter, Subscriber, limiter_for
from hostwire._gateway.config import GatewayConfig, load_gateway_config
from hostwire._gateway.proxy import PREFIX, UpstreamProxy
from hostwire._gateway.receiver import WebhookReceiver
from hostwire._gateway.signature import Verifier
from hostwire._hooks import HttpHooksMiddleware
from hostwire._hostapi import HostApi, OpenAPIDocument, load_openapi
from hostwire._pluginset import Lineup, PluginSet
from hostwire._reload import Reloads, plugin_states
from hostwire._runtime import Plugin
from hostwire._targets import HttpTarget

log = logging.getLogger("hostwire.gateway")
HEALTH_PATH = "/healthz"


def _describe(document: OpenAPIDocument, plugins: PluginSet) -> str:
    delivered = {w.export for w in document.webhooks.values() if not w.before}
    handled = sorted({e for p in plugins for e in p.exports if e in delivered})
    names = ", ".join(p.name for p in plugins) or "none"
    return (
        f"{len(document.operations)} operations and {len(document.webhooks)} "
        f"webhooks in {document.source}; plug-ins: {names}; events handled: "
        f"{', '.join(handled) or 'none'}"
    )


def _admin_token(config: GatewayConfig) -> str | None:
    """The admin token (``admin`` in the file, else ``HOSTWIRE_ADMIN_TOKEN``), refused
    if it is one of the app's credentials the gateway sends (a header's value, or a
    bearer token's token) or the webhook secret."""
    credentials = [config.webhooks.secret]
    for value in config.app.headers.values():
        credentials.append(value)
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token:
            credentials.append(token.strip())
    return admin_token(None, config.plugin_config(), credentials)


class Gateway:
    """Everything ``gateway.yaml`` describes, loaded; ``app`` is the ASGI app to serve.

    ``document`` is the app's document already loaded (tests share one);
    ``transport`` and ``proxy_transport`` replace the HTTP transports to the
    app (``httpx.MockTransport``) for host calls and the proxy.
    """

    def __init__(
        self,
        config: GatewayConfig | str | Path,
        *,
        document: OpenAPIDocument | None = None,
        transport: httpx.BaseTransport | None = None,
        proxy_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config if isinstance(config, GatewayConfig) else load_gateway_config(config)
        where = self.config.source or "the gateway configuration"
        self.document = document or load_openapi(
            self.config.openapi_source(), name=f"{where}: openapi"
        )
        app = self.config.app
        self.target = HttpTarget(
            app.base_url, timeout_s=app.timeout_s, headers=app.headers, transport=transport
        )
        self.api = HostApi(self.document, self.target, max_depth=self.config.events.max_depth)
        try:
            self.plugins = PluginSet(self.config.plugin_config(), self.api)
        except BaseException:
            self.api.close()
            raise
        self.outbox: Outbox | None = None
        self._delivering = False
        self.reloads: Reloads | None = None  # made once all of it loaded
        self._closed = False
        try:
            self.admin_token = _admin_token(self.config)
            events = self.config.events.model_dump(exclude={"max_depth"})
            self.outbox = Outbox(self.config.database_url(), **events)
            hooks = self.config.webhooks
            self.receiver = WebhookReceiver(
                self.document,
                self.outbox,
                self._subscribers,
                verifier=Verifier(hooks.secret, tolerance_s=hooks.tolerance_s),
                event_type=hooks.event_type,
                subject=hooks.subject,
                max_body_bytes=hooks.max_body_bytes,
            )
            self.proxy: UpstreamProxy | None = None
            self._hooks: ASGIApp | None = None
            if self.config.proxy:
                self.proxy = UpstreamProxy(
                    app.base_url, timeout_s=app.timeout_s, transport=proxy_transport
                )
                self._hooks = self._hooks_for(self._limiter(self.plugins.rate_limits))
            self.reloads = Reloads(
                self.plugins,
                outbox=self.outbox,
                delivered=self.delivered_exports,
                delivering=lambda: self._delivering,
                swapped=self._swapped,
            )
        except BaseException:
            self.close()
            raise
        self.app: ASGIApp = AdminEntry(_GatewayApp(self), self)

    def _limiter(
        self, limits: Mapping[str, RateLimit], current: RateLimiter | None = None
    ) -> RateLimiter | None:
        assert self.outbox is not None
        outbox = self.outbox
        return limiter_for(limits, outbox.engine, lock=outbox.mark_lock, current=current)

    def _hooks_for(self, limiter: RateLimiter | None) -> HttpHooksMiddleware:
        assert self.proxy is not None
        return HttpHooksMiddleware(
            self.proxy,
            subscribers=self._subscribers,
            spec=self.document,
            rate_limiter=limiter,
            lease=self.plugins.lease,  # a request runs on the plug-ins it started with
        )

    def _swapped(self, lineup: Lineup) -> None:
        hooks = self._hooks
        if not isinstance(hooks, HttpHooksMiddleware):
            return
        # A new rate_limit (or one fewer) needs new hooks; else the replaced versions'
        # subscribers, cached, can go.
        limiter = self._limiter(lineup.rate_limits, hooks.hooks.limiter)
        if limiter is hooks.hooks.limiter:
            hooks.forget()
        else:
            self._hooks = self._hooks_for(limiter)

    def _subscribers(self) -> Sequence[Subscriber]:
        return self.plugins.subscribers

    @property
    def delivered_exports(self) -> frozenset[str]:
        """The exports of the webhooks the gateway takes (all but lifecycle before-events)."""
        return frozenset(w.export for w in self.document.webhooks.values() if not w.before)

    def describe(self) -> str:
        """One line: what is loaded, for ``--check`` and the start-up log."""
        return _describe(self.document, self.plugins)

    @staticmethod
    def check(config: GatewayConfig | str | Path) -> str:
        """Load the file, the document and the plug-ins as a gateway would and say what
        is there (``describe``), without opening the outbox: a check writes nothing,
        no database file and no table."""
        config = config if isinstance(config, GatewayConfig) else load_gateway_config(config)
        where = config.source or "the gateway configuration"
        document = load_openapi(config.openapi_source(), name=f"{where}: openapi")
        config.database_url()  # a database that is not one fails here, as it would at start
        _admin_token(config)  # and so does a refused admin token
        target = HttpTarget(config.app.base_url, timeout_s=config.app.timeout_s)
        api = HostApi(document, target, max_depth=config.events.max_depth)
        try:
            with PluginSet(config.plugin_config(), api) as plugins:
                return _describe(document, plugins)
        finally:
            api.close()

    # -- what the operators' routes ask (AdminEntry) ------------------------------

    @property
    def console_pages(self) -> Sequence[ConsolePage]:
        return ()  # the app's own pages are the app's to serve

    def loaded_plugins(self) -> list[Plugin]:
        """The plug-ins serving now, in the configuration's order."""
        return list(self.plugins)

    def plugin_states(self) -> list[dict[str, Any]]:
        """Every configured plug-in, loaded or not (as ``Hostwire.plugin_states``)."""
        return plugin_states(self.plugins.config, self.plugins, self.reloads)

    def plugin_state(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.plugin_states() if s["name"] == name), None)

    def replace_plugin(self, name: str, module: bytes, *, sha256: str | None = None) -> None:
        """Serve ``module`` as plug-in ``name`` without a restart (as ``Hostwire``)."""
        self._open_reloads().replace(name, module, sha256)

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._open_reloads().set_enabled(name, enabled)

    def _open_reloads(self) -> Reloads:
        if self._closed or self.reloads is None:
            raise RuntimeError("the gateway is closed: its plug-ins can no longer be reloaded")
        return self.reloads

    def reload_config(self) -> None:
        """Read the file's ``plugins`` again and serve what they say; all of it loads,
        or nothing changes. The rest of the file takes a restart."""
        if self.config.source is None:
            raise ConfigError(
                "reload_config() reads gateway.yaml again, but this gateway was given its "
                "configuration as an object."
            )
        config = load_gateway_config(self.config.source)
        plugins = config.plugin_config()
        check_plugins(self.admin_token, plugins)
        self._open_reloads().reload_config(plugins)

    # -- starting and stopping ---------------------------------------------------

    def start_delivery(self) -> None:
        """Start the delivery workers of the plug-ins that handle an event. Idempotent."""
        if self._delivering or self.outbox is None:
            return
        exports = self.delivered_exports
        self.outbox.start(p for p in self.plugins if exports & p.exports)
        self._delivering = True

    async def stop_delivery_async(self) -> None:
        """Stop the workers in a thread (deliveries in flight finish within grace_s)."""
        if self.outbox is not None and self._delivering:
            await self.outbox.stop_async()
        self._delivering = False

    def start_watching(self) -> None:
        """Reload ``watch: true`` plug-ins when their files change. Idempotent."""
        self._open_reloads().start_watching()

    def stop_watching(self) -> None:
        if self.reloads is not None:
            self.reloads.stop_watching()

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.stop_watching)  # it joins the watch thread
        await self.stop_delivery_async()
        if self.proxy is not None:
            await self.proxy.aclose()
        self.close()

    def close(self) -> None:
        """Stop delivery, close the plug-ins, the outbox and the app client. Idempotent."""
        self._closed = True
        self.stop_watching()
        if self.outbox is not None:
            self.outbox.close()
        self._delivering = False
        self.plugins.close()
        self.api.close()

    def __enter__(self) -> Self:
        self.start_delivery()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _GatewayApp:
    """The gateway's routes, and its lifespan (delivery on, then off)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.webhooks_path = gateway.config.webhooks.path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets: the handshake is refused
        path = scope["path"]
        gateway = self.gateway
        if path == self.webhooks_path:
            await gateway.receiver(scope, receive, send)
        elif path == HEALTH_PATH:
            await _health(gateway)(scope, receive, send)
        elif gateway._hooks is not None and gateway.proxy is not None and _under(path, PREFIX):
            await gateway._hooks(_upstream_scope(scope, gateway.proxy), receive, send)
        else:
            response = JSONResponse(
                error_body("not_found", f"The gateway serves nothing at {path[:200]}."),
                status_code=404,
            )
            await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async with self._running() as started:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if started is None:
                        await send({"type": "lifespan.startup.complete"})
                    else:
                        await send({"type": "lifespan.startup.failed", "message": started})
                        return
                elif message["type"] == "lifespan.shutdown":
                    break
        await send({"type": "lifespan.shutdown.complete"})

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[str | None]:
        gateway = self.gateway
        try:
            gateway.start_delivery()
        except Exception as exc:
            log.error("the gateway cannot start delivering events: %s", exc)
            yield str(exc)
            return
        gateway.start_watching()
        log.info("gateway: %s", gateway.describe())
        try:
            yield None
        finally:
            await gateway.aclose()


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _upstream_scope(scope: Scope, proxy: UpstreamProxy) -> dict[str, Any]:
    """``/api<rest>`` as the app's own path (``<base_url path><rest>``)."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    rest = raw[len(PREFIX) :] if raw.startswith(PREFIX.encode()) else raw
    return {
        **scope,
        "path": proxy.upstream_path(scope["path"]),
        "raw_path": proxy.prefix + rest,
    }


def _health(gateway: Gateway) -> JSONResponse:
    return JSONResponse(
        {
            "status": "ok",
            "plugins": [p.name for p in gateway.plugins],
            "proxy": gateway.config.proxy,
        }
    )


def create_gateway(
    config: GatewayConfig | str | Path,
    **options: Any,
) -> ASGIApp:
    """The gateway of ``config`` (a ``gateway.yaml`` path or a loaded ``GatewayConfig``)
    as an ASGI app; run its lifespan to deliver events. ``options`` go to ``Gateway``."""
    return Gateway(config, **options).app
