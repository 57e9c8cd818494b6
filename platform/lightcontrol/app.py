"""The lightcontrol ASGI app: routes, errors and the middleware stack."""

from __future__ import annotations

import functools
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from hostwire import (
    ConfigError,
    Hostwire,
    HostwireConfig,
    OpenAPIDocument,
    Outbox,
    PluginSet,
    StorageError,
    load_openapi,
    log_safe,
    parse_config,
    to_thread,
)
from lightcontrol import _spec
from lightcontrol._body import BadJson, parse_json
from lightcontrol._middleware import (
    CLIENT_GONE,
    BearerAuthMiddleware,
    BodyLimitMiddleware,
    ConcurrencyLimitMiddleware,
    RequestIdMiddleware,
    error_body,
    log_client_gone,
)
from lightcontrol.feed import ChangeFeed
from lightcontrol.store import (
    DEFAULT_LIGHT_ID,
    POOL_SIZE,
    Light,
    LightError,
    LightInvalid,
    LightNotFound,
    LightPluginFailed,
    LightStore,
    dispose,
    make_engine,
)

log = logging.getLogger("lightcontrol")
PUBLIC_PATHS = frozenset(
    {"/openapi.json", "/openapi.yaml", "/.well-known/ai-plugin.json", "/logo.png", "/legal"}
)
COLORS = {
    "ToRed": "red",
    "ToGreen": "green",
    "ToBlue": "blue",
    "ToWhite": "white",
    "Reset": "white",
}
STATUSES = {"TurnOn": "on", "TurnOff": "off"}
# Set by ``hostwire serve --workers N`` in each worker process: N.
WORKERS_ENV = "HOSTWIRE_WORKERS"


