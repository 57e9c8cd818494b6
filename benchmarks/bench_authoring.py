"""A plug-in author's loop, timed as an author runs it (issue 16).

* **new → test**, per language: ``hostwire plugin new`` on openapi/light.yaml,
  then ``hostwire plugin test`` *cold* (nothing built: for Rust a fresh cargo
  target folder, so serde is compiled too) and *warm* (a source touched, built
  again, tests run), and the size of the scaffold's module.
* **the largest document** of tests/documents (by operations), per language:
  PDK generation (median of 3 in-process runs) and compile (C: every PDK source;
  AssemblyScript: a module using every model; Rust: ``cargo check`` of the whole
  crate), and for Rust the scaffold's cold release build and module size.

Goals: PDK generation < 2 s per language; the Rust scaffold on the largest
document builds from cold in < 60 s into < 300 KB. Run it when the machine is
idle: compile times are CPU-bound and single-threaded in places.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from hostwire import _project, load_openapi
from hostwire._pdk.c import CC_FLAGS, SOURCES
from hostwire._pdk.generate import generate
from hostwire._pdk.model import build_model

ROOT = Path(__file__).resolve().parents[1]
LIGHT = ROOT / "openapi" / "light.yaml"
DOCUMENTS = ROOT / "tests" / "documents"
NODE_MODULES = ROOT / "node_modules"
LANGS = ("c", "assemblyscript", "rust")
SOURCE = {"c": "main.c", "assemblyscript": "assembly/index.ts", "rust": "src/lib.rs"}
GEN_GOAL_S = 2.0
RUST_BUILD_GOAL_S = 60.0
RUST_SIZE_GOAL = 300 * 1024


def hostwire(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Run ``hostwire ARGS``; its wall time. A failure stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "hostwire", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"hostwire {' '.join(args)} failed in {cwd}:\n{done.stdout}\n{done.stderr}")
    return took


def new_project(folder: Path, lang: str, spec: Path, env: dict[str, str]) -> tuple[Path, float]:
    took = hostwire(["plugin", "new", "demo", "--lang", lang, "--spec", str(spec)], folder, env)
    project = folder / "demo"
    if lang == "assemblyscript":  # the repository's npm packages, not a download
        (project / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    return project, took


def author_loop(lang: str, work: Path) -> tuple[float, float, float, int]:
    """new, cold test, warm test (seconds) and the module's size (bytes)."""
    env = {**os.environ, "CARGO_TARGET_DIR": str(work / "target")}
    env.pop("RUSTC", None)
    project, new_s = new_project(work, lang, LIGHT, env)
    cold_s = hostwire(["plugin", "test", "--", "-q"], project, env)
    (project / SOURCE[lang]).touch()
    warm_s = hostwire(["plugin", "test", "--", "-q"], project, env)
    return new_s, cold_s, warm_s, (project / "build" / "plugin.wasm").stat().st_size


def largest_document() -> tuple[Path, int]:
    sizes = []
    for path in sorted(DOCUMENTS.glob("*/openapi.*")):
        sizes.append((len(build_model(load_openapi(path)).operations), path))
    count, path = max(sizes)
    return path, count


def compile_s(lang: str, pdk: Path, spec: Path, work: Path) -> float:
    start = time.perf_counter()
    if lang == "c":
        for source in SOURCES:
            command = [sys.executable, "-m", "ziglang", "cc", *CC_FLAGS.split(), "-Wall",
                       "-Werror", f"-I{pdk}", "-c", str(pdk / source), "-o",
                       str(work / f"{source}.o")]  # fmt: skip
            subprocess.run(command, check=True, capture_output=True)
    elif lang == "assemblyscript":
        sys.path.insert(0, str(ROOT / "tests"))
        kit = importlib.import_module("pdk.test_pdk_webhooks")  # the suite's asc helpers
        shutil.copytree(pdk, work / "whole" / "pdk")
        start = time.perf_counter()
        kit.asc(kit.as_project(work / "whole", spec, kit.as_everything(work / "whole" / "pdk")))
    else:
        env = {**os.environ, "CARGO_TARGET_DIR": str(work / "target"), "RUSTFLAGS": "-D warnings"}
        env.pop("RUSTC", None)
        project, _ = new_project(work, "rust", spec, env)
        shutil.rmtree(project / "pdk")
        shutil.copytree(pdk, project / "pdk")
        env, _ = _project.rust_toolchain(project, env)
        check = ["cargo", "check", "--target", "wasm32-unknown-unknown"]
        # the dependencies and the scaffold's few features first, untimed...
        subprocess.run(check, cwd=project, env=env, check=True, capture_output=True)
        start = time.perf_counter()
        # ...then the whole crate, every feature on
        everything = [*check, "--features", "hostwire-pdk/all"]
        subprocess.run(everything, cwd=project, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--langs", default=",".join(LANGS))
    args = parser.parse_args()
    langs = [lang for lang in args.langs.split(",") if lang]
    print("new -> passing plugin test, openapi/light.yaml (seconds; module bytes)")
    print(f"{'language':16}{'new':>8}{'cold':>8}{'warm':>8}{'module':>10}")
    for lang in langs:
        with TemporaryDirectory() as folder:
            new_s, cold_s, warm_s, size = author_loop(lang, Path(folder))
        print(f"{lang:16}{new_s:8.1f}{cold_s:8.1f}{warm_s:8.1f}{size:10,}")

    spec, operations = largest_document()
    document = load_openapi(spec)
    print(f"\nlargest document: {spec.parent.name} ({operations} operations)")
    print(f"{'language':16}{'generate':>10}{'compile':>10}")
    missed = []
    for lang in langs:
        with TemporaryDirectory() as folder:
            work = Path(folder)
            times = []
            for index in range(3):
                start = time.perf_counter()
                generate(document, lang, work / f"pdk{index}")
                times.append(time.perf_counter() - start)
            gen_s = statistics.median(times)
            took = compile_s(lang, work / "pdk0", spec, work)
        print(f"{lang:16}{gen_s:10.2f}{took:10.1f}")
        if gen_s >= GEN_GOAL_S:
            missed.append(f"{lang} generation {gen_s:.2f} s")
    print(f"goal PDK generation < {GEN_GOAL_S:.0f} s per language: "
          + ("goal met" if not missed else f"goal missed ({', '.join(missed)})"))  # fmt: skip

    if "rust" in langs:
        with TemporaryDirectory() as folder:
            work = Path(folder)
            env = {**os.environ, "CARGO_TARGET_DIR": str(work / "target")}
            env.pop("RUSTC", None)
            project, _ = new_project(work, "rust", spec, env)
            build_s = hostwire(["plugin", "build"], project, env)
            size = (project / "build" / "plugin.wasm").stat().st_size
        verdict = (
            "goal met" if build_s < RUST_BUILD_GOAL_S and size < RUST_SIZE_GOAL else ("goal missed")
        )
        print(
            f"\nRust scaffold on {spec.parent.name}, cold release build: {build_s:.1f} s, "
            f"{size:,} bytes (goal < {RUST_BUILD_GOAL_S:.0f} s and < 300 KB): {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
