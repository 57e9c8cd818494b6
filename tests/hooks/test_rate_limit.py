"""Host-side rate limits on a plug-in's ``http_pre_hook``, counted in the app's database.

The middleware counts every request that reaches a rate-limited plug-in's
pre-hook, before the plug-in runs: over the limit the client gets 429
``rate_limited`` with ``Retry-After`` and the plug-in is not called. Counts
live in ``hostwire_rate_limits`` (here SQLite; across processes on PostgreSQL:
``test_rate_limit_workers``); the limiter's clock is moved, never waited for.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import Engine, func, select
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

import wat
from conftest import compile_wat
from hostwire import (
    CallContext,
    ConfigError,
    HostFunction,
    Hostwire,
    HttpHooksMiddleware,
    Limits,
    Plugin,
    Subscriber,
    parse_config,
)
from hostwire._events import RateLimit, RateLimiter, sync_engine
from hostwire._events.ratelimit import MISSING_KEY, DatabaseCounter, stored_key
from hostwire._events.tables import rate_limits
from hostwire._gateway import Gateway
from hostwire._gateway.config import parse_gateway_config

START = 1_800_000_000.0  # a window start for every per_s below (a multiple of 60 and 3600)
LIMIT = RateLimit(requests=3, per_s=60, key="header:x-api-key")


class Clock:
    """The limiter's time, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Guarded:
    """A pre-hook plug-in that notes each call (through a host function)."""

    def __init__(self, name: str = "guard") -> None:
        self.calls = 0

        def note(context: CallContext, data: bytes) -> bytes:
            self.calls += 1
            return b"{}"

        self.plugin = Plugin(
            name,
            compile_wat(wat.hook_handler("http_pre_hook")),
            host_functions=[HostFunction("note", note)],
            limits=Limits(timeout_ms=2000),
        )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    (tmp_path / "db").mkdir()
    engine = sync_engine(f"sqlite:///{tmp_path / 'db' / 'app.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock(START + 0.5)


@pytest.fixture
def guarded() -> Iterator[Guarded]:
    guarded = Guarded()
    yield guarded
    guarded.plugin.close()


async def _items(request: Request) -> Response:
    return JSONResponse({"items": []})


def hooked_app(plugins: list[Plugin], limiter: RateLimiter) -> TestClient:
    subscribers = [Subscriber(p) for p in plugins]
    app = Starlette(
        routes=[Route("/items", _items)],
        middleware=[
            Middleware(HttpHooksMiddleware, subscribers=lambda: subscribers, rate_limiter=limiter)
        ],
    )
    return TestClient(app)


def limited_client(
    guarded: Guarded, engine: Engine, clock: Clock, limit: RateLimit = LIMIT, **options: Any
) -> TestClient:
    limits = {guarded.plugin.name: limit}
    limiter = RateLimiter(limits, DatabaseCounter(engine, **options), clock=clock)
    return hooked_app([guarded.plugin], limiter)


def statuses(client: TestClient, count: int, path: str = "/items", **headers: str) -> list[int]:
    return [client.get(path, headers=headers).status_code for _ in range(count)]


def test_over_the_limit_is_429_with_retry_after_and_the_plugin_is_not_called(
    guarded: Guarded, engine: Engine, clock: Clock
) -> None:
    with limited_client(guarded, engine, clock) as client:
        assert statuses(client, 3, **{"X-API-Key": "k1"}) == [200, 200, 200]
        assert guarded.calls == 3
        response = client.get("/items", headers={"x-api-key": "k1"})
        # Refused again by this process without a count: the window's count only climbs.
        assert statuses(client, 2, **{"x-api-key": "k1"}) == [429, 429]
    assert response.status_code == 429
    assert guarded.calls == 3  # refused before the plug-in ran
    assert response.headers["retry-after"] == "60"  # 59.5 s to the window's end, rounded up
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {
            "code": "rate_limited",
            "message": 'Too many requests: plug-in "guard" allows 3 requests per 60 s for each '
            "value of header x-api-key; retry in 60 s.",
            "plugin": "guard",
        }
    }
    with engine.connect() as conn:
        rows = conn.execute(select(rate_limits)).all()
    assert [tuple(r) for r in rows] == [("guard", stored_key("k1", secret=True), START, 4)]