@dataclass
class Settings:
    """How to run lightcontrol; ``from_env`` reads the LIGHTCONTROL_* variables."""

    db_path: str = "lightcontrol.db"
    db_pool: int = POOL_SIZE  # PostgreSQL connections per process (twice that at a peak)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    public_url: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_body_bytes: int = 1024 * 1024
    max_concurrent: int = 64
    max_streams: int = 32  # open GET /events/stream connections
    body_timeout_s: float = 30.0  # a body not complete by then gets 408
    # Bearer tokens of plug-ins calling over HTTP, by plug-in name.
    plugin_tokens: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        env = os.environ
        values: dict[str, Any] = {}
        if env.get("LIGHTCONTROL_TOKEN"):
            values["token"] = env["LIGHTCONTROL_TOKEN"]
        if env.get("LIGHTCONTROL_PUBLIC_URL"):
            values["public_url"] = env["LIGHTCONTROL_PUBLIC_URL"]
        if env.get("LIGHTCONTROL_CORS_ORIGINS"):
            values["cors_origins"] = [
                o.strip() for o in env["LIGHTCONTROL_CORS_ORIGINS"].split(",") if o.strip()
            ]
        if env.get("LIGHTCONTROL_MAX_CONCURRENT"):
            values["max_concurrent"] = int(env["LIGHTCONTROL_MAX_CONCURRENT"])
        if env.get("LIGHTCONTROL_DB_POOL"):
            values["db_pool"] = int(env["LIGHTCONTROL_DB_POOL"])
        if env.get("LIGHTCONTROL_BODY_TIMEOUT_S"):
            values["body_timeout_s"] = float(env["LIGHTCONTROL_BODY_TIMEOUT_S"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def _error(
    status: int, code: str, message: str, details: list[dict[str, str]] | None = None
) -> Response:
    return Response(error_body(code, message, details), status, media_type="application/json")


def _refuse(problems: list[dict[str, str]]) -> None:
    """422 naming the first of ``problems`` (all of them in ``details``), if any."""
    if problems:
        first = problems[0]
        raise LightInvalid(f"{first['field']}: {first['message']}.", problems)


async def _body(request: Request, schema: str) -> dict[str, Any]:
    value = parse_json(await request.body())
    _refuse(_spec.problems(schema, value))
    assert isinstance(value, dict)
    return value


def _query(request: Request, operation_id: str) -> QueryParams:
    """The request's query, checked against the parameters of ``operation_id``."""
    _refuse(_spec.query_problems(operation_id, dict(request.query_params)))
    return request.query_params


def _states(light: dict[str, Any]) -> dict[str, Any]:
    return {"status": light["status"], "color": light["color"]}


def _store(request: Request) -> LightStore:
    store: LightStore = request.app.state.store
    return store


def _outbox(request: Request) -> Outbox:
    outbox = request.app.state.hostwire.outbox
    assert isinstance(outbox, Outbox)  # made at startup
    return outbox


async def _run(fn: Callable[..., Any], *args: Any) -> Any:
    # The model path blocks (SQLite fsync, plug-ins): never on the loop.
    # hostwire.to_thread keeps a pool per nesting depth, so a plug-in
    # calling back into this app cannot starve it of threads.
    return await to_thread(fn, *args)


def build_routes() -> list[Route]:
    """The API's routes: the lights, then their events."""
    return [*_light_routes(), *_event_routes()]


async def _read(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    # On an SQLite file reads take microseconds on their own WAL connection,
    # less than a hop to a worker thread: they run on the loop. On PostgreSQL
    # they wait for the network (or a server that is down): in a thread.
    if _store(request).reads_are_local:
        return fn(*args)
    return await _run(fn, *args)


# -- lights ----------------------------------------------------------------------------


def _light_routes() -> list[Route]:
    return [
        _path("/states", GET=_get_states),
        _path("/light_control", POST=_control_light),
        _path("/light_color", POST=_set_light_color),
        _path("/lights", GET=_list_lights, POST=_create_light),
        _path("/lights/{id}", GET=_get_light, PATCH=_update_light, DELETE=_delete_light),
    ]


async def _get_states(request: Request) -> Response:
    return _json(_states(await _read(request, _store(request).get, DEFAULT_LIGHT_ID)))


async def _control_light(request: Request) -> Response:
    body = await _body(request, "ControlLightRequest")
    light = await _run(
        _store(request).update, DEFAULT_LIGHT_ID, {"status": STATUSES[body["action"]]}
    )
    return _json(_states(light))


async def _set_light_color(request: Request) -> Response:
    body = await _body(request, "SetLightColorRequest")
    light = await _run(_store(request).update, DEFAULT_LIGHT_ID, {"color": COLORS[body["action"]]})
    return _json(_states(light))


async def _list_lights(request: Request) -> Response:
    return _json({"lights": await _read(request, _store(request).list)})


async def _create_light(request: Request) -> Response:
    body = await _body(request, "LightCreate")
    return _json(await _run(_store(request).create, body), 201)


async def _get_light(request: Request) -> Response:
    return _json(await _read(request, _store(request).get, request.path_params["id"]))


async def _update_light(request: Request) -> Response:
    body = await _body(request, "LightUpdate")
    return _json(await _run(_store(request).update, request.path_params["id"], body))


async def _delete_light(request: Request) -> Response:
    await _run(_store(request).destroy, request.path_params["id"])
    return Response(status_code=204)


# -- events ----------------------------------------------------------------------------


def _event_routes() -> list[Route]:
    return [
        _path("/events/deliveries", GET=_list_event_deliveries),
        _path("/events/stream", GET=_stream_light_events),
        _path("/events/{event_id}/replay", POST=_replay_event),
    ]


async def _list_event_deliveries(request: Request) -> Response:
    query = _query(request, "listEventDeliveries")
    outbox = _outbox(request)
    found = await _run(
        functools.partial(
            outbox.deliveries,
            plugin=query.get("plugin"),
            state=query.get("state"),
            event_id=query.get("event_id"),
            limit=int(query.get("limit", "100")),
        )
    )
    return _json({"deliveries": found, "summary": await _run(outbox.summary)})


async def _stream_light_events(request: Request) -> Response:
    limit = _query(request, "streamLightEvents").get("limit")
    feed: ChangeFeed = request.app.state.feed
    most = request.app.state.settings.max_streams
    if feed.listening >= most:
        response = _error(503, "overloaded", f"{most} event streams are open already; retry later.")
        response.headers["retry-after"] = "5"
        return response
    return StreamingResponse(
        feed.listen(int(limit) if limit else None),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache"},
    )


async def _replay_event(request: Request) -> Response:
    outbox = _outbox(request)
    event_id = request.path_params["event_id"]
    if not await _run(functools.partial(outbox.deliveries, event_id=event_id, limit=1)):
        raise LightNotFound(f'No event has the id "{event_id}".')
    count = await _run(outbox.replay, event_id, request.query_params.get("plugin"))
    return _json({"replayed": count})


Endpoint = Callable[[Request], Awaitable[Response]]


def _path(path: str, **endpoints: Endpoint) -> Route:
    """One route for all the methods of ``path``.

    Starlette answers 405 with the methods of the first route whose path
    matches, so one route per method would give an incomplete ``Allow``.
    """

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await endpoints[method](request)

    return Route(path, endpoint, methods=list(endpoints))


def build_metadata_routes(settings: Settings) -> list[Route]:
    resources = _spec.resource_dir()

    def base_url(request: Request) -> str:
        return (settings.public_url or str(request.base_url)).rstrip("/")

    async def openapi_json(request: Request) -> Response:
        return _json(_spec.spec())

    async def openapi_yaml(request: Request) -> Response:
        return Response(_spec.spec_text(), media_type="application/yaml")

    async def ai_plugin(request: Request) -> Response:
        text = (resources / "ai-plugin.json").read_text(encoding="utf-8")
        return Response(
            text.replace("{base_url}", base_url(request)), media_type="application/json"
        )

    async def logo(request: Request) -> Response:
        return Response((resources / "logo.png").read_bytes(), media_type="image/png")

    async def legal(request: Request) -> Response:
        return PlainTextResponse((resources / "legal.txt").read_text(encoding="utf-8"))

    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/openapi.yaml", openapi_yaml, methods=["GET"]),
        Route("/.well-known/ai-plugin.json", ai_plugin, methods=["GET"]),
        Route("/logo.png", logo, methods=["GET"]),
        Route("/legal", legal, methods=["GET"]),
    ]


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


async def _light_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LightError)
    plugin = getattr(exc, "plugin", None)
    if isinstance(exc, LightPluginFailed):  # the client sees it; the operator must too
        log.error(
            'before-event handler failed: plug-in "%s" export "%s" (fail_closed): %s request_id=%s',
            exc.plugin,
            exc.export or "?",
            log_safe(str(exc)),
            log_safe(str(getattr(request.state, "request_id", "-"))),
        )
    body = error_body(exc.code, str(exc), exc.details, plugin)
    return Response(body, exc.status, media_type="application/json")


async def _bad_json(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadJson)
    return _error(400, "invalid_json", str(exc), exc.details)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The access log would otherwise say 500. Nothing was done.
    log_client_gone(request.scope)
    return Response(status_code=CLIENT_GONE)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = {
        404: f"No route for {request.url.path}.",
        405: f"{request.method} is not allowed on {request.url.path}.",
    }.get(exc.status_code, str(exc.detail))
    response = _error(exc.status_code, codes.get(exc.status_code, "http_error"), message)
    response.headers.update(exc.headers or {})
    if "allow" in response.headers:  # Starlette joins a set: make it stable
        methods = sorted(m.strip() for m in response.headers["allow"].split(","))
        response.headers["allow"] = ", ".join(methods)
    return response


async def _storage_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StorageError)  # logged once per kind by the store's guard
    response = _error(503, "storage_unavailable", str(exc))
    response.headers["retry-after"] = str(exc.retry_after_s)
    return response


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return _error(500, "internal_error", "The server failed; the error is in its log.")


