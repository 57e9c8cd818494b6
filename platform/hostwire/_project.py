"""A plug-in project: its ``hostwire.toml``, ``hostwire plugin build`` and ``plugin test``.

``hostwire plugin new`` writes the file; every language builds the same way:
the ``build`` command runs in a shell in the project folder, with hostwire's
Python and the project's ``node_modules/.bin`` first on ``PATH``, and leaves the
module at ``output`` (``build/plugin.wasm``). ``plugin test`` builds when a
source is newer than the output, then runs pytest on ``tests``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostwire._errors import ConfigError, HostwireError

FILE = "hostwire.toml"
OUTPUT = "build/plugin.wasm"
_KEYS = {"name": str, "language": str, "spec": str, "build": str, "output": str, "tests": list}
_REQUIRED = ("name", "language", "spec", "build")
# Not sources: what builds and tests write, and what tools install.
_NOT_SOURCES = frozenset(
    {"build", "target", "node_modules", ".git", "__pycache__", ".pytest_cache", ".venv"}
)
# How to get each tool a scaffold's build command runs (one line each).
_GET_TOOL = {
    "asc": "run `npm install` in the project (its package.json lists assemblyscript)",
    "npm": "install Node.js and npm (Debian: apt-get install nodejs npm)",
    "npx": "install Node.js and npm (Debian: apt-get install nodejs npm)",
    "cargo": "install Rust with the wasm32-unknown-unknown target (rustup target add "
    "wasm32-unknown-unknown), or Debian's: apt-get install rustc cargo "
    "libstd-rust-dev-wasm32 librust-serde-json-dev librust-serde-derive-dev",
    "ziglang": f"install zig's clang: {sys.executable} -m pip install ziglang",
    "make": "install make (Debian: apt-get install make)",
}
# cargo names its output itself (stable cargo has no --out-dir): where it leaves it.
WASM_TARGET = "wasm32-unknown-unknown"
_CARGO_MODULE = f"{WASM_TARGET}/release/plugin.wasm"
# Debian's Rust: its compiler, its wasm32 standard library, its crates (offline).
_DEBIAN_CARGO = Path("/usr/bin/cargo")
_DEBIAN_RUSTC = Path("/usr/bin/rustc")
_DEBIAN_CRATES = Path("/usr/share/cargo/registry")


class BuildError(HostwireError):
    """A project's build command failed, or left no module (exit 1)."""


@dataclass(frozen=True, slots=True)
class Project:
    """One plug-in project, as its ``hostwire.toml`` describes it."""

    root: Path
    name: str
    language: str
    spec: str  # a path relative to root, or an http(s) URL
    build: str
    output: str = OUTPUT
    tests: tuple[str, ...] = ()

    @property
    def file(self) -> Path:
        return self.root / FILE

    @property
    def module(self) -> Path:
        return self.root / self.output

    @property
    def spec_source(self) -> str:
        """The spec to load: the URL, or the path resolved from the project folder."""
        return self.spec if is_url(self.spec) else str(self.root / self.spec)


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def find(start: str | Path | None = None) -> Path:
    """The folder of the nearest ``hostwire.toml``: ``start`` or a parent of it."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / FILE).is_file():
            return folder
    raise ConfigError(
        f"No {FILE} in {here} or a folder above it: run this in a plug-in project "
        "(hostwire plugin new creates one) or give its folder.",
        path=str(here),
    )


def load(folder: str | Path, *, languages: tuple[str, ...]) -> Project:
    """Read and check ``folder/hostwire.toml``: every error names the file."""
    root = Path(folder).resolve()
    path = root / FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read it: {exc.strerror or exc}.", path=str(path)
        ) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}.", path=str(path)) from exc
    _check(path, data, languages)
    tests = tuple(data.get("tests", ()))
    output = data.get("output", OUTPUT)
    if Path(output).is_absolute() or ".." in Path(output).parts:
        raise ConfigError(f"{path}: output must be a path inside the project, got {output!r}.")
    return Project(root, data["name"], data["language"], data["spec"], data["build"], output, tests)


def _check(path: Path, data: dict[str, Any], languages: tuple[str, ...]) -> None:
    for key, value in data.items():
        if key not in _KEYS:
            close = difflib.get_close_matches(key, list(_KEYS), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"keys: {', '.join(_KEYS)}."
            raise ConfigError(f"{path}: unknown key {key!r}; {hint}", path=str(path))
        if not isinstance(value, _KEYS[key]) or (
            key == "tests" and not all(isinstance(t, str) for t in value)
        ):
            kind = "a list of strings" if key == "tests" else "a string"
            raise ConfigError(f"{path}: {key} must be {kind}, got {value!r}.", path=str(path))
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(missing)}.", path=str(path))
    if data["language"] not in languages:
        raise ConfigError(
            f"{path}: language {data['language']!r} is not one of {', '.join(languages)}.",
            path=str(path),
        )


def write(project: Project) -> Path:
    """Write ``project``'s ``hostwire.toml`` (TOML strings are JSON strings)."""
    lines = [
        "# A hostwire plug-in project: `hostwire plugin build` runs `build` here and leaves",
        "# the module at `output`; `hostwire plugin test` builds when needed, then runs pytest",
        "# on `tests`. `spec` is the app's OpenAPI document (a path from here, or a URL).",
        *(
            f"{key} = {json.dumps(value, ensure_ascii=False)}"
            for key, value in (
                ("name", project.name),
                ("language", project.language),
                ("spec", project.spec),
                ("build", project.build),
                ("output", project.output),
            )
        ),
    ]
    if project.tests:
        lines.append(f"tests = {json.dumps(list(project.tests))}")
    project.file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return project.file


