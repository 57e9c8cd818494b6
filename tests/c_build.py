"""Compiling C plug-ins on a generated C PDK, with zig's clang and strict warnings."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from hostwire._pdk.c import CC_FLAGS, SOURCES

STRICT = ("-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror")


def cc(*args: str) -> None:
    command = [sys.executable, "-m", "ziglang", "cc", *CC_FLAGS.split(), *STRICT, *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{shlex.join(command)}\n{result.stderr}"


def build(pdk: Path, source: str, out: Path) -> Path:
    main = out.with_suffix(".c")
    main.write_text(source, encoding="utf-8")
    cc(f"-I{pdk}", "-o", str(out), str(main), *(str(pdk / name) for name in SOURCES))
    return out
