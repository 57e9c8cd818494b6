"""``Hostwire``: one object that gives a Starlette or FastAPI app its plug-in system.

It wires what an app needs and nothing the app must know about: host
functions for every operation of the app's OpenAPI document (called in
process, limited by each plug-in's grants), the configured plug-ins, the
event bus and the outbox in the app's own database, the HTTP hooks
middleware, answers for hostwire's errors, and the app's lifespan (bind the
loop, load the plug-ins, start and stop delivery workers).

The document is resolved when the app starts, so routes declared after
``Hostwire(app, ...)`` are host functions too: an explicit ``spec``, else the
configuration's ``openapi`` file, else the app's own document (FastAPI's
``app.openapi()``, or what the app serves at ``/openapi.json``). Tracked
models add their lifecycle webhooks to it; ``openapi()`` returns the result,
and a FastAPI app serves it.
"""

from __future__ import annotations

import copy
import inspect
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio.to_thread
import httpx
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from hostwire._admin import AdminEntry, ConsolePage, check_plugins
from hostwire._admin import admin_token as resolve_admin_token
from hostwire._config import HostwireConfig, load_config
from hostwire._contract import error_body
from hostwire._errors import (
    ConfigError,
    EventHandlerError,
    EventRejected,
    HostwireError,
    RecordInvalid,
    RecordReentrant,
    SpecError,
    StorageError,
)
from hostwire._events import (
    Event,
    EventBus,
    ModelTracker,
    Outbox,
    RateLimit,
    RateLimiter,
    Subscriber,
    limiter_for,
)
from hostwire._hooks import HttpHooksMiddleware
from hostwire._hostapi import HostApi, OpenAPIDocument, load_openapi
from hostwire._pluginset import Lineup, PluginSet
from hostwire._reload import Reloads, plugin_states
from hostwire._runtime import Plugin, log_safe
from hostwire._targets import AsgiTarget

log = logging.getLogger("hostwire")

SERVED_SPEC_PATH = "/openapi.json"
MAX_BODY_BYTES = 1024 * 1024
Database = Engine | AsyncEngine | str | Path
SpecSource = str | Path | Mapping[str, Any] | OpenAPIDocument


