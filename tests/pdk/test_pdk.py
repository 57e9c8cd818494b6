"""The PDK generator: golden files, determinism, headers, template overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import ROOT
from hostwire import ConfigError, load_openapi
from hostwire._pdk.generate import HEADER, LANGUAGES, render, scaffold

GOLDEN = ROOT / "tests" / "golden"
DOCUMENTS = {
    "light": ROOT / "openapi" / "light.yaml",
    "awkward": ROOT / "tests" / "pdk" / "awkward.yaml",
    "webhooks": ROOT / "tests" / "pdk" / "webhooks.yaml",
}
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("document", sorted(DOCUMENTS))
@pytest.mark.parametrize("lang", LANGUAGES)
def test_generated_pdk_matches_the_golden_files(lang: str, document: str) -> None:
    """Regenerate with: UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/pdk/test_pdk.py"""
    files = render(load_openapi(DOCUMENTS[document]), lang)
    folder = GOLDEN / lang / document
    if UPDATE:
        for old in folder.rglob("*"):
            if old.is_file():
                old.unlink()
        for path, text in files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(text, encoding="utf-8")
    expected = {
        str(p.relative_to(folder)): p.read_text(encoding="utf-8")
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    assert sorted(files) == sorted(expected), "the set of generated files changed"
    for path, text in files.items():
        assert text == expected[path], f"{lang}/{document}/{path} differs from its golden file"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_output_is_deterministic_and_marked_generated(lang: str) -> None:
    spec = load_openapi(DOCUMENTS["light"])
    first, second = render(spec, lang), render(spec, lang)
    assert first == second
    for path, text in first.items():
        if not path.endswith(".json"):
            assert HEADER in text.splitlines()[0], path


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_users_templates_override_ours_file_by_file(lang: str, tmp_path: Path) -> None:
    spec = load_openapi(DOCUMENTS["light"])
    ours = render(spec, lang)
    readme = next(p for p in ours if p.endswith("README.md"))
    template = next(
        t
        for t in (ROOT / "pdk_templates" / lang).rglob("*")
        if t.is_file() and t.name.startswith("README.md")
    )
    (tmp_path / template.relative_to(ROOT / "pdk_templates" / lang)).parent.mkdir(
        parents=True, exist_ok=True
    )
    (tmp_path / template.relative_to(ROOT / "pdk_templates" / lang)).write_text(
        "Our own README for {{ pdk.title }}.\n"
    )
    theirs = render(spec, lang, user_templates=tmp_path)
    assert theirs[readme].splitlines()[1] == "Our own README for lightcontrol."
    assert {p: t for p, t in theirs.items() if p != readme} == {
        p: t for p, t in ours.items() if p != readme
    }


def test_unknown_languages_and_template_folders_are_clear_errors(tmp_path: Path) -> None:
    spec = load_openapi(DOCUMENTS["light"])
    with pytest.raises(ConfigError, match='No PDK language "cobol"'):
        render(spec, "cobol")
    with pytest.raises(ConfigError, match="no such template folder"):
        render(spec, "c", user_templates=tmp_path / "missing")


def test_scaffold_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        scaffold(DOCUMENTS["light"], "c", "taken", tmp_path / "taken")


def test_hook_shapes_have_no_stray_keys() -> None:
    """A comma in an unquoted YAML flow value splits it into a stray key."""
    from hostwire._pdk.model import HOOKS_SPEC

    document = load_openapi(HOOKS_SPEC).document
    keywords = {"type", "description", "$ref", "additionalProperties", "minimum", "maximum",
                "required", "properties"}  # fmt: skip
    for name, schema in document["components"]["schemas"].items():
        assert set(schema) <= keywords, name
        for prop, sub in (schema.get("properties") or {}).items():
            assert set(sub) <= keywords, f"{name}.{prop}"


def test_an_override_can_extend_the_builtin_template(tmp_path: Path) -> None:
    spec = load_openapi(DOCUMENTS["light"])
    ours = render(spec, "c")
    template = next(p for p in (ROOT / "pdk_templates" / "c").glob("README.md*"))
    (tmp_path / template.name).write_text('{% extends "builtin/' + template.name + '" %}\n')
    assert render(spec, "c", user_templates=tmp_path) == ours
