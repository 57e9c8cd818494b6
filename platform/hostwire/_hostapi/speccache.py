"""Validating an OpenAPI document once per content: a cache of documents found valid.

openapi-spec-validator takes seconds on a large document, and an app checks the
same document at every start. Whether a document is valid depends only on its
content when it refers to no other file, so the sha256 of its canonical JSON,
with the versions of the validating libraries, names the verdict. Valid
documents are remembered in this process and on disk (``$HOSTWIRE_CACHE_DIR``,
else ``$XDG_CACHE_HOME/hostwire``, else ``~/.cache/hostwire``), one small file
each, written atomically. Invalid ones are never remembered: they are checked
again and fail with the same error every time. A cache folder or file that
cannot be read, written or understood counts as empty; it is never an error.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from openapi_spec_validator import validate as validate_spec

CACHE_DIR_ENV = "HOSTWIRE_CACHE_DIR"
"""Names the cache folder; unset, it is ``$XDG_CACHE_HOME/hostwire`` or ``~/.cache/hostwire``."""
_FORMAT = "hostwire-valid-openapi/1"
# Whatever decides a verdict: a new version of one of these checks documents afresh.
_VALIDATORS = (
    "openapi-spec-validator",
    "openapi-schema-validator",
    "jsonschema",
    "jsonschema-path",
)
# A $ref or $dynamicRef to anything but a fragment of the document itself: the
# verdict then depends on another file too, so the document is not cached.
_OUTSIDE_REF = re.compile(r'"\$(?:ref|dynamicRef)":"(?!#)')


def cache_dir() -> Path | None:
    """hostwire's cache folder, or None when there is no home to put it in."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore a relative one
        return Path(xdg) / "hostwire"
    try:
        return Path.home() / ".cache" / "hostwire"
    except RuntimeError:  # no HOME and no password entry
        return None


@functools.cache
def _versions() -> str:
    found = []
    for name in _VALIDATORS:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name}==?")
    return " ".join(found)


def document_key(document: Mapping[str, Any]) -> str | None:
    """The sha256 naming ``document``'s verdict, or None when it cannot be cached:
    it refers to other files, or holds values JSON cannot carry (a YAML date)."""
    try:
        text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return None
    if _OUTSIDE_REF.search(text):
        return None
    digest = hashlib.sha256(f"{_FORMAT}\n{_versions()}\n".encode())
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


class ValidationCache:
    """The keys of documents found valid: in this process, and in files under
    ``folder`` (by default ``cache_dir()/openapi-valid``, looked up at each use)."""

    def __init__(self, folder: Path | None = None) -> None:
        self._folder = folder
        self._known: set[str] = set()

    def folder(self) -> Path | None:
        if self._folder is not None:
            return self._folder
        base = cache_dir()
        return base / "openapi-valid" if base is not None else None

    def file(self, key: str) -> Path | None:
        """Where the verdict for ``key`` is kept on disk, if there is a cache folder."""
        folder = self.folder()
        return folder / f"{key}.json" if folder is not None else None

    def __contains__(self, key: str) -> bool:
        if key in self._known:
            return True
        file = self.file(key)
        try:
            recorded = json.loads(file.read_bytes()) if file is not None else None
        except (OSError, ValueError):  # missing, unreadable or torn: as if absent
            return False
        if not isinstance(recorded, dict) or recorded.get("valid") != key:
            return False
        self._known.add(key)
        return True

    def add(self, key: str) -> None:
        """Remember ``key`` as valid; a folder that cannot be written is left alone."""
        self._known.add(key)
        file = self.file(key)
        if file is None:
            return
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            # Written beside its place and renamed over it: a reader sees all of it or nothing.
            handle, temporary = tempfile.mkstemp(dir=file.parent, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump({"valid": key, "validators": _versions()}, out)
                os.replace(temporary, file)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError:
            pass  # a cache is an optimisation: without it the document is checked each time


VALIDATED = ValidationCache()
"""The documents this process (and earlier ones, on disk) found valid."""


def validate_once(document: Mapping[str, Any], base_uri: str) -> None:
    """``openapi_spec_validator.validate``, skipped for a document already found valid.

    Raises what the validator raises; a document that passes is remembered.
    """
    key = document_key(document)
    if key is not None and key in VALIDATED:
        return
    validate_spec(document, base_uri=base_uri)
    if key is not None:
        VALIDATED.add(key)