def relative_spec(spec: str, root: Path) -> str:
    """``spec`` as ``hostwire.toml`` keeps it: a URL as it is, a path relative to the
    project when they share more than the file system's root, else absolute."""
    if is_url(spec):
        return spec
    path = Path(spec).resolve()
    common = Path(os.path.commonpath([path, root.resolve()]))
    if common == Path(common.anchor):
        return path.as_posix()
    return Path(os.path.relpath(path, root.resolve())).as_posix()


def _environment(project: Project) -> dict[str, str]:
    folders = [str(Path(sys.executable).parent), str(project.root / "node_modules" / ".bin")]
    return {**os.environ, "PATH": os.pathsep.join([*folders, os.environ.get("PATH", "")])}


def _missing_tool(project: Project, env: dict[str, str]) -> str | None:
    """Why the build command's program cannot run, or None."""
    words = shlex.split(project.build.split("&&")[0])
    if not words:
        raise ConfigError(f"{project.file}: build is empty.", path=str(project.file))
    program = words[0]
    found = shutil.which(program, path=env["PATH"])
    if found is None:
        tool = Path(program).name
        how = _GET_TOOL.get(tool, f"install it, or change build in {project.file}")
        return f"{tool} is not installed ({program} not found): {how}."
    if Path(program).name.startswith("python") and words[1:2] == ["-m"] and len(words) > 2:
        check = [
            found,
            "-c",
            f"import importlib.util as u; exit(u.find_spec({words[2]!r}) is None)",
        ]
        if subprocess.run(check, env=env, capture_output=True, check=False).returncode != 0:
            how = _GET_TOOL.get(words[2], f"{found} -m pip install {words[2]}")
            return f"the Python module {words[2]} is not installed: {how}."
    return None


