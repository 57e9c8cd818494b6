"""``gateway.yaml``: the one file that configures ``hostwire gateway``.

Keys are strict at every level (an unknown one is an error suggesting the
closest); ``${NAME}`` in any string is replaced by the environment variable
``NAME`` (an unset one is an error naming it; ``$${`` writes a literal ``${``),
so secrets stay out of the file. Relative paths (the document, plug-ins, an
SQLite database) are relative to the file. ``plugins``, ``events`` and
``admin`` are exactly ``plugins.yaml``'s.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hostwire._config import (
    AdminConfig,
    EventsConfig,
    HostwireConfig,
    PluginConfig,
    read_config_document,
)
from hostwire._document import dotted
from hostwire._errors import ConfigError
from hostwire._events import is_url
from hostwire._gateway.signature import check_secret

DEFAULT_PORT = 8600
DEFAULT_DATABASE = "gateway.db"
# Where the id of the object an event is about may be, tried in order; {name} is
# the body's top-level string property of that name (Lago: object_type).
DEFAULT_SUBJECT = ("/data/id", "/id", "/{object_type}/id")
_ENV = re.compile(r"\$(\$?)\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _pointer(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"must be a JSON pointer starting with / (e.g. /type), not {value!r}")
    return value


class AppConfig(BaseModel):
    """The app whose API the plug-ins call."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    # Sent with every host call (the app's credentials); plug-ins cannot see or override them.
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(10.0, gt=0, le=600)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"is not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
            raise ValueError(f"must be http(s)://host[:port][/prefix], not {value!r}")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not an HTTP header name")
            if any(c in text for c in "\r\n\0"):
                raise ValueError(f"the value of {name} holds a line break or NUL")
        return value


class WebhooksConfig(BaseModel):
    """The one route the app posts its signed webhooks to."""

    model_config = ConfigDict(extra="forbid")

    path: str = "/webhooks"
    secret: str
    # The library's window is 5 minutes either way; this narrows it.
    tolerance_s: float = Field(300.0, gt=0, le=300)
    event_type: str = "/type"
    subject: list[str] = Field(default_factory=lambda: list(DEFAULT_SUBJECT))
    max_body_bytes: int = Field(1024 * 1024, ge=1, le=64 * 1024 * 1024)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        taken = ("/api", "/healthz", "/metrics", "/hostwire")  # the gateway's own paths
        under = any(value == t or value.startswith(t + "/") for t in taken)
        if not value.startswith("/") or value.rstrip("/") in ("", *taken) or under:
            raise ValueError(
                "must be a path such as /webhooks, outside /api, /healthz, /metrics and "
                f"/hostwire: {value!r}"
            )
        return value.rstrip("/")

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        check_secret(value)
        return value

    @field_validator("event_type")
    @classmethod
    def _event_type(cls, value: str) -> str:
        return _pointer(value)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: list[str]) -> list[str]:
        return [_pointer(v) for v in value]


class ListenConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)