def test_keys_are_independent_and_a_missing_header_is_one_shared_key(
    guarded: Guarded, engine: Engine, clock: Clock
) -> None:
    with limited_client(guarded, engine, clock) as client:
        assert statuses(client, 4, **{"x-api-key": "a"}) == [200, 200, 200, 429]
        assert statuses(client, 4, **{"x-api-key": "b"}) == [200, 200, 200, 429]
        # No header and an empty one count together, under one key of their own.
        assert statuses(client, 2) + statuses(client, 2, **{"x-api-key": " "}) == [
            200,
            200,
            200,
            429,
        ]
        assert statuses(client, 1, **{"x-api-key": "c"}) == [200]
    with engine.connect() as conn:
        keys = dict(conn.execute(select(rate_limits.c.key, rate_limits.c.count)).all())
    hashed = {stored_key(k, secret=True): n for k, n in {"a": 4, "b": 4, "c": 1}.items()}
    assert keys == {**hashed, MISSING_KEY: 4}


def test_global_counts_everyone_and_client_counts_by_peer_address(
    guarded: Guarded, engine: Engine, clock: Clock
) -> None:
    everyone = RateLimit(requests=2, per_s=60, key="global")
    with limited_client(guarded, engine, clock, everyone) as client:
        assert statuses(client, 1, **{"x-api-key": "a"}) == [200]
        assert statuses(client, 2, **{"x-api-key": "b"}) == [200, 429]
    other = Guarded("per-client")
    try:
        per_client = {"per-client": RateLimit(requests=1, per_s=60)}  # key: client
        limiter = RateLimiter(per_client, DatabaseCounter(engine), clock=clock)
        app = hooked_app([other.plugin], limiter).app
        with TestClient(app, client=("10.0.0.1", 1000)) as first:
            assert statuses(first, 2) == [200, 429]
        with TestClient(app, client=("10.0.0.2", 1000)) as second:
            assert statuses(second, 1) == [200]
    finally:
        other.plugin.close()


def test_a_new_window_starts_afresh_and_ended_windows_are_deleted(
    guarded: Guarded, engine: Engine, clock: Clock
) -> None:
    with limited_client(guarded, engine, clock) as client:
        assert statuses(client, 4, **{"x-api-key": "k"}) == [200, 200, 200, 429]
        clock.now = START + 59.9
        response = client.get("/items", headers={"x-api-key": "k"})
        assert (response.status_code, response.headers["retry-after"]) == (429, "1")
        clock.now = START + 60  # the next window
        assert statuses(client, 4, **{"x-api-key": "k"}) == [200, 200, 200, 429]
    assert guarded.calls == 6
    with engine.connect() as conn:
        windows = conn.execute(select(rate_limits.c.window_start, rate_limits.c.count)).all()
    assert [tuple(w) for w in windows] == [(START + 60, 4)]  # the first window is gone


def test_header_values_are_stored_hashed_never_as_sent(
    guarded: Guarded, engine: Engine, clock: Clock
) -> None:
    with limited_client(guarded, engine, clock) as client:
        assert statuses(client, 2, **{"x-api-key": "secret-key-1"}) == [200, 200]
        assert statuses(client, 1) == [200]  # no header: the one shared key
    with engine.connect() as conn:
        keys = sorted(conn.execute(select(rate_limits.c.key)).scalars())
    digest = hashlib.sha256(b"secret-key-1").hexdigest()
    assert keys == [MISSING_KEY, f"sha256:{digest}"]


def test_long_client_addresses_are_stored_hashed() -> None:
    assert stored_key("k" * 64) == "k" * 64
    hashed = stored_key("k" * 65)
    assert hashed.startswith("sha256:")
    assert len(hashed) == 71
    assert hashed == stored_key("k" * 65) != stored_key("k" * 66)
    assert stored_key("short", secret=True).startswith("sha256:")


def _break(engine: Engine, tmp_path: Path) -> None:
    # The database's folder goes away: every new connection fails to open it.
    engine.dispose()
    shutil.rmtree(tmp_path / "db")


