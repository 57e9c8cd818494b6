from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import wat
from hostwire import HostFunction, Limits, Plugin
from hostwire._runtime.module import to_binary

ROOT = Path(__file__).resolve().parent.parent


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