class GatewayConfig(BaseModel):
    """A whole ``gateway.yaml``. ``base_dir`` resolves relative paths."""

    model_config = ConfigDict(extra="forbid")

    openapi: str
    app: AppConfig
    webhooks: WebhooksConfig
    database: str | None = None
    proxy: bool = False
    listen: ListenConfig = Field(default_factory=ListenConfig)
    plugins: list[PluginConfig] = Field(default_factory=list)
    events: EventsConfig = Field(default_factory=EventsConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    base_dir: Path = Field(default=Path("."), exclude=True)
    source: Path | None = Field(default=None, exclude=True)

    def openapi_source(self) -> str | Path:
        """The app's document: a URL as written, a path relative to the file."""
        if self.openapi.startswith(("http://", "https://")):
            return self.openapi
        return self.base_dir / self.openapi

    def database_url(self) -> str:
        """The outbox's database: a URL, with a relative SQLite file made relative to the file."""
        given = self.database
        if given is None:
            return f"sqlite:///{self.base_dir / DEFAULT_DATABASE}"
        if given.startswith("sqlite:///") and not given.startswith("sqlite:////"):
            name = given.removeprefix("sqlite:///")
            if name and name != ":memory:" and not name.startswith("file:"):
                return f"sqlite:///{self.base_dir / name}"
            return given
        if is_url(given):
            return given
        return f"sqlite:///{self.base_dir / given}"

    def plugin_config(self) -> HostwireConfig:
        """The plug-ins and events part, as ``plugins.yaml`` would give them."""
        config = HostwireConfig(
            openapi=self.openapi,
            plugins=self.plugins,
            events=self.events,
            admin=self.admin,
            base_dir=self.base_dir,
        )
        for index, plugin in enumerate(config.plugins):
            plugin._file = self.source
            plugin._index = index
        return config


# -- ${ENV} ---------------------------------------------------------------------


def substitute(raw: Any, environ: typing.Mapping[str, str], loc: tuple[Any, ...] = ()) -> Any:
    """``raw`` with ``${NAME}`` in its strings replaced; ``LookupError`` names what is unset."""
    if isinstance(raw, dict):
        return {k: substitute(v, environ, (*loc, k)) for k, v in raw.items()}
    if isinstance(raw, list):
        return [substitute(v, environ, (*loc, i)) for i, v in enumerate(raw)]
    if not isinstance(raw, str):
        return raw

    def value(match: re.Match[str]) -> str:
        if match[1]:
            return "${" + match[2] + "}"  # $${X} is the literal ${X}
        name = match[2]
        if not _ENV_NAME.match(name):
            raise LookupError(f"{dotted(loc)}: ${{{name}}} is not a variable name")
        if name not in environ:
            raise LookupError(f"{dotted(loc)}: the environment variable {name} is not set")
        return environ[name]

    return _ENV.sub(value, raw)


# -- errors -----------------------------------------------------------------------


def _model_at(loc: Iterable[Any]) -> type[BaseModel] | None:
    """The model that holds the last key of ``loc`` (list indices skipped)."""
    model: type[BaseModel] = GatewayConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        inner = _model_of(field.annotation)
        if inner is None:
            return None
        model = inner
    return model


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _suggest(key: str, names: Iterable[str]) -> str:
    known = sorted(n for n in names if n not in ("base_dir", "source"))
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f' (did you mean "{close[0]}"?)'
    return f"; the keys are {', '.join(known)}"


def _where(raw: Any, loc: tuple[Any, ...]) -> str:
    """``plugin "x" (plugins[0]): limits.timeout_ms`` or ``webhooks.secret``."""
    parts = list(loc)
    prefix = ""
    if len(parts) >= 2 and parts[0] == "plugins" and isinstance(parts[1], int):
        entries = raw.get("plugins") if isinstance(raw, dict) else None
        entry = entries[parts[1]] if isinstance(entries, list) and parts[1] < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        prefix = f'plugin "{name}" (plugins[{parts[1]}])' if name else f"plugins[{parts[1]}]"
        parts = parts[2:]
    return ": ".join(p for p in (prefix, dotted(tuple(parts))) if p)


def _message(error: Any) -> str:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        names = model.model_fields if model is not None else ()
        return f"unknown key{_suggest(str(loc[-1]), names)}"
    if error["type"] == "missing":
        return "is required"
    message: str = error["msg"]
    return message.removeprefix("Value error, ")


def parse_gateway_config(
    raw: Any, *, path: Path, environ: typing.Mapping[str, str] | None = None
) -> GatewayConfig:
    """Validate a parsed ``gateway.yaml``; every error is one line naming file and key."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping (openapi, app, webhooks, plugins...), "
            f"not {type(raw).__name__}.",
            path=str(path),
        )
    try:
        raw = substitute(raw, os.environ if environ is None else environ)
    except LookupError as exc:
        raise ConfigError(f"{path}: {exc}.", path=str(path)) from None
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        # An unknown key is most likely a misspelt one, the cause of a "missing" beside it.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        where = _where(raw, tuple(first["loc"]))
        extra = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise ConfigError(
            f"{path}: {where}: {_message(first)}{extra}.".replace("..", "."), path=str(path)
        ) from None
    config.base_dir = path.resolve().parent
    config.source = path
    return config


def load_gateway_config(
    path: str | Path, *, environ: typing.Mapping[str, str] | None = None
) -> GatewayConfig:
    """Read ``gateway.yaml`` (YAML, or JSON when it ends in .json), bounded as plugins.yaml is."""
    path = Path(path)
    raw = read_config_document(path, "gateway configuration file")
    return parse_gateway_config(raw, path=path, environ=environ)