def test_storage_down_fails_open_by_default_logging_once(
    guarded: Guarded,
    engine: Engine,
    clock: Clock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with limited_client(guarded, engine, clock) as client:
        assert statuses(client, 3, **{"x-api-key": "k"}) == [200, 200, 200]
        _break(engine, tmp_path)
        with caplog.at_level(logging.WARNING, "hostwire.storage"):
            assert statuses(client, 3, **{"x-api-key": "k"}) == [200, 200, 200]
    assert guarded.calls == 6
    lines = [r.getMessage() for r in caplog.records if r.name == "hostwire.storage"]
    assert len(lines) == 1
    assert lines[0].startswith("storage unavailable (cannot_open) while counting a request for ")
    assert 'the rate_limit of plug-in "guard" (requests pass until it works again)' in lines[0]


def test_storage_down_with_deny_is_503_with_retry_after(
    guarded: Guarded, engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    deny = RateLimit(requests=3, per_s=60, key="global", on_storage_error="deny")
    with limited_client(guarded, engine, clock, deny) as client:
        assert statuses(client, 1) == [200]
        _break(engine, tmp_path)
        response = client.get("/items")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    error = response.json()["error"]
    assert (error["code"], error["plugin"]) == ("storage_unavailable", "guard")
    assert error["message"].startswith("Storage is unavailable: the database file cannot be opened")
    assert guarded.calls == 1


# -- configuration ------------------------------------------------------------------


def _config(tmp_path: Path, **entry: Any) -> Any:
    return parse_config(
        {"plugins": [{"name": "guard", "path": "guard.wasm", **entry}]},
        path=tmp_path / "plugins.yaml",
    )


@pytest.mark.parametrize(
    ("rate_limit", "message"),
    [
        pytest.param(
            {"requests": 3, "per_s": 60, "key": "cookie:sid"},
            'rate_limit.key: must be "client", "global" or "header:<name>" (e.g. '
            "header:x-api-key), not 'cookie:sid'",
            id="key-kind",
        ),
        pytest.param(
            {"requests": 3, "per_s": 60, "key": "header:"},
            'rate_limit.key: must be "client", "global" or "header:<name>" (e.g. '
            "header:x-api-key), not 'header:'",
            id="header-without-name",
        ),
        pytest.param(
            {"requests": 0, "per_s": 60},
            "rate_limit.requests: Input should be greater than or equal to 1",
            id="requests-0",
        ),
        pytest.param(
            {"requests": 3, "per_s": 0},
            "rate_limit.per_s: Input should be greater than 0",
            id="per_s-0",
        ),
        pytest.param(
            {"request": 3, "per_s": 60},
            'rate_limit.request: unknown key (did you mean "requests"?) (and 1 more problems)',
            id="misspelt",
        ),
        pytest.param(
            {"requests": 3, "per_s": 60, "on_storage_error": "block"},
            "rate_limit.on_storage_error: Input should be 'allow' or 'deny'",
            id="on_storage_error",
        ),
    ],
)
def test_a_bad_rate_limit_is_a_one_line_config_error(
    tmp_path: Path, rate_limit: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, rate_limit=rate_limit)
    assert (
        str(caught.value) == f'{tmp_path / "plugins.yaml"}: plugin "guard" (plugins[0]): {message}'
    )


def test_the_gateway_takes_rate_limit_in_its_plugin_list(tmp_path: Path) -> None:
    entry: dict[str, Any] = {"name": "guard", "path": "g.wasm"}
    entry["rate_limit"] = {"requests": 5, "per_s": 1}
    raw = {
        "openapi": "api.yaml",
        "app": {"base_url": "http://127.0.0.1:9"},
        "webhooks": {"secret": "whsec_" + "A" * 32},
        "plugins": [entry],
    }
    config = parse_gateway_config(raw, path=tmp_path / "gateway.yaml", environ={})
    limit = config.plugins[0].rate_limit
    assert limit is not None
    assert limit.to_rate_limit() == RateLimit(requests=5, per_s=1.0)
    entry["rate_limit"] = {"requests": 5, "per_s": 1, "kee": "global"}
    with pytest.raises(ConfigError, match=r'rate_limit.kee: unknown key \(did you mean "key"\?\)'):
        parse_gateway_config(raw, path=tmp_path / "gateway.yaml", environ={})


# -- through Hostwire ---------------------------------------------------------------

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "items", "version": "1"},
    "paths": {
        "/items": {
            "get": {"operationId": "listItems", "responses": {"200": {"description": "items"}}}
        }
    },
}
# A pre-hook that lets everything pass, and one plug-in with no pre-hook at all.
PASS_HOOK = """(module
  (memory (export "memory") 1)
  (func (export "http_pre_hook") (result i32) (i32.const 0)))"""