_EXCEPTION_HANDLERS: dict[Any, ExceptionHandler] = {
    LightError: _light_error,
    BadJson: _bad_json,
    ClientDisconnect: _client_gone,
    StorageError: _storage_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}


# Plug-ins' host calls to these run on the plug-in's own thread (no hop to the loop):
# their middleware and routes share nothing loop-bound, and their blocking store
# work goes through hostwire.to_thread, which runs it in place there. The event
# stream waits on the loop's change feed and stays on the loop.
CALLER_THREAD_OPERATIONS = (
    "getStates",
    "controlLight",
    "setLightColor",
    "listLights",
    "createLight",
    "getLight",
    "updateLight",
    "deleteLight",
)


def create_app(
    settings: Settings | None = None,
    *,
    store: LightStore | None = None,
    plugins: HostwireConfig | None = None,
) -> Starlette:
    """Build the app on the database ``settings.db_path`` names (an SQLite file's
    path or a URL), or on ``store``'s. It opens the store at startup and closes
    it at shutdown.

    ``plugins`` is a hostwire configuration: its plug-ins are loaded now (a
    bad one fails here, before serving) and call this app in process. Their
    lifecycle events come from hostwire tracking the ``Light`` model.
    """
    settings = settings or Settings.from_env()
    engine = (
        store.engine
        if store is not None
        else make_engine(settings.db_path, pool_size=settings.db_pool)
    )
    app = Starlette(
        routes=[*build_routes(), *build_metadata_routes(settings)],  # the API is the hot path
        exception_handlers=_EXCEPTION_HANDLERS,
        lifespan=_lifespan(settings, store, engine),
    )
    app.state.settings = settings
    config = plugins or parse_config({"plugins": []}, path=Path("lightcontrol.yaml"))
    spec = PluginSet.spec_path(config, _spec.resource_dir() / "light.yaml")
    document = load_openapi(spec)
    try:
        hw = Hostwire(
            app,
            config=config,
            spec=spec,
            database=engine,
            hooks=False,
            # The plug-ins' document may be another API's: only lightcontrol's own count.
            caller_thread=[n for n in CALLER_THREAD_OPERATIONS if document.operation(n)],
            app_tokens=[settings.token, *settings.plugin_tokens.values()],
        )
        hw.track(
            Light,
            name="light",
            schema=_light_schema(document),
            immutable=("created_at", "revision"),
        )
        hw.console_page("lights", "Lights", functools.partial(_console_lights, app))
        if plugins is not None:
            hw.start()  # load the plug-ins now: a bad one fails here
    except BaseException:
        if store is None:
            dispose(engine)
        raise
    app.user_middleware = _middleware(settings, hw)
    hosted = cast(Lifespan, app.router.lifespan_context)  # Hostwire's, around _lifespan
    app.router.lifespan_context = _closing(hw, engine if store is None else None)(hosted)
    app.state.hostwire = hw
    app.state.outbox = hw.outbox
    app.state.plugins = hw.plugins
    return app


Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]
CONSOLE_FIELDS = ("id", "name", "status", "color", "brightness", "revision", "updated_at")


