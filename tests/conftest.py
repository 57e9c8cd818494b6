from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import wat
from hostwire import HostFunction, Limits, Plugin
from hostwire._runtime.module import to_binary
from postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
# Validated documents are remembered in a cache folder of the run's own (the
# CLI processes the tests start inherit it), never in the user's.
os.environ["HOSTWIRE_CACHE_DIR"] = tempfile.mkdtemp(prefix="hostwire-test-cache-")
atexit.register(shutil.rmtree, os.environ["HOSTWIRE_CACHE_DIR"], ignore_errors=True)


def compile_wat(text: str) -> bytes:
    return to_binary(text.encode(), "test.wat")


def echo_host_function() -> HostFunction:
    return HostFunction("host_echo", lambda context, data: data)


@pytest.fixture(scope="session")
def hostile_wasm() -> bytes:
    return compile_wat(wat.HOSTILE)


@pytest.fixture
def hostile(hostile_wasm: bytes) -> Iterator[Plugin]:
    with Plugin(
        "hostile",
        hostile_wasm,
        limits=Limits(timeout_ms=250, memory_mib=8),
        config={"greeting": "hi there"},
        host_functions=[echo_host_function()],
    ) as plugin:
        yield plugin


@pytest.fixture(scope="session")
def count_vowels_wasm() -> Path:
    path = ROOT / "sample_plugins" / "count_vowels" / "build" / "plugin.wasm"
    if not path.exists():
        pytest.fail(f"{path} is missing: run the tests with `make test`, which builds it.")
    return path


# -- databases --------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server for the session (`make test` installs Debian's package)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """The session's PostgreSQL server (its maintenance database) as a SQLAlchemy URL."""
    return postgres_server.url


DATABASES = ["sqlite-file", "sqlite-memory", "postgresql"]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for each test, on each kind the outbox supports.

    ``sqlite://`` is a new in-memory database for every engine made from it:
    share one engine (``hostwire._events.database.sync_engine``) within a test.
    A test that needs durable databases only parametrizes this fixture indirectly.
    """
    kind = request.param
    if kind == "sqlite-file":
        yield f"sqlite:///{tmp_path / 'app.db'}"
    elif kind == "sqlite-memory":
        yield "sqlite://"
    elif kind == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database()
        yield url
        server.drop_database(url)
    else:
        raise ValueError(f"database_url: unknown database kind {kind!r}, not one of {DATABASES}.")


# The PDK tests' Rust builds (tests/pdk): one cargo target folder a session.
CARGO = Path("/usr/bin/cargo")
RUSTC = Path("/usr/bin/rustc")


@pytest.fixture(scope="session")
def cargo_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment for cargo: Debian's rustc, one target folder for the whole
    session (serde is compiled once), no warnings."""
    missing = [str(p) for p in (CARGO, RUSTC) if not p.exists()]
    if missing:
        pytest.fail(
            f"Building Rust plug-ins needs Debian's Rust ({', '.join(missing)} missing): "
            "run `make plugins` as root, or `sudo apt-get install rustc cargo "
            "libstd-rust-dev-wasm32 librust-serde-json-dev librust-serde-derive-dev`."
        )
    target = tmp_path_factory.mktemp("cargo-target")
    return {
        **os.environ,
        "RUSTC": str(RUSTC),
        "CARGO_TARGET_DIR": str(target),
        "RUSTFLAGS": "-D warnings",  # generated code compiles without a warning
    }