POST_ONLY = """(module
  (memory (export "memory") 1)
  (func (export "http_post_hook") (result i32) (i32.const 0)))"""


def _hostwire_app(
    tmp_path: Path, wat_text: str, database: str | None
) -> tuple[Starlette, Hostwire]:
    (tmp_path / "guard.wasm").write_bytes(compile_wat(wat_text))
    config = _config(tmp_path, rate_limit={"requests": 2, "per_s": 3600, "key": "header:x-api-key"})
    app = Starlette(routes=[Route("/items", _items)])
    return app, Hostwire(app, config=config, spec=SPEC, database=database)


def test_hostwire_counts_in_its_database(tmp_path: Path) -> None:
    app, hw = _hostwire_app(tmp_path, PASS_HOOK, f"sqlite:///{tmp_path / 'app.db'}")
    with TestClient(app) as client:
        assert statuses(client, 3, **{"x-api-key": "k"}) == [200, 200, 429]
        assert hw.outbox is not None
        with hw.outbox.engine.connect() as conn:
            assert conn.execute(select(func.sum(rate_limits.c.count))).scalar() == 3


def test_hostwire_without_a_database_counts_in_process_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = _hostwire_app(tmp_path, PASS_HOOK, None)
    with caplog.at_level(logging.WARNING, "hostwire.ratelimit"), TestClient(app) as client:
        assert statuses(client, 3, **{"x-api-key": "k"}) == [200, 200, 429]
    warnings = [r.getMessage() for r in caplog.records if r.name == "hostwire.ratelimit"]
    assert warnings == [
        'Plug-in "guard": its rate_limit (2 requests per 3600 s for each value of header '
        "x-api-key) counts in this process only, as there is no database; with several "
        "processes a key gets that many in each."
    ]


def test_rate_limit_on_a_plugin_without_a_pre_hook_is_a_load_error(tmp_path: Path) -> None:
    _, hw = _hostwire_app(tmp_path, POST_ONLY, None)
    with pytest.raises(ConfigError) as caught:
        hw.start()
    assert str(caught.value) == (
        f'{tmp_path / "plugins.yaml"}: plugin "guard" (plugins[0]): rate_limit counts the '
        "requests that reach its http_pre_hook, but the plug-in does not export one."
    )
    assert hw.plugins is None


def test_the_gateway_proxy_counts_in_its_outbox_database(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    (tmp_path / "guard.wasm").write_bytes(compile_wat(PASS_HOOK))
    guard = {
        "name": "guard",
        "path": "guard.wasm",
        "rate_limit": {"requests": 2, "per_s": 3600, "key": "global"},
    }
    raw = {
        "openapi": "api.yaml",
        "app": {"base_url": "http://app.invalid/v1"},
        "webhooks": {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
        "proxy": True,
        "plugins": [guard],
    }
    config = parse_gateway_config(raw, path=tmp_path / "gateway.yaml", environ={})
    upstream = httpx.MockTransport(lambda _: httpx.Response(200, stream=httpx.ByteStream(b"{}")))
    with Gateway(config, proxy_transport=upstream) as gw, TestClient(gw.app) as client:
        assert statuses(client, 3, "/api/items") == [200, 200, 429]
        assert gw.outbox is not None
        with gw.outbox.engine.connect() as conn:  # counted in the outbox's database
            assert conn.execute(select(rate_limits.c.count)).scalar() == 3