def _has_wasm_target(rustc: str, cwd: Path, env: dict[str, str]) -> bool:
    """Whether ``rustc`` (run in ``cwd``, where rustup's overrides apply) has the
    standard library for wasm32-unknown-unknown."""
    try:
        done = subprocess.run(
            [rustc, "--print", "sysroot"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if done.returncode != 0 or not done.stdout.strip():
        return False
    library = Path(done.stdout.strip()) / "lib" / "rustlib" / WASM_TARGET / "lib"
    return library.is_dir() and any(library.glob("libcore-*.rlib"))


def _debian_cargo_home() -> Path:
    """A CARGO_HOME whose config builds with Debian's rustc and crates, offline, and
    whose bin/ puts Debian's cargo and rustc first (they go together: rustup's cargo
    is newer than Debian's rustc understands)."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = home / "hostwire" / "cargo-debian"
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    config = (
        "# Written by hostwire plugin build: Debian's Rust and crates, offline.\n"
        "[source.crates-io]\n"
        'replace-with = "debian"\n\n'
        "[source.debian]\n"
        f"directory = {json.dumps(str(_DEBIAN_CRATES))}\n\n"
        "[net]\n"
        "offline = true\n\n"
        "[build]\n"
        f"rustc = {json.dumps(str(_DEBIAN_RUSTC))}\n"
    )
    path = folder / "config.toml"
    if not path.is_file() or path.read_text(encoding="utf-8") != config:
        path.write_text(config, encoding="utf-8")
    for tool in (_DEBIAN_CARGO, _DEBIAN_RUSTC):
        link = folder / "bin" / tool.name
        if not link.is_symlink() or os.readlink(link) != str(tool):
            link.unlink(missing_ok=True)
            link.symlink_to(tool)
    return folder


def rust_toolchain(root: Path, env: dict[str, str]) -> tuple[dict[str, str], str]:
    """The environment a Rust project builds in, and which toolchain that is (one
    line). The ``cargo`` on PATH (rustup's, say) when its rustc has the wasm32
    target; else Debian's Rust with its crates, offline (a CARGO_HOME of its own,
    so no ``.cargo/config.toml`` in the project); else a BuildError saying how to
    get either."""
    cargo = shutil.which("cargo", path=env["PATH"])
    if cargo is not None and Path(cargo).resolve() != _DEBIAN_CARGO:
        rustc = Path(cargo).with_name("rustc")
        if rustc.is_file() and _has_wasm_target(str(rustc), root, env):
            return env, f"the Rust toolchain of {cargo}"
    debian = _DEBIAN_CARGO.is_file() and _has_wasm_target(str(_DEBIAN_RUSTC), root, env)
    if debian and _DEBIAN_CRATES.is_dir():
        home = _debian_cargo_home()
        changed = {
            **env,
            "CARGO_HOME": str(home),
            "PATH": os.pathsep.join([str(home / "bin"), env["PATH"]]),
        }
        changed.pop("RUSTC", None)
        why = "" if cargo is None else f" ({cargo}'s rustc has no {WASM_TARGET} target)"
        return changed, f"Debian's Rust, offline with Debian's crates{why}"
    found = f"{cargo}'s rustc has no {WASM_TARGET} target" if cargo else "no cargo"
    raise BuildError(f"cannot build a Rust plug-in: {found}; {_GET_TOOL['cargo']}.")


def build(project: Project) -> Path:
    """Run the build command; the tool's output goes to stderr. Returns the module."""
    env = _environment(project)
    if project.language == "rust" and project.build.split()[:1] == ["cargo"]:
        env, toolchain = rust_toolchain(project.root, env)
        print(f"hostwire: building {project.name} with {toolchain}", file=sys.stderr, flush=True)
    if (
        project.language == "assemblyscript"
        and (project.root / "package.json").is_file()
        and not (project.root / "node_modules").exists()
        and shutil.which("asc", path=env["PATH"]) is None
        and shutil.which("npm", path=env["PATH"]) is not None
    ):
        _run(project, "npm install --no-audit --no-fund", env)  # fetches asc, as npm would
    missing = _missing_tool(project, env)
    if missing is not None:
        raise BuildError(f"{project.file}: cannot build {project.name}: {missing}")
    project.module.parent.mkdir(parents=True, exist_ok=True)
    _run(project, project.build, env)
    if project.language == "rust":
        target = Path(env.get("CARGO_TARGET_DIR") or project.root / "target")
        built = (target if target.is_absolute() else project.root / target) / _CARGO_MODULE
        if built.is_file():
            shutil.copyfile(built, project.module)
    if not project.module.is_file():
        raise BuildError(
            f"{project.file}: build `{project.build}` succeeded but wrote no {project.output}."
        )
    return project.module


def _run(project: Project, command: str, env: dict[str, str]) -> None:
    """Run ``command``; its output goes to stderr as it comes (the tail is kept, to
    explain a failure)."""
    tail: list[str] = []
    with subprocess.Popen(
        command,
        shell=True,
        cwd=project.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stderr.write(line)
            tail.append(line)
            del tail[:-400]
        returncode = process.wait()
    sys.stderr.flush()
    if returncode != 0:
        hint = _rust_feature_hint(project, "".join(tail)) if project.language == "rust" else ""
        raise BuildError(
            f"{project.file}: build of {project.name} failed: `{command}` exited "
            f"{returncode} (its output is above).{hint}"
        )


# rustc's words for a name it cannot find: a function of api, or an event's macro
_NOT_FOUND = re.compile(
    r"cannot find (?:function `(?P<function>\w+)` in module `api`|macro `(?P<macro>\w+)`)"
)


def _rust_feature_hint(project: Project, output: str) -> str:
    """When the build failed on an operation or event whose PDK feature is off: which
    features to turn on in Cargo.toml (the PDK's Cargo.toml lists them)."""
    try:
        features = tomllib.loads((project.root / "pdk" / "Cargo.toml").read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return ""
    known = features.get("features", {})
    missing = []
    for match in _NOT_FOUND.finditer(output):
        name = match.group("function") or match.group("macro")
        if name in known and name not in missing:
            missing.append(name)
    if not missing:
        return ""
    names = ", ".join(f'"{name}"' for name in missing)
    return (
        f" The PDK compiles only the operations and events whose features are on: add "
        f"{names} to the features of hostwire-pdk in {project.root / 'Cargo.toml'}."
    )


def stale(project: Project) -> bool:
    """Whether the module is missing or older than a source file of the project."""
    if not project.module.is_file():
        return True
    built = project.module.stat().st_mtime
    return any(path.stat().st_mtime > built for path in _sources(project.root))


def _sources(folder: Path) -> list[Path]:
    found = []
    for entry in folder.iterdir():
        if entry.is_dir():
            if entry.name not in _NOT_SOURCES:
                found += _sources(entry)
        elif entry.suffix != ".pyc":
            found.append(entry)
    return found


def test(project: Project, extra: list[str]) -> int:
    """Run pytest on the project's tests (hostwire's Python, in the project); its exit code."""
    tests = list(project.tests) or sorted(p.name for p in project.root.glob("test_*.py"))
    if not tests:
        raise ConfigError(
            f'{project.file}: no tests: add tests = ["test_plugin.py"] or a test_*.py file.',
            path=str(project.file),
        )
    for name in tests:
        if not (project.root / name).exists():
            raise ConfigError(
                f"{project.file}: test {name!r} does not exist.", path=str(project.file)
            )
    command = [sys.executable, "-m", "pytest", "--rootdir", str(project.root), *tests, *extra]
    return subprocess.run(
        command, cwd=project.root, env=_environment(project), check=False
    ).returncode