async def _console_lights(app: Starlette) -> list[dict[str, Any]]:
    """The lights, for the operators' console page /hostwire/lights."""
    lights = await _run(app.state.store.list)
    return [{key: light[key] for key in CONSOLE_FIELDS} for light in lights]


def _light_schema(document: OpenAPIDocument) -> str | None:
    """The record schema of the light events: ``Light`` when the plug-ins' document has it
    (lightcontrol's own does), else hostwire's, from the columns."""
    schemas = document.document.get("components", {}).get("schemas", {})
    return "Light" if "Light" in schemas else None


def _closing(hw: Hostwire, engine: Engine | None) -> Callable[[Lifespan], Lifespan]:
    """Around Hostwire's lifespan: at the end, drop the tracker's listeners and the
    engine the app made (the outbox's workers have stopped by then)."""

    def wrap(inner: Lifespan) -> Lifespan:
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            try:
                async with inner(app):
                    app.state.plugins, app.state.outbox = hw.plugins, hw.outbox
                    yield
            finally:
                hw.tracker.close()
                if engine is not None:
                    dispose(engine)

        return lifespan

    return wrap


def _lifespan(settings: Settings, store: LightStore | None, engine: Engine) -> Lifespan:
    """Open the store (unless given) and its change feed; close them after.

    Hostwire's lifespan runs around this one: the plug-ins are loaded and the
    outbox's workers started before the store opens, and stopped after it closed.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        active = store or LightStore(engine)
        feed = ChangeFeed()
        feed.attach(active)
        app.state.store, app.state.feed = active, feed
        try:
            yield
        finally:
            # Deliveries in flight may call the app: stop them (in a thread, they
            # may need this loop to finish) before the store closes.
            outbox = app.state.hostwire.outbox
            if outbox is not None:
                await outbox.stop_async()
            feed.detach(active)
            if store is None:  # the app opened it
                active.close()

    return lifespan


def _middleware(settings: Settings, hw: Hostwire) -> list[Middleware]:
    """The stack, outermost first."""
    return [
        Middleware(RequestIdMiddleware),
        # hostwire's console, plug-in API and /metrics: the admin token's, not the API's.
        hw.admin_middleware(),
        *_cors(settings),
        # The body is read before the request takes a slot: slow senders hold none.
        Middleware(
            BodyLimitMiddleware,
            max_bytes=settings.max_body_bytes,
            body_timeout_s=settings.body_timeout_s,
        ),
        Middleware(
            ConcurrencyLimitMiddleware,
            max_concurrent=settings.max_concurrent,
            exempt_paths=frozenset({"/events/stream"}),
        ),
        # Plug-ins' HTTP hooks see every request before the app's own auth, so a
        # hook can guard, rate-limit or answer requests itself. Post-hook
        # rewrites are checked against the API this app serves.
        hw.hooks_middleware(),
        Middleware(
            BearerAuthMiddleware,
            token=settings.token,
            public_paths=PUBLIC_PATHS,
            plugin_tokens=settings.plugin_tokens,
        ),
    ]


def _cors(settings: Settings) -> list[Middleware]:
    if not settings.cors_origins:  # without origins CORS only adds work to every request
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            # x-api-key: for HTTP-hook guards such as the api_guard sample.
            allow_headers=["authorization", "content-type", "x-request-id", "x-api-key"],
            expose_headers=["x-request-id", "retry-after"],
        )
    ]


def serve_app(db_path: str | None = None, config: HostwireConfig | None = None) -> Starlette:
    """The factory ``hostwire serve`` uses (entry point group ``hostwire.apps``).

    ``db_path`` is an SQLite file's path or a database URL (``sqlite:///x.db``,
    ``postgresql://...``).
    """
    if int(os.environ.get(WORKERS_ENV) or "1") > 1 and not os.environ.get("LIGHTCONTROL_TOKEN"):
        raise ConfigError(
            "LIGHTCONTROL_TOKEN is not set: with several workers each would make a bearer "
            "token of its own; set it to the token clients use."
        )
    settings = Settings.from_env(db_path=db_path)
    app = create_app(settings, plugins=config)  # a bad plug-in fails here
    # Open the database once before serving: a read-only or full one is a
    # one-line StorageError here, not a traceback from the server's startup.
    try:
        LightStore(settings.db_path).close()
    except StorageError:
        app.state.hostwire.close()
        raise
    if not os.environ.get("LIGHTCONTROL_TOKEN"):
        log.warning("LIGHTCONTROL_TOKEN is not set; this run's bearer token is %s", settings.token)
    return app
