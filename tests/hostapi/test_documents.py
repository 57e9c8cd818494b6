"""Large real OpenAPI documents (tests/documents/) load, and a document is validated
once per content: the verdict is kept in this process and in the cache folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from conftest import ROOT
from hostwire import SpecError, load_openapi
from hostwire._hostapi import speccache
from hostwire._hostapi.speccache import CACHE_DIR_ENV, ValidationCache, cache_dir, document_key

DOCUMENTS = ROOT / "tests" / "documents"
# Each document kept as test data: (operations, webhooks) hostwire finds in it.
COUNTS = {
    "box": (296, 0),
    "lago": (202, 61),
    "svix": (252, 14),
    "twilio": (197, 0),
}
SMALL = {
    "openapi": "3.1.0",
    "info": {"title": "small", "version": "1"},
    "paths": {"/a": {"get": {"operationId": "getA", "responses": {"200": {"description": "ok"}}}}},
}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ValidationCache:
    """An empty cache in a folder of the test's own, as a new process would start with."""
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    fresh = ValidationCache()
    monkeypatch.setattr(speccache, "VALIDATED", fresh)
    return fresh


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The base URIs of the documents openapi-spec-validator is asked to check."""
    calls: list[str] = []

    def counted(document: Any, base_uri: str = "") -> None:
        calls.append(base_uri)
        validate(document, base_uri=base_uri)

    monkeypatch.setattr("hostwire._hostapi.speccache.validate_spec", counted)
    return calls


def new_process(monkeypatch: pytest.MonkeyPatch) -> ValidationCache:
    """Forget what this process validated; what is on disk stays."""
    fresh = ValidationCache()
    monkeypatch.setattr(speccache, "VALIDATED", fresh)
    return fresh


def document_file(name: str) -> Path:
    found: list[Path] = [p for p in (DOCUMENTS / name).iterdir() if p.stem == "openapi"]
    (file,) = found
    return file


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_each_document_loads_with_its_operations_and_webhooks(
    name: str, cache: ValidationCache
) -> None:
    spec = load_openapi(document_file(name))
    assert (len(spec.operations), len(spec.webhooks)) == COUNTS[name]
    assert len({webhook.export for webhook in spec.webhooks.values()}) == len(spec.webhooks)


def test_every_kept_document_has_counts_a_licence_and_a_source() -> None:
    folders = sorted(p.name for p in DOCUMENTS.iterdir() if p.is_dir())
    assert folders == sorted(COUNTS)
    for folder in folders:
        assert (DOCUMENTS / folder / "LICENSE").is_file(), folder
        assert "commit" in (DOCUMENTS / folder / "SOURCE").read_text(encoding="utf-8"), folder


def test_dotted_webhook_names_become_snake_case_exports(cache: ValidationCache) -> None:
    spec = load_openapi(document_file("svix"))
    assert spec.webhooks["message.attempt.exhausted"].export == "message_attempt_exhausted"
    assert spec.webhooks["endpoint.created"].lifecycle is None


def test_a_second_load_does_not_validate_again(
    tmp_path: Path,
    cache: ValidationCache,
    validations: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = document_file("lago")
    first = load_openapi(path)
    assert validations == [path.as_uri()]
    key = document_key(first.document)
    assert key is not None
    assert key in cache
    file = cache.file(key)
    assert file is not None
    assert file.parent == tmp_path / "cache" / "openapi-valid"
    assert json.loads(file.read_text())["valid"] == key

    load_openapi(path)  # the same process remembers
    restarted = new_process(monkeypatch)
    again = load_openapi(path)  # a new process finds the verdict on disk
    assert validations == [path.as_uri()]
    assert key in restarted
    assert len(again.operations) == len(first.operations)


def test_the_same_content_elsewhere_is_the_same_verdict(
    tmp_path: Path, cache: ValidationCache, validations: list[str]
) -> None:
    load_openapi(dict(SMALL), name="a dict")
    (tmp_path / "api.yaml").write_text(yaml.safe_dump(SMALL))
    load_openapi(tmp_path / "api.yaml")
    assert len(validations) == 1


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"valid": "someone else"}', id="another-key"),
        pytest.param(b'{"valid": tru', id="torn"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"[]", id="not-an-object"),
    ],
)
def test_a_corrupted_cache_file_is_ignored_and_replaced(
    content: bytes,
    cache: ValidationCache,
    validations: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = document_key(SMALL)
    assert key is not None
    file = cache.file(key)
    assert file is not None
    file.parent.mkdir(parents=True)
    file.write_bytes(content)
    load_openapi(dict(SMALL))
    assert len(validations) == 1
    assert json.loads(file.read_text())["valid"] == key
    new_process(monkeypatch)
    load_openapi(dict(SMALL))
    assert len(validations) == 1


def test_an_unwritable_cache_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, validations: list[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocker))
    new_process(monkeypatch)
    assert len(load_openapi(dict(SMALL)).operations) == 1
    new_process(monkeypatch)
    load_openapi(dict(SMALL))
    assert len(validations) == 2  # nothing could be kept: checked each time


def test_an_invalid_document_is_refused_though_its_valid_version_is_cached(
    tmp_path: Path, cache: ValidationCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "api.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    load_openapi(path)
    broken = {**SMALL, "info": {"title": "small"}}  # no version
    path.write_text(yaml.safe_dump(broken))
    for _ in range(2):  # in this process, and in a new one
        with pytest.raises(
            SpecError, match=r'invalid OpenAPI document at info: "version" is a required property'
        ):
            load_openapi(path)
        new_process(monkeypatch)
    key = document_key(broken)
    assert key is not None
    assert key not in cache


def test_a_document_that_refers_to_another_file_is_checked_every_time(
    tmp_path: Path, cache: ValidationCache, validations: list[str]
) -> None:
    def parameter(name: str) -> None:
        (tmp_path / "parameters.yaml").write_text(
            f"P: {{name: {name}, in: path, required: true, schema: {{type: string}}}}\n"
        )

    document = {
        **SMALL,
        "paths": {
            "/a/{id}": {
                "get": {
                    "parameters": [{"$ref": "parameters.yaml#/P"}],
                    "responses": {"200": {"description": "ok"}},
                }
            }
        },
    }
    (tmp_path / "api.yaml").write_text(yaml.safe_dump(document))
    assert document_key(document) is None
    parameter("id")
    load_openapi(tmp_path / "api.yaml")
    parameter("other")  # the document is unchanged, but now invalid
    with pytest.raises(SpecError, match="Path parameter 'id' for 'get' operation"):
        load_openapi(tmp_path / "api.yaml")
    assert len(validations) == 2


def test_a_yaml_error_reads_as_the_pure_python_parser_words_it(tmp_path: Path) -> None:
    path = tmp_path / "api.yaml"
    path.write_text("openapi: 3.1.0\ninfo: *missing\n")
    with pytest.raises(SpecError) as caught:
        load_openapi(path)
    assert str(caught.value) == (
        f"{path}: invalid YAML or JSON at line 2, column 7: found undefined alias 'missing'."
    )


def test_json_numbers_are_read_as_json(tmp_path: Path, cache: ValidationCache) -> None:
    path = tmp_path / "api.json"
    path.write_text(json.dumps({**SMALL, "x-limit": 1000.0}).replace("1000.0", "1e3"))
    assert load_openapi(path).document["x-limit"] == 1000.0


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({CACHE_DIR_ENV: "/c/h"}, Path("/c/h"), id="hostwire"),
        pytest.param({"XDG_CACHE_HOME": "/x"}, Path("/x/hostwire"), id="xdg"),
        pytest.param({"XDG_CACHE_HOME": "rel"}, Path("/home/u/.cache/hostwire"), id="xdg-relative"),
        pytest.param({}, Path("/home/u/.cache/hostwire"), id="home"),
    ],
)
def test_the_cache_folder(
    env: dict[str, str], expected: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (CACHE_DIR_ENV, "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/u")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cache_dir() == expected
