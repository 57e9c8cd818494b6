"""Who may import whom, as README.md's "Architecture" and DESIGN's boundaries draw it.

Every module under platform/hostwire and platform/lightcontrol is parsed with
``ast`` (nothing is imported or run), imports inside functions and
``TYPE_CHECKING`` blocks included. Each failing test prints one line per
import that breaks its rule, naming the file, the line and what to do.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

PLATFORM = Path(__file__).resolve().parents[1] / "platform"
ROOTS = ("hostwire", "lightcontrol")

# README.md "Architecture". The leaves every layer may import; they import only
# each other.
LEAVES = frozenset(
    {"hostwire._contract", "hostwire._errors", "hostwire._text", "hostwire._document"}
)
# The top level: the public API and what wires the layers together; it may
# import any layer.
TOP_LEVEL = frozenset(
    {
        "hostwire",
        "hostwire.__main__",
        "hostwire.cli",
        "hostwire.testing",
        "hostwire._app",
        "hostwire._pluginset",
        "hostwire._reload",
        "hostwire._config",
        "hostwire._project",
        "hostwire._logformat",
    }
)
# What a part that wires the layers (like _app, but not the top level) may import.
_ABOVE_THE_LAYERS = frozenset(
    {
        "hostwire._runtime",
        "hostwire._targets",
        "hostwire._hostapi",
        "hostwire._events",
        "hostwire._hooks",
        "hostwire._config",
        "hostwire._pluginset",
    }
)
# Each layer and the layers below it that it may import (besides itself and the
# leaves), in the README's order: imports go downwards only.
LAYERS: dict[str, frozenset[str]] = {
    "hostwire._runtime": frozenset(),
    "hostwire._targets": frozenset({"hostwire._runtime"}),
    "hostwire._hostapi": frozenset({"hostwire._runtime", "hostwire._targets"}),
    "hostwire._events": frozenset({"hostwire._runtime", "hostwire._hostapi"}),
    "hostwire._hooks": frozenset(
        {"hostwire._runtime", "hostwire._targets", "hostwire._hostapi", "hostwire._events"}
    ),
    "hostwire._pdk": frozenset({"hostwire._hostapi"}),
    # Above the layers it wires, like _app: the plug-in list and set come from the top
    # level, and so do hot reloads; it serves the operators' routes as _app does.
    "hostwire._gateway": _ABOVE_THE_LAYERS | {"hostwire._reload", "hostwire._admin"},
    # The operators' routes, served by _app in front of the app: they read its state.
    "hostwire._admin": _ABOVE_THE_LAYERS,
}
# Layers only some top-level modules may import ("only the CLI imports" _pdk).
IMPORTED_ONLY_BY = {"hostwire._pdk": frozenset({"hostwire.cli"})}
# Modules a package's __init__ leaves out on purpose, and who imports them
# directly: _targets.server imports uvicorn, which only `hostwire serve` needs.
ON_DEMAND = {"hostwire._targets.server": frozenset({"hostwire.cli"})}


@dataclass(frozen=True, slots=True)
class Import:
    importer: str  # the importing module, dotted
    where: str  # "platform/<file>:<line>"
    target: str  # the module or package imported, dotted
    names: tuple[str, ...] = ()  # what `from target import ...` takes from it


@cache
def _modules() -> dict[str, Path]:
    """Every module of both packages by dotted name; a package by its own name."""
    found: dict[str, Path] = {}
    for root in ROOTS:
        for path in sorted((PLATFORM / root).rglob("*.py")):
            parts = path.relative_to(PLATFORM).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_package(name: str) -> bool:
    return _modules()[name].name == "__init__.py"


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = importer if _is_package(importer) else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _root(name: str) -> str:
    return name.partition(".")[0]


@cache
def _bound(package: str) -> frozenset[str]:
    """Names a package's __init__ binds itself: those win over its submodules'
    names (``from hostwire._pdk import generate`` is the function, not the module)."""
    names: set[str] = set()
    for node in ast.parse(_modules()[package].read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).partition(".")[0] for a in node.names}
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return frozenset(names)


@cache
def _imports() -> tuple[Import, ...]:
    """Every first-party import; ``from package import module`` counts as the module."""
    found: list[Import] = []
    for importer, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            where = f"platform/{path.relative_to(PLATFORM)}:{node.lineno}"
            if isinstance(node, ast.Import):
                found += [Import(importer, where, a.name) for a in node.names]
            else:
                source = _resolve(importer, node)
                names = []
                for alias in node.names:
                    module = f"{source}.{alias.name}"
                    if module in _modules() and alias.name not in _bound(source):
                        found.append(Import(importer, where, module))
                    else:
                        names.append(alias.name)
                if names:
                    found.append(Import(importer, where, source, tuple(names)))
    return tuple(i for i in found if _root(i.target) in ROOTS)


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _unit(module: str) -> str:
    """The layer (a subpackage of hostwire) a module belongs to, else the module itself."""
    parts = module.split(".")
    if parts[0] == "hostwire" and len(parts) > 1 and _is_package(".".join(parts[:2])):
        return ".".join(parts[:2])
    return module


def _report(violations: list[str], rule: str) -> None:
    for line in violations:
        print(line)
    if violations:
        pytest.fail(f"{len(violations)} import(s) break the rule: {rule}", pytrace=False)


def _private_module_imports() -> Iterator[str]:
    for i in _imports():
        if i.target not in _modules() or _is_package(i.target):
            continue  # a package: through its __init__, as it should be
        package = i.target.rpartition(".")[0]
        if _inside(i.importer, package) or i.importer in ON_DEMAND.get(i.target, ()):
            continue
        if any(part.startswith("_") for part in i.target.split(".")):
            yield (
                f"{i.where}: {i.importer} imports {i.target}, a private module of {package}; "
                f"import it from {package} (its __init__) instead."
            )


def test_no_module_imports_another_packages_private_module() -> None:
    _report(
        list(_private_module_imports()),
        "a package's private modules are reached only through its __init__.",
    )


def _layer_problem(i: Import) -> str | None:
    """What is wrong with one import of a hostwire module, or None."""
    if _root(i.target) == "lightcontrol":
        return "hostwire never imports the app"
    source, target = _unit(i.importer), _unit(i.target)
    if source == target:
        return None
    if source in LEAVES and target not in LEAVES:
        return f"a leaf imports only the other leaves ({', '.join(sorted(LEAVES))})"
    if source in LAYERS and target not in LEAVES | LAYERS[source]:
        allowed = ", ".join(sorted(LAYERS[source])) + " and " if LAYERS[source] else ""
        allowed += "the leaves"
        return f"README.md lets {source} import only {allowed}"
    if target in IMPORTED_ONLY_BY and source not in IMPORTED_ONLY_BY[target]:
        return f"only {', '.join(sorted(IMPORTED_ONLY_BY[target]))} may import {target}"
    return None


def _layering() -> Iterator[str]:
    for i in _imports():
        problem = _layer_problem(i) if _root(i.importer) == "hostwire" else None
        if problem is not None:
            yield f"{i.where}: {i.importer} imports {i.target}; {problem}."


def test_layers_import_downwards_only() -> None:
    _report(list(_layering()), "layers import downwards only, as README.md's Architecture says.")


def test_the_rules_place_every_part_of_hostwire() -> None:
    placed = LEAVES | TOP_LEVEL | set(LAYERS)
    unplaced = sorted({_unit(m) for m in _modules() if _root(m) == "hostwire"} - placed)
    _report(
        [
            f"{_modules()[u].relative_to(PLATFORM.parent)}: {u} is in no layer of "
            "README.md's Architecture; place it there and in this test's LAYERS, LEAVES "
            "or TOP_LEVEL."
            for u in unplaced
        ],
        "every module and package of hostwire has its place in the layering.",
    )


@cache
def _public_names() -> frozenset[str]:
    tree = ast.parse(_modules()["hostwire"].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return frozenset(ast.literal_eval(node.value))
    raise AssertionError("hostwire/__init__.py has no __all__.")


def _lightcontrol_reaches_in() -> Iterator[str]:
    for i in _imports():
        if _root(i.importer) != "lightcontrol" or _root(i.target) != "hostwire":
            continue
        if i.target != "hostwire":
            yield (
                f"{i.where}: {i.importer} imports {i.target}; lightcontrol uses only the "
                "public package: import from hostwire."
            )
            continue
        for name in i.names:
            if name != "*" and name not in _public_names():
                yield (
                    f"{i.where}: {i.importer} imports {name} from hostwire, which is not "
                    "in hostwire.__all__."
                )
    for module, path in _modules().items():
        if _root(module) != "lightcontrol":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "hostwire"
                and node.attr.startswith("_")
                and not node.attr.endswith("__")  # __version__ and the like are public
            ):
                yield (
                    f"platform/{path.relative_to(PLATFORM)}:{node.lineno}: {module} uses "
                    f"hostwire.{node.attr}; lightcontrol uses only hostwire's public names."
                )


def test_lightcontrol_imports_only_the_public_hostwire() -> None:
    _report(
        list(_lightcontrol_reaches_in()),
        "lightcontrol uses hostwire only through hostwire/__init__.py's __all__.",
    )


def test_the_checks_see_the_imports() -> None:
    """The rules above would pass on nothing: make sure the parse finds real imports."""
    pairs = {(i.importer, i.target) for i in _imports()}
    assert ("hostwire._hooks.middleware", "hostwire._targets") in pairs
    assert ("hostwire._targets.apprunner", "hostwire._targets.asgi") in pairs
    assert ("hostwire.cli", "hostwire._targets.server") in pairs
    assert any(importer.startswith("lightcontrol.") for importer, _ in pairs)
