"""The commands the PDK docs show work as written.

For each language a project made by ``hostwire plugin new`` is built with the
command ``plugin new`` printed, then every ``hostwire plugin call``, ``plugin
inspect`` and ``pdk generate`` line of its README (and of the comments of its
main source) runs from the project folder, as the author would run it. Also:
the C PDK's memory example keeps a long loop of host calls flat, and names
that cannot build are refused before anything is written.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT
from hostwire import Limits
from hostwire._errors import ConfigError
from hostwire._pdk.c import CC_FLAGS, SOURCES
from hostwire._pdk.generate import generate, scaffold
from hostwire._pdk.rust import RESERVED_NAMES
from hostwire.testing import MockReply, PluginHarness

SPEC = "openapi/light.yaml"  # as a user in the repository would give it
STATES = {"status": "on", "color": "red"}
# The files of each scaffold whose commands must run (the README, and sources
# whose comments show commands).
DOCUMENTED = {
    "assemblyscript": ("README.md",),
    "c": ("README.md", "main.c"),
    "rust": ("README.md", "src/lib.rs"),
}
# A command ends at the end of its line or at the closing ` of inline code.
COMMAND = re.compile(r"\bhostwire (?:plugin (?:call|inspect)|pdk generate)\b[^`\n]*")


def commands(text: str) -> list[str]:
    return [match.group(0).strip() for match in COMMAND.finditer(text)]


def test_commands_are_found_in_markdown_and_comments() -> None:
    text = (
        "Run `hostwire plugin call a.wasm run --spec x.yaml`.\n"
        "```sh\nhostwire plugin inspect a.wasm --spec x.yaml\n```\n"
        "//   hostwire plugin call a.wasm greet --input '\"you\"'\n"
        "`hostwire pdk generate --spec x.yaml --lang c --out pdk`, or hostwire serve\n"
    )
    assert commands(text) == [
        "hostwire plugin call a.wasm run --spec x.yaml",
        "hostwire plugin inspect a.wasm --spec x.yaml",
        "hostwire plugin call a.wasm greet --input '\"you\"'",
        "hostwire pdk generate --spec x.yaml --lang c --out pdk",
    ]


@pytest.fixture(scope="module", params=sorted(DOCUMENTED))
def project(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """A new project for one language, built with the command `plugin new` printed."""
    lang: str = request.param
    folder = tmp_path_factory.mktemp(f"docs-{lang}")
    created = subprocess.run(
        [sys.executable, "-m", "hostwire", "plugin", "new", "demo", "--lang", lang,
         "--dir", str(folder), "--spec", SPEC],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    build = created.stdout.split("build it with:\n", 1)[1].splitlines()[0]  # "  cd ... && ..."
    assert build.endswith("&& hostwire plugin build"), build
    # The project's own target folder; hostwire on PATH as the README's commands expect.
    env = {k: v for k, v in os.environ.items() if k not in ("CARGO_TARGET_DIR", "RUSTC")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    built = subprocess.run(
        build.strip(), shell=True, env=env, capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip
    assert built.returncode == 0, f"{build}\n{built.stdout}\n{built.stderr}"
    return lang, folder / "demo"


def documented(lang: str, project: Path) -> Iterator[tuple[str, str]]:
    for name in DOCUMENTED[lang]:
        for command in commands((project / name).read_text(encoding="utf-8")):
            yield name, command


def test_every_documented_command_runs_as_written(project: tuple[str, Path]) -> None:
    lang, folder = project
    found = list(documented(lang, folder))
    readme = [command for name, command in found if name == "README.md"]
    for kind in ("hostwire plugin call ", "hostwire plugin inspect ", "hostwire pdk generate "):
        assert any(c.startswith(kind) for c in readme), f"the README shows no `{kind.strip()}`"
    pdk_before = {p: p.read_bytes() for p in (folder / "pdk").rglob("*") if p.is_file()}
    for name, command in found:
        words = shlex.split(command, comments=True)
        assert words[0] == "hostwire"
        ran = subprocess.run(
            [sys.executable, "-m", "hostwire", *words[1:]],
            cwd=folder, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, (
            f"{name}: `{command}` exited {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
        )
    # Regenerating pdk/ from the spec the README names gives the same PDK.
    assert {p: p.read_bytes() for p in (folder / "pdk").rglob("*") if p.is_file()} == pdk_before


# -- the C PDK's memory advice ----------------------------------------------------


def test_the_c_memory_example_keeps_many_calls_in_one_call_flat(tmp_path: Path) -> None:
    pdk = tmp_path / "pdk"
    generate(ROOT / SPEC, "c", pdk)
    blocks = re.findall(r"```c\n(.*?)```", (pdk / "README.md").read_text(encoding="utf-8"), re.S)
    loop = next(block for block in blocks if "hw_arena_release" in block)
    main = tmp_path / "main.c"
    main.write_text('#include "hostwire.h"\n\n' + loop, encoding="utf-8")
    wasm = tmp_path / "plugin.wasm"
    sources = [str(main), *(str(pdk / name) for name in SOURCES)]
    command = [sys.executable, "-m", "ziglang", "cc", *CC_FLAGS.split(), "-Wall", "-Werror",
               f"-I{pdk}", "-o", str(wasm), *sources]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    # 1000 answers of some 20 KB each (a big header) would need 20 MiB without the release.
    pad = {"x-pad": "x" * 20_000}
    with PluginHarness(wasm, spec=ROOT / SPEC, limits=Limits(memory_mib=4)) as harness:
        harness.mock("getStates", responder=lambda call: MockReply(200, STATES, pad))
        assert harness.call("many_calls") == {"answered": 1000}
        assert len(harness.calls) == 1000


# -- names a scaffold cannot use ----------------------------------------------------


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_a_rust_project_named_like_its_pdk_is_refused_up_front(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PDK crate"):
        scaffold(ROOT / SPEC, "rust", name, tmp_path / name)
    assert not (tmp_path / name).exists()
    ran = subprocess.run(
        [sys.executable, "-m", "hostwire", "plugin", "new", name, "--lang", "rust",
         "--dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ran.returncode == 2
    assert f'cannot be named "{name}"' in ran.stderr
    assert not (tmp_path / name).exists()
