"""Plug-in projects outside the repository: ``hostwire.toml``, ``plugin new`` with
a spec from a path, a URL or the installed app, ``plugin build`` and ``plugin test``
in every language, and the one-line errors of each step."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hostwire import _project, cli
from lightcontrol.app import Settings, create_app
from live_server import serving

ROOT = Path(__file__).resolve().parent.parent
LIGHT = ROOT / "openapi" / "light.yaml"
NODE_MODULES = ROOT / "node_modules"


def hostwire(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hostwire", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def new(tmp_path: Path, lang: str, *spec: str) -> Path:
    created = hostwire("plugin", "new", "demo", "--lang", lang, *spec, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert "hostwire plugin test" in created.stdout
    project = tmp_path / "demo"
    if lang == "assemblyscript":  # the repository's npm packages, not a download per test
        (project / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    return project


def settings(project: Path) -> dict[str, object]:
    return tomllib.loads((project / "hostwire.toml").read_text(encoding="utf-8"))


def test_a_c_project_on_the_installed_apps_document_builds_and_its_tests_pass(
    tmp_path: Path,
) -> None:
    project = new(tmp_path, "c")  # no --spec, outside the repository: lightcontrol's document
    assert settings(project) == {
        "name": "demo",
        "language": "c",
        "spec": "openapi.json",
        "build": settings(project)["build"],
        "output": "build/plugin.wasm",
        "tests": ["test_plugin.py"],
    }
    assert (project / "openapi.json").is_file()
    tested = hostwire("plugin", "test", cwd=project / "pdk")  # the nearest hostwire.toml's
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "built" in tested.stdout
    assert "2 passed" in tested.stdout
    assert (project / "build" / "plugin.wasm").is_file()
    again = hostwire("plugin", "test", str(project), "--", "-k", "run", cwd=tmp_path)
    assert again.returncode == 0
    assert "built" not in again.stdout
    assert "1 passed, 1 deselected" in again.stdout
    (project / "main.c").touch()
    rebuilt = hostwire("plugin", "build", cwd=project)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.startswith(f"built {project / 'build' / 'plugin.wasm'} (")


def test_an_assemblyscript_project_keeps_its_spec_path_relative(tmp_path: Path) -> None:
    spec = tmp_path / "api" / "light.yaml"
    spec.parent.mkdir()
    spec.write_bytes(LIGHT.read_bytes())
    project = new(tmp_path, "assemblyscript", "--spec", "api/light.yaml")
    assert settings(project)["spec"] == "../api/light.yaml"
    tested = hostwire("plugin", "test", cwd=project)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "2 passed" in tested.stdout


def test_a_rust_project_builds_into_build_and_its_tests_pass(
    tmp_path: Path, cargo_env: dict[str, str]
) -> None:
    project = new(tmp_path, "rust", "--spec", str(LIGHT))
    env = {k: v for k, v in cargo_env.items() if k != "RUSTC"}  # hostwire picks the toolchain
    tested = hostwire("plugin", "test", cwd=project, env=env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "3 passed" in tested.stdout
    assert (project / "build" / "plugin.wasm").is_file()


def test_spec_by_url_from_a_running_app(tmp_path: Path) -> None:
    app = create_app(Settings(db_path=str(tmp_path / "light.db")))
    with serving(app) as url:
        project = new(tmp_path, "c", "--spec", f"{url}/openapi.json")
        assert settings(project)["spec"] == f"{url}/openapi.json"
        tested = hostwire("plugin", "test", cwd=project)
        assert tested.returncode == 0, tested.stdout + tested.stderr
        generated = hostwire(
            "pdk",
            "generate",
            "--lang",
            "c",
            "--out",
            "pdk2",
            "--spec",
            f"{url}/openapi.json",
            cwd=tmp_path,
        )
        assert generated.returncode == 0, generated.stderr
    assert (tmp_path / "pdk2" / "hostwire.h").is_file()
    gone = hostwire(
        "pdk",
        "generate",
        "--lang",
        "c",
        "--out",
        "pdk3",
        "--spec",
        f"{url}/openapi.json",
        cwd=tmp_path,
    )
    assert gone.returncode == 2
    assert gone.stderr.startswith(f"hostwire: error: {url}/openapi.json: cannot fetch")
    assert len(gone.stderr.splitlines()) == 1


# -- errors, in process -------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOSTWIRE_SPEC", raising=False)
    return tmp_path


def test_without_a_spec_anywhere_the_error_says_to_pass_spec(
    outside: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda **kw: [])  # no app installed
    assert cli.main(["pdk", "generate", "--lang", "c", "--out", "pdk"]) == 64
    err = capsys.readouterr().err
    assert err == (
        "hostwire: error: No OpenAPI document: pass --spec FILE or URL (an app's "
        "/openapi.json), or --app module:app, or set HOSTWIRE_SPEC.\n"
    )


def test_hostwire_spec_and_the_nearest_project_give_the_default_spec(
    outside: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOSTWIRE_SPEC", str(LIGHT))
    assert cli.main(["pdk", "generate", "--lang", "c", "--out", "pdk"]) == 0
    assert f"c PDK for {LIGHT}" in capsys.readouterr().out
    assert cli.main(["plugin", "new", "demo", "--lang", "c"]) == 0
    monkeypatch.delenv("HOSTWIRE_SPEC")
    monkeypatch.chdir(outside / "demo")
    assert cli.main(["pdk", "generate", "--lang", "rust", "--out", "rust-pdk"]) == 0
    assert f"rust PDK for {LIGHT}" in capsys.readouterr().out


def write_project(folder: Path, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "hostwire.toml").write_text(text, encoding="utf-8")
    return folder


GOOD = 'name = "x"\nlanguage = "c"\nspec = "s.yaml"\nbuild = "true"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("name = ", "not valid TOML: ", id="bad-toml"),
        pytest.param(
            GOOD + 'ouptut = "a"\n', "unknown key 'ouptut'; did you mean 'output'?", id="typo"
        ),
        pytest.param(GOOD.replace('"c"', '"go"'), "language 'go' is not one of", id="language"),
        pytest.param('name = "x"\n', "missing language, spec, build.", id="missing"),
        pytest.param(GOOD + "tests = 3\n", "tests must be a list of strings, got 3.", id="type"),
    ],
)
def test_a_bad_hostwire_toml_is_one_line_naming_the_file(
    outside: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_project(outside / "p", text)
    assert cli.main(["plugin", "build", str(project)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hostwire: error: {project.resolve() / 'hostwire.toml'}: ")
    assert message in err
    assert len(err.splitlines()) == 1


def test_a_folder_without_a_project_says_so(
    outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["plugin", "test"]) == 2
    assert "No hostwire.toml in " in capsys.readouterr().err


def test_a_failing_build_exits_1_after_the_tools_output(
    outside: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    project = write_project(
        outside / "p", GOOD.replace('"true"', '"echo compiler says no >&2; exit 3"')
    )
    assert cli.main(["plugin", "build", str(project)]) == 1
    err = capfd.readouterr().err
    assert err.splitlines()[0] == "compiler says no"
    assert err.splitlines()[1] == (
        f"hostwire: error: {project / 'hostwire.toml'}: build of x failed: `echo compiler says "
        "no >&2; exit 3` exited 3 (its output is above)."
    )


@pytest.mark.parametrize(
    ("build", "hint"),
    [
        pytest.param(
            "asc assembly/index.ts",
            "asc is not installed (asc not found): run `npm install`",
            id="asc",
        ),
        pytest.param(
            "python3 -m no_such_module_here x",
            "the Python module no_such_module_here is not installed",
            id="python-module",
        ),
        pytest.param(
            "no-such-tool -o build/plugin.wasm", "no-such-tool is not installed", id="other"
        ),
    ],
)
def test_a_missing_tool_says_how_to_get_it(
    outside: Path, build: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_project(outside / "p", GOOD.replace('"true"', f'"{build}"'))
    assert cli.main(["plugin", "build", str(project)]) == 1
    err = capsys.readouterr().err
    assert hint in err
    assert len(err.splitlines()) == 1


def test_a_build_that_writes_no_module_is_an_error(
    outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_project(outside / "p", GOOD)
    assert cli.main(["plugin", "build", str(project)]) == 1
    assert "succeeded but wrote no build/plugin.wasm" in capsys.readouterr().err


# -- which Rust toolchain builds ---------------------------------------------------


def fake_toolchain(folder: Path, *, wasm32: bool) -> Path:
    """A rustup-like bin/ folder: a cargo and a rustc whose sysroot has (or lacks)
    the wasm32 standard library."""
    sysroot = folder / "sysroot"
    (sysroot / "lib" / "rustlib" / "x86_64-unknown-linux-gnu" / "lib").mkdir(parents=True)
    if wasm32:
        target = sysroot / "lib" / "rustlib" / "wasm32-unknown-unknown" / "lib"
        target.mkdir(parents=True)
        (target / "libcore-0123.rlib").write_bytes(b"")
    bin_ = folder / "bin"
    bin_.mkdir()
    (bin_ / "rustc").write_text(f"#!/bin/sh\necho {sysroot}\n")
    (bin_ / "cargo").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("rustc", "cargo"):
        (bin_ / tool).chmod(0o755)
    return bin_


def test_a_toolchain_on_path_with_the_wasm32_target_is_used_as_it_is(tmp_path: Path) -> None:
    bin_ = fake_toolchain(tmp_path / "rustup", wasm32=True)
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "HOME": str(tmp_path)}
    chosen, which = _project.rust_toolchain(tmp_path, env)
    assert chosen == env  # no CARGO_HOME of hostwire's, no PATH change
    assert which == f"the Rust toolchain of {bin_ / 'cargo'}"


def test_without_the_wasm32_target_debians_rust_builds_offline(tmp_path: Path) -> None:
    bin_ = fake_toolchain(tmp_path / "rustup", wasm32=False)
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "HOME": str(tmp_path)}
    chosen, which = _project.rust_toolchain(tmp_path, env)
    assert which == (
        f"Debian's Rust, offline with Debian's crates ({bin_ / 'cargo'}'s rustc has no "
        "wasm32-unknown-unknown target)"
    )
    home = Path(chosen["CARGO_HOME"])
    assert chosen["PATH"].split(":")[0] == str(home / "bin")
    assert (home / "bin" / "cargo").resolve() == Path("/usr/bin/cargo")
    config = tomllib.loads((home / "config.toml").read_text(encoding="utf-8"))
    assert config["source"]["crates-io"]["replace-with"] == "debian"
    assert config["build"]["rustc"] == "/usr/bin/rustc"


def test_no_rust_toolchain_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_ = fake_toolchain(tmp_path / "rustup", wasm32=False)
    monkeypatch.setattr(_project, "_DEBIAN_CARGO", tmp_path / "no" / "cargo")
    with pytest.raises(_project.BuildError) as raised:
        _project.rust_toolchain(tmp_path, {"PATH": str(bin_), "HOME": str(tmp_path)})
    message = str(raised.value)
    assert "rustc has no wasm32-unknown-unknown target" in message
    assert "rustup target add wasm32-unknown-unknown" in message
    assert "apt-get install rustc cargo libstd-rust-dev-wasm32" in message


def test_calling_an_operation_whose_feature_is_off_names_the_feature_to_add(
    tmp_path: Path, cargo_env: dict[str, str]
) -> None:
    project = new(tmp_path, "rust", "--spec", str(LIGHT))
    source = project / "src" / "lib.rs"
    source.write_text(
        source.read_text(encoding="utf-8")
        + "\nexport!(count, |_: ()| Ok(api::list_lights().body.map(|l| l.lights.len())));\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in cargo_env.items() if k != "RUSTC"}
    built = hostwire("plugin", "build", cwd=project, env=env)
    assert built.returncode == 1
    last = built.stderr.strip().splitlines()[-1]
    assert 'add "list_lights" to the features of hostwire-pdk' in last
    assert str(project / "Cargo.toml") in last
    # Done as it says, the build works.
    manifest = project / "Cargo.toml"
    text = manifest.read_text(encoding="utf-8")
    turned_on = 'default-features = false, features = ["'
    assert turned_on in text
    manifest.write_text(text.replace(turned_on, turned_on + 'list_lights", "'))
    rebuilt = hostwire("plugin", "build", cwd=project, env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
