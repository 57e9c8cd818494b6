"""A plug-in's ``rate_limit`` holds across ``hostwire serve --workers 4`` on one PostgreSQL.

api_guard's own limit counts per instance and per process; the host-side one
counts in ``hostwire_rate_limits``, so 40 requests with one key spread over
four workers let exactly ``requests`` through.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from live_server import ROOT
from postgres import PostgresServer
from workers_kit import WORKER_HEADER, workers_server

TOKEN = "rate-limit-workers-token"
PER_S = 3600


@pytest.fixture
def pg_database(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "plugins.yaml"
    entry = {
        "name": "api-guard",
        "path": str(ROOT / "sample_plugins/api_guard/build/plugin.wasm"),
        "config": {"api_keys": "a:key-a,b:key-b,c:key-c"},  # no limit of its own
        "limits": {"timeout_ms": 20, "max_input_bytes": 1_500_000},
        "rate_limit": {"requests": 10, "per_s": PER_S, "key": "header:x-api-key"},
    }
    path.write_text(
        yaml.safe_dump({"openapi": str(ROOT / "openapi/light.yaml"), "plugins": [entry]})
    )
    return path


def _send(client: httpx.Client, key: str) -> tuple[int, str]:
    response = client.get("/lights", headers={"x-api-key": key})
    return response.status_code, response.headers[WORKER_HEADER]


def test_one_key_gets_exactly_its_limit_across_four_workers(
    pg_database: str, tmp_path: Path
) -> None:
    with workers_server(pg_database, 4, "--config", str(_config(tmp_path)), token=TOKEN) as (
        _,
        url,
    ):
        # A new connection for each request: the kernel spreads them over the workers.
        fresh = httpx.Limits(max_keepalive_connections=0)
        auth = {"authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, headers=auth, limits=fresh) as client:
            for key in ("key-a", "key-c"):  # key-c only if key-a's run crossed a window's end
                started = time.time()
                answers = [_send(client, key) for _ in range(40)]
                if started // PER_S == time.time() // PER_S:
                    break
            statuses = Counter(status for status, _ in answers)
            assert statuses == {200: 10, 429: 30}
            # The count is shared: several workers answered (the kernel need not use all 4).
            assert len({worker for _, worker in answers}) >= 2
            assert _send(client, "key-b")[0] == 200  # another key has its own count