class Hostwire:
    """The plug-in system of one ASGI app (Starlette or FastAPI).

    ``config`` is a configuration file's path or a loaded ``HostwireConfig``
    (none: no plug-ins, yet the document and its webhooks);
    ``spec`` a path, an http(s) URL, a dict or a loaded ``OpenAPIDocument``
    (by default the app's own document); ``database`` the app's SQLAlchemy
    ``Engine`` or ``AsyncEngine`` (or a URL, or a SQLite file's path), where
    the outbox keeps events.
    ``hooks=False`` leaves the HTTP hooks middleware out, for an app that places
    ``hooks_middleware()`` in its own stack. ``caller_thread`` names the
    operations (operationIds, ``*`` for all) whose in-process host calls run on
    the calling plug-in's thread rather than hop to the app's event loop (see
    ``AsgiTarget``): the fast path, for operations that need nothing of that loop.
    The admin token (console, plug-in API, ``/metrics``) is ``admin_token``, else
    the configuration's ``admin.token_env`` or ``admin.token_file``, else
    ``HOSTWIRE_ADMIN_TOKEN``; ``app_tokens`` are the app's own API credentials,
    which it is refused as.
    Plug-ins are loaded when the app starts (or by ``start()``); ``close()``
    undoes everything.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: HostwireConfig | str | Path | None = None,
        spec: SpecSource | None = None,
        database: Database | None = None,
        hooks: bool = True,
        max_body_bytes: int = MAX_BODY_BYTES,
        caller_thread: Collection[str] = (),
        admin_token: str | None = None,
        app_tokens: Collection[str] = (),
    ) -> None:
        self.app = app
        # The file reload_config() reads again (None: the configuration was an object).
        self.config_path: Path | None = None
        if config is None:
            self.config = HostwireConfig()
        elif isinstance(config, HostwireConfig):
            self.config = config
        else:
            self.config_path = Path(config)
            self.config = load_config(config)
        self.max_body_bytes = max_body_bytes
        # The admin routes (console, plug-in API, /metrics) are off without one.
        self.admin_token = resolve_admin_token(admin_token, self.config, app_tokens)
        self._console_pages: list[ConsolePage] = []
        self.target = AsgiTarget(app, caller_thread=caller_thread)
        self.tracker = ModelTracker()
        self.document: OpenAPIDocument | None = None
        self.plugins: PluginSet | None = None
        self.bus: EventBus | None = None
        # The HTTP hooks' entries in the app's middleware, told of hot reloads.
        self._hook_entries: weakref.WeakSet[_HooksEntry] = weakref.WeakSet()
        self._spec = spec
        self._app_openapi: Callable[[], dict[str, Any]] | None = None
        self._merged: dict[str, Any] | None = None
        self._database = database
        # Made at start, once the plug-ins loaded: a bad one fails before any file is made.
        self.outbox: Outbox | None = None
        # The plug-ins' rate limits, counted in the outbox's database (made at start).
        self.rate_limiter: RateLimiter | None = None
        # Hot reloads of the plug-ins (made at start), with the thread watching files.
        self.reloads: Reloads | None = None
        self._workers_started = False
        if isinstance(app, Starlette):
            self._install(app, hooks=hooks)
        elif hooks:
            raise TypeError(
                f"Hostwire installs itself into a Starlette or FastAPI app, not "
                f"{type(app).__name__}; pass hooks=False and wrap the app with "
                "hooks_middleware(), and call start() and close() yourself."
            )

    # -- what the app calls ------------------------------------------------------

    def track(
        self,
        model: type,
        *,
        name: str | None = None,
        schema: str | dict[str, Any] | None = None,
        immutable: Sequence[str] = (),
    ) -> None:
        """Raise ``<name>_before_*`` and ``<name>_after_*`` events for a mapped class.

        ``name`` defaults to the class name in snake_case; ``schema`` is the
        record schema (a component name of the document, or a JSON schema),
        by default the component named like the class, else the columns';
        ``immutable`` names fields plug-ins may not change (the primary key
        never may).
        """
        if self.document is not None:
            raise RuntimeError(
                f"track({model.__name__}) came after the app started: call it before, so "
                "that the document has its webhooks."
            )
        self.tracker.track(model, name=name, schema=schema, immutable=immutable)

    def openapi(self) -> dict[str, Any]:
        """The app's OpenAPI document with the tracked models' webhooks added."""
        if self._merged is None:
            self._merged = self._with_webhooks(self._own_document())
        return self._merged

    def emit(
        self,
        type: str,
        data: Mapping[str, Any],
        *,
        connection: Session | Connection | None = None,
        subject: str | None = None,
    ) -> str:
        """Raise an event of webhook ``type`` (its name or its export) with ``data``; return its id.

        Any webhook of the document but a lifecycle before-event (those run
        inside a tracked model's change). An enveloped webhook's handlers get
        the envelope ``{"id", "type", "timestamp", "data"}`` around ``data``; a
        bare one's get ``data`` itself, exactly. Either way ``data`` must match
        the webhook's schema (``ValueError`` naming the first problem), and the
        returned id is the event id (the outbox key and idempotency key).

        The event goes to the outbox, for every plug-in that exports its
        handler, and is delivered after commit: inside ``connection``'s
        transaction when given one (rolled back with it), else in one of its
        own. ``subject`` orders events: those of one subject reach a plug-in
        one at a time, in order. By default it is ``<type's first part>/<id>``
        when ``data`` has an ``id``; for a bare payload, else the id of the
        first object inside (``invoice/<lago_id>`` for Lago's
        ``invoice_created``); else the event id (see ``Event.default_subject``).
        """
        outbox, bus = self._events_ready(f'emit("{type}")')
        raised = self._event(type, data, bus)
        targets = [(s.plugin.name, raised.export) for s in bus.handlers_of(raised.export)]
        if not targets:
            return raised.id
        if subject is None:
            subject = raised.default_subject()

        def add(conn: Connection) -> None:
            outbox.add(
                conn,
                raised.payload,
                subject=subject,
                targets=targets,
                event_id=raised.id,
                event_type=raised.type,
            )

        if connection is None:
            with outbox.engine.begin() as own:
                add(own)
            outbox.notify()
        elif isinstance(connection, Session):
            add(connection.connection())
            event.listen(connection, "after_commit", lambda _s: outbox.notify(), once=True)
        elif isinstance(connection, Connection):
            add(connection)
            # Connections report a commit just before it happens: the poll is the backstop.
            event.listen(connection, "commit", lambda _c: outbox.notify(), once=True)
        else:
            raise TypeError(
                "emit(connection=...) takes a SQLAlchemy Session or Connection, not "
                f"{type_name(connection)}; for AsyncSession or AsyncConnection await emit_async()."
            )
        return raised.id

    async def emit_async(
        self,
        type: str,
        data: Mapping[str, Any],
        *,
        connection: AsyncSession | AsyncConnection | None = None,
        subject: str | None = None,
    ) -> str:
        """``emit()`` for async code: in ``connection``'s transaction, or in a thread."""
        if connection is None:
            return await anyio.to_thread.run_sync(lambda: self.emit(type, data, subject=subject))
        if isinstance(connection, AsyncSession | AsyncConnection):
            found: str = await connection.run_sync(
                lambda sync: self.emit(type, data, connection=sync, subject=subject)
            )
            return found
        raise TypeError(
            "emit_async(connection=...) takes an AsyncSession or AsyncConnection, not "
            f"{type_name(connection)}."
        )

    def hooks_middleware(self) -> Middleware:
        """The HTTP hooks middleware, for an app that places it in its own stack."""
        return Middleware(_HooksEntry, hostwire=self)

    def admin_middleware(self) -> Middleware:
        """The admin routes (console, plug-in API, ``/metrics``), for an app that builds
        its own stack: place it outside the app's authentication."""
        return Middleware(AdminEntry, hostwire=self)

    def console_page(
        self, name: str, title: str, rows: Callable[[], Awaitable[list[dict[str, Any]]]]
    ) -> None:
        """Add a page to the operators' console at ``/hostwire/<name>``: a table of
        what ``await rows()`` returns (dicts, one per row), refreshed every 2 s."""
        page = ConsolePage(name, title, rows)
        if any(p.name == name for p in self._console_pages):
            raise ValueError(f'console page "{name}" is added already')
        self._console_pages.append(page)

    @property
    def console_pages(self) -> list[ConsolePage]:
        """The console pages the app added, in order."""
        return list(self._console_pages)

    def loaded_plugins(self) -> list[Plugin]:
        """The plug-ins serving now, in the configuration's order (none before start)."""
        return list(self.plugins) if self.plugins is not None else []

    def plugin_states(self) -> list[dict[str, Any]]:
        """Every configured plug-in, loaded or not, as JSON-able data for operators.

        ``version`` counts the loads of the plug-in (1 at start, one more for each
        reload or enable) and ``loaded_at`` says when the last was (None: never loaded).
        """
        config = self.plugins.config if self.plugins is not None else self.config
        return plugin_states(config, self.loaded_plugins(), self.reloads)

    def plugin_state(self, name: str) -> dict[str, Any] | None:
        """``plugin_states()``'s entry for plug-in ``name`` (None: no such plug-in)."""
        return next((s for s in self.plugin_states() if s["name"] == name), None)

    # -- hot reload --------------------------------------------------------------

    def replace_plugin(self, name: str, module: bytes, *, sha256: str | None = None) -> None:
        """Serve ``module`` (binary WebAssembly) as configured plug-in ``name``, without
        a restart.

        The module gets every check of a start (``sha256`` first, when given) and is
        compiled before anything changes: a bad one raises a one-line
        ``ConfigError`` and the serving version stays. Calls in flight finish on
        the old version, new calls get the new one, and the old one's instances
        are freed once its last call has ended. Its after-event deliveries move
        to the new version, none lost. A disabled plug-in keeps the module for
        when it is enabled. Blocks (a compile): in async code run it in a thread.
        """
        self._reloads(f'replace_plugin("{name}")').replace(name, module, sha256)

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Start or stop serving configured plug-in ``name`` (as ``replace_plugin``
        swaps versions). A disabled plug-in's pending deliveries stay pending until
        it is enabled again. Blocks."""
        self._reloads(f'set_enabled("{name}")').set_enabled(name, enabled)

    def reload_config(self) -> None:
        """Read the configuration file again and serve what it says: every enabled
        plug-in loaded anew (modules given to ``replace_plugin`` are dropped), the
        others stopped. All of it loads, or nothing changes (``ConfigError``).
        Changing ``openapi`` or ``events`` takes a restart. Blocks."""
        reloads = self._reloads("reload_config()")
        if self.config_path is None:
            raise ConfigError(
                "reload_config() reads the configuration file again, but this Hostwire was "
                "given its configuration as an object: give Hostwire(config=<path>)."
            )
        config = load_config(self.config_path)
        check_plugins(self.admin_token, config)
        reloads.reload_config(config)
        self.config = config

    def _reloads(self, what: str) -> Reloads:
        if self.reloads is None:
            raise RuntimeError(f"{what} came before Hostwire started (the app's startup).")
        return self.reloads

    def _swapped(self, lineup: Lineup) -> None:
        # A new rate_limit (or one fewer) needs a new limiter; the same ones keep theirs.
        self.rate_limiter = _rate_limiter(lineup.rate_limits, self.outbox, self.rate_limiter)
        # What was cached from the old lineup goes, so its replaced plug-ins can be freed.
        if self.bus is not None:
            self.bus.forget()
        for entry in list(self._hook_entries):
            entry.forget()

    @property
    def subscribers(self) -> Sequence[Subscriber]:
        """The plug-ins serving now in the configuration's order (none before start)."""
        return self.plugins.subscribers if self.plugins is not None else ()

    # -- starting and stopping ---------------------------------------------------

    def start(self) -> None:
        """Resolve the document and load the plug-ins. Idempotent.

        The lifespan calls it; call it yourself to fail early (a bad plug-in
        raises ``ConfigError`` here) or in a program that serves no requests.
        """
        if self.plugins is not None:
            return
        document = self._resolve_document()
        _check_caller_thread(self.target.caller_thread, document)
        self.target.path_prefix = document.base_path
        api = HostApi(document, self.target, max_depth=self.config.events.max_depth)
        plugins = PluginSet(self.config, api)
        try:
            if self.outbox is None and self._database is not None:
                events = self.config.events.model_dump(exclude={"max_depth"})
                self.outbox = Outbox(self._database, **events)
            self.rate_limiter = _rate_limiter(plugins.rate_limits, self.outbox)
        except BaseException:
            plugins.close()
            raise
        self.document = document
        self.plugins = plugins
        self.reloads = Reloads(
            plugins,
            outbox=self.outbox,
            delivered=self._delivered_exports(),
            delivering=lambda: self._workers_started,
            swapped=self._swapped,
        )
        self.bus = EventBus(plugins, spec=document)  # a before-event leases its plug-ins
        self.tracker.bind(self.bus, self.outbox)

    async def start_async(self) -> None:
        """``start()`` off the event loop, with the app's served document fetched first."""
        if self.plugins is not None:
            return
        if self._needs_served_document():
            self._merged = self._with_webhooks(await self._served_document())
        await anyio.to_thread.run_sync(self.start)

    def start_watching(self) -> None:
        """Start the thread that reloads ``watch: true`` plug-ins when their files
        change (the lifespan does). Idempotent."""
        if self.reloads is not None:
            self.reloads.start_watching()

    def stop_watching(self) -> None:
        """Stop watching the plug-ins' files. Idempotent."""
        if self.reloads is not None:
            self.reloads.stop_watching()

    def start_delivery(self) -> None:
        """Start the outbox's delivery workers for the plug-ins that handle after-events."""
        if self.outbox is None or self.plugins is None or self._workers_started:
            return
        delivered = self._delivered_exports()
        self.outbox.start(p for p in self.plugins if delivered & p.exports)
        self._workers_started = True

    async def stop_delivery_async(self) -> None:
        """Stop the delivery workers (in a thread: in-flight deliveries may need the loop)."""
        if self.outbox is not None and self._workers_started:
            await self.outbox.stop_async()
        self._workers_started = False

    def close(self) -> None:
        """Stop delivery, unbind and close the plug-ins. Idempotent."""
        if self.outbox is not None:
            self.outbox.stop()
        self._workers_started = False
        self._shut()

    async def close_async(self) -> None:
        """``close()`` with delivery stopped in a thread: in-flight deliveries may need the loop."""
        await self.stop_delivery_async()
        self._shut()

    def __enter__(self) -> Self:
        self.start()
        self.start_delivery()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------

    def _delivered_exports(self) -> frozenset[str]:
        """Exports of the document's webhooks that the outbox delivers (all but before-events)."""
        webhooks = self.document.webhooks.values() if self.document else ()
        return frozenset(w.export for w in webhooks if not w.before)

    def _shut(self) -> None:
        self.stop_watching()
        self.tracker.unbind()
        self.target.unbind()
        plugins, self.plugins = self.plugins, None
        self.reloads = None
        self.bus = None
        self.rate_limiter = None
        self.document = None
        if plugins is not None:
            plugins.close()

    def _install(self, app: Starlette, *, hooks: bool) -> None:
        if hooks:
            app.add_middleware(_HooksEntry, hostwire=self)
        app.add_middleware(AdminEntry, hostwire=self)  # outermost: before the app's auth
        for kind, handler in _HANDLERS.items():
            if kind not in app.exception_handlers:  # the app's own answer wins
                app.add_exception_handler(kind, handler)
        own_openapi = getattr(app, "openapi", None)
        if callable(own_openapi):  # FastAPI: serve the document with the webhooks
            self._app_openapi = own_openapi
            app.openapi = self.openapi  # type: ignore[attr-defined]
        app.router.lifespan_context = self._lifespan(app.router.lifespan_context)
        app.state.hostwire = self

    def _lifespan(
        self, inner: Callable[[Any], AbstractAsyncContextManager[Any]]
    ) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
        @asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[Any]:
            self.target.bind()
            try:
                await self.start_async()
                self.start_delivery()
                self.start_watching()
                async with inner(app) as state:
                    self.target.serving = True  # the app's own startup is done
                    try:
                        yield state
                    finally:
                        self.target.serving = False
                        await anyio.to_thread.run_sync(self.stop_watching)
                        # Before the app's own shutdown, which may close the database
                        # the deliveries use; in-flight ones still reach the app.
                        await self.stop_delivery_async()
            finally:
                await self.close_async()

        return lifespan

    def _events_ready(self, what: str) -> tuple[Outbox, EventBus]:
        if self._database is None:
            raise ConfigError(
                f"{what} needs the outbox: give Hostwire(database=...) (the app's engine)."
            )
        if self.bus is None or self.outbox is None:
            raise RuntimeError(f"{what} came before Hostwire started (the app's startup).")
        return self.outbox, self.bus

    def _event(self, type: str, data: Mapping[str, Any], bus: EventBus) -> Event:
        webhook = bus.webhook(type)
        if webhook.before:
            raise ValueError(
                f'"{webhook.name}" is a before-event: it runs synchronously inside a tracked '
                "model's change, where its handlers may refuse the change, so it cannot be "
                "emitted; emit an after-event or another webhook."
            )
        return bus.event(webhook.name, data)

    def _needs_served_document(self) -> bool:
        return self._source() is None and self._app_openapi is None and self._merged is None

    def _source(self) -> SpecSource | None:
        if self._spec is not None:
            return self._spec
        if self.config.openapi:
            return self.config.base_dir / self.config.openapi
        return None

    def _resolve_document(self) -> OpenAPIDocument:
        source = self._source()
        if source is not None and not self.tracker.models:
            if isinstance(source, OpenAPIDocument):
                return source
            # Loaded from its file, so that $refs to other files resolve.
            return load_openapi(source, name="the spec given to Hostwire")
        if self._merged is None and self._needs_served_document():
            raise SpecError(
                "Hostwire found no OpenAPI document: give spec= (a path, URL or dict), name "
                f"one in the configuration's openapi key, or serve one at {SERVED_SPEC_PATH} "
                "(fetched when the app starts)."
            )
        return load_openapi(self.openapi(), name="the app's OpenAPI document")

    def _own_document(self) -> dict[str, Any]:
        source = self._source()
        if isinstance(source, OpenAPIDocument):
            return copy.deepcopy(source.document)
        if source is not None:
            return copy.deepcopy(load_openapi(source, name="the spec given to Hostwire").document)
        if self._app_openapi is not None:
            return copy.deepcopy(self._app_openapi())
        raise RuntimeError(
            f"the app's document is known once it has started (it serves it at "
            f"{SERVED_SPEC_PATH}); give Hostwire(spec=...) to have it before."
        )

    def _with_webhooks(self, document: Mapping[str, Any]) -> dict[str, Any]:
        # Webhooks the document declares already keep their definition.
        return self.tracker.document(copy.deepcopy(dict(document)))

    async def _served_document(self) -> dict[str, Any]:
        transport = httpx.ASGITransport(app=self._inner_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            try:
                response = await client.get(SERVED_SPEC_PATH)
            except Exception as exc:
                raise SpecError(
                    f"fetching the app's {SERVED_SPEC_PATH} failed: {log_safe(str(exc))}; "
                    "give Hostwire(spec=...)."
                ) from exc
        if response.status_code != 200:
            raise SpecError(
                f"the app answered {response.status_code} for {SERVED_SPEC_PATH}: give "
                "Hostwire(spec=...) (a path, URL or dict), or serve the document there."
            )
        try:
            found = response.json()
        except ValueError as exc:
            raise SpecError(f"the app's {SERVED_SPEC_PATH} is not JSON: {exc}.") from exc
        if not isinstance(found, dict):
            raise SpecError(f"the app's {SERVED_SPEC_PATH} is not an OpenAPI document.")
        return found

    def _inner_app(self) -> ASGIApp:
        # The routes without the middleware (the app may guard /openapi.json).
        router = getattr(self.app, "router", None)
        return router if router is not None else self.app


class _HooksEntry:
    """Runs the HTTP hooks once the plug-ins are loaded; passes requests through before."""

    def __init__(self, app: ASGIApp, hostwire: Hostwire) -> None:
        self.app = app
        self.hostwire = hostwire
        self._hooks: HttpHooksMiddleware | None = None
        self._for: tuple[OpenAPIDocument, RateLimiter | None] | None = None
        hostwire._hook_entries.add(self)  # told of each hot reload (forget)

    def forget(self) -> None:
        if self._hooks is not None:
            self._hooks.forget()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hostwire = self.hostwire
        document, plugins = hostwire.document, hostwire.plugins
        if scope["type"] != "http" or document is None or plugins is None:
            await self.app(scope, receive, send)
            return
        limiter = hostwire.rate_limiter
        if self._hooks is None or self._for is None or self._for != (document, limiter):
            self._hooks = HttpHooksMiddleware(
                self.app,
                subscribers=lambda: plugins.subscribers,
                max_body_bytes=hostwire.max_body_bytes,
                spec=document,
                rate_limiter=limiter,
                lease=plugins.lease,  # a request runs on the plug-ins it started with
            )
            self._for = (document, limiter)
        await self._hooks(scope, receive, send)


def _check_caller_thread(names: Collection[str], document: OpenAPIDocument) -> None:
    unknown = sorted(n for n in names if n != "*" and document.operation(n) is None)
    if unknown:
        known = ", ".join(sorted(o.grant for o in document.operations.values()))
        raise ConfigError(
            f"caller_thread names {', '.join(unknown)}, which "
            f"{'is not an operation' if len(unknown) == 1 else 'are not operations'} of "
            f"{document.source} (operations: {known})."
        )


def _rate_limiter(
    limits: Mapping[str, RateLimit], outbox: Outbox | None, current: RateLimiter | None = None
) -> RateLimiter | None:
    """The plug-ins' rate limits, counted in the outbox's database (in this process
    without one: ``RateLimiter.for_database`` warns)."""
    if outbox is None:
        return limiter_for(limits, None, current=current)
    return limiter_for(limits, outbox.engine, lock=outbox.mark_lock, current=current)


def type_name(value: object) -> str:
    return type(value).__name__


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status)


async def _rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EventRejected)
    response = _error(422, "rejected", str(exc))
    response.headers["x-hostwire-plugin"] = exc.plugin
    return response


async def _handler_failed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EventHandlerError)
    log.warning("%s", log_safe(str(exc)))
    response = _error(502, "plugin_failed", str(exc))
    response.headers["x-hostwire-plugin"] = exc.plugin
    return response


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RecordInvalid)
    return _error(422, "invalid_record", str(exc), exc.details)


async def _reentrant(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RecordReentrant)
    return _error(409, "reentrant_change", str(exc))


async def _storage(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StorageError)
    response = _error(503, "storage_unavailable", str(exc))
    response.headers["retry-after"] = str(exc.retry_after_s)
    return response


_HANDLERS: dict[type[HostwireError], Callable[[Request, Exception], Any]] = {
    EventRejected: _rejected,
    EventHandlerError: _handler_failed,
    RecordInvalid: _invalid,
    RecordReentrant: _reentrant,
    StorageError: _storage,
}


def factory_arguments(factory: Callable[..., Any], **offered: Any) -> dict[str, Any]:
    """The keyword arguments of ``offered`` that ``factory`` accepts (for the CLI)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return {k: v for k, v in offered.items() if v is not None}
    return {k: v for k, v in offered.items() if k in parameters and v is not None}
