"""Fixtures the PDK tests share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
