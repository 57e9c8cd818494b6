"""Plug-in configuration (Contract 4): a YAML or JSON file listing plug-ins.

Top-level keys are strict: hostwire's own (openapi, plugins, events) and the
sections of a Bifrost ``config.json`` (ignored) are accepted, anything else is
an error suggesting the closest key. A file whose ``$schema`` is Bifrost's is a
Bifrost file: all its other sections are Bifrost's business and ignored.
Bifrost's plug-in fields (name, enabled, path, config, version, placement,
order) are understood, and entries without a path or url (Bifrost built-ins)
are skipped with a warning. Sizes and nesting are bounded (``_document``).
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from hostwire._contract import OnError
from hostwire._document import DocumentError, dotted, json_size, parse_json, parse_yaml, read_text
from hostwire._errors import ConfigError, PluginLoadError
from hostwire._events import OnStorageError, RateLimit, check_rate_limit_key
from hostwire._hooks import HookInput, declare_hook_input
from hostwire._runtime import DOWNLOAD_TIMEOUT_S, HostFunction, Limits, Plugin, fetch_url, read_path
from hostwire._text import yaml_problem

log = logging.getLogger("hostwire.config")
_DEFAULTS = Limits()

MAX_PLUGIN_CONFIG_BYTES = 1024 * 1024
"""A plug-in's ``config`` may take at most this much as JSON, aliases expanded."""
# The top-level sections of Bifrost's config.json (https://www.getbifrost.ai/schema).
BIFROST_SECTIONS = frozenset(
    {
        "$schema",
        "auth_config",
        "client",
        "cluster_config",
        "config_store",
        "encryption_key",
        "framework",
        "governance",
        "guardrails_config",
        "logs_store",
        "mcp",
        "providers",
        "server",
        "vector_store",
        "websocket",
    }
)


class LimitsConfig(BaseModel):
    """Per-plug-in limits; every field defaults to a safe value."""

    model_config = ConfigDict(extra="forbid")

    timeout_ms: int = Field(_DEFAULTS.timeout_ms, ge=1, le=600_000)
    memory_mib: int = Field(_DEFAULTS.memory_mib, ge=2, le=4096)
    max_input_bytes: int = Field(_DEFAULTS.max_input_bytes, ge=1)
    max_output_bytes: int = Field(_DEFAULTS.max_output_bytes, ge=1)
    max_host_calls: int = Field(_DEFAULTS.max_host_calls, ge=0)
    max_instances: int = Field(_DEFAULTS.max_instances, ge=1, le=1024)
    max_host_input_bytes: int = Field(_DEFAULTS.max_host_input_bytes, ge=1)

    def to_limits(self) -> Limits:
        return Limits(**self.model_dump())


class RateLimitConfig(BaseModel):
    """A host-side rate limit on a plug-in's ``http_pre_hook``, shared by every process
    on the app's database: ``requests`` per ``key`` in each window of ``per_s`` seconds."""

    model_config = ConfigDict(extra="forbid")

    requests: int = Field(ge=1)
    per_s: float = Field(gt=0, le=366 * 86400)
    key: str = "client"  # client | global | header:<name>
    on_storage_error: OnStorageError = "allow"

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_rate_limit_key(value)

    def to_rate_limit(self) -> RateLimit:
        return RateLimit(**self.model_dump())


class HookInputConfig(BaseModel):
    """The bodies a plug-in's HTTP hooks read; hostwire leaves the others out of their
    input (``"body": ""``) and ignores what the hook answers for them. Method, path,
    query and headers always go to every hook."""

    model_config = ConfigDict(extra="forbid")

    request_body: bool = True
    response_body: bool = True

    def to_hook_input(self) -> HookInput:
        return HookInput(request_body=self.request_body, response_body=self.response_body)


class PluginConfig(BaseModel):
    """One entry of ``plugins:``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    path: str | None = None
    url: str | None = Field(None, pattern=r"^https?://")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)
    grants: list[str] = Field(default_factory=list)
    # What a failing before-event handler means: refuse the change (the safe
    # default: a guard that crashes lets nothing through) or let it go on.
    on_error: OnError = "fail_closed"
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_paths: dict[str, str] = Field(default_factory=dict)
    # Checked by the HTTP hooks before its http_pre_hook runs (it needs one).
    rate_limit: RateLimitConfig | None = None
    # What its HTTP hooks read: a guard that only checks headers skips the bodies.
    hook_input: HookInputConfig = Field(default_factory=HookInputConfig)
    # Reload the plug-in when its file changes on disk (a path: plug-in only).
    watch: bool = False
    # Bifrost's DB-backed metadata: accepted so its config.json loads, unused here.
    version: int | None = None
    placement: Literal["pre_builtin", "builtin", "post_builtin"] | None = None
    order: int | None = None
    # A url plug-in's whole download must finish within this time.
    download_timeout_s: float = Field(DOWNLOAD_TIMEOUT_S, gt=0, le=3600)
    # The file and index it was read from, for errors that come later (reading it).
    _file: Path | None = PrivateAttr(None)
    _index: int = PrivateAttr(0)

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha256_text(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(
                "must be a string of 64 hex digits, but YAML read these digits as a number; "
                'quote it (sha256: "...")'
            )
        return value

    @field_validator("config")
    @classmethod
    def _config_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json_size(value, MAX_PLUGIN_CONFIG_BYTES)
        except DocumentError as exc:
            raise ValueError(f"{dotted(exc.loc) or 'the value'} {exc.reason}") from None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> PluginConfig:
        if self.path and self.url:
            raise ValueError("give either path or url, not both")
        if self.url and not self.sha256:
            raise ValueError("a url plug-in needs sha256 (the hex digest of the .wasm file)")
        if self.watch and not self.path:
            raise ValueError("watch needs a path: plug-in (a file on disk to watch)")
        return self

    @property
    def is_wasm(self) -> bool:
        return bool(self.path or self.url)

    def read(self, base_dir: Path) -> bytes:
        """The plug-in's binary module, fetched or read and hash-checked.

        A missing or unreadable file, a failed download or a wrong hash is a
        ``ConfigError`` naming the configuration file, plug-in and field.
        """
        field = "url" if self.url else "path"
        try:
            if self.url:
                return fetch_url(
                    self.name, self.url, self.sha256, timeout_s=self.download_timeout_s
                )
            if not self.path:
                raise ConfigError(f"{self._where()}: it has neither path nor url.")
            return read_path(self.name, base_dir / self.path, self.sha256)
        except PluginLoadError as exc:
            raise self._config_error(exc, field) from exc

    def load(
        self,
        base_dir: Path,
        host_functions: Iterable[HostFunction] = (),
        *,
        wasm: bytes | None = None,
    ) -> Plugin:
        """Read, verify, compile and return the plug-in.

        ``wasm`` is a module given instead of the configured file (a hot reload):
        it gets the same checks. A plug-in that cannot be loaded is a
        ``ConfigError`` naming the file it is configured in: the configuration
        cannot start as written.
        """
        if wasm is None:
            wasm = self.read(base_dir)
        try:
            plugin = Plugin(
                self.name,
                wasm,
                limits=self.limits.to_limits(),
                config=self.config,
                host_functions=host_functions,
                allowed_hosts=self.allowed_hosts,
                allowed_paths=self.allowed_paths,
            )
        except PluginLoadError as exc:
            raise self._config_error(exc, None) from exc
        declare_hook_input(plugin, self.hook_input.to_hook_input())
        return plugin

    def error(self, reason: str) -> ConfigError:
        """A ``ConfigError`` about this plug-in: where it is configured, then ``reason``."""
        return ConfigError(
            f"{self._where()}: {reason}", path=str(self._file) if self._file is not None else None
        )

    def _where(self) -> str:
        if self._file is None:
            return f'plugin "{self.name}"'
        return f'{self._file}: plugin "{self.name}" (plugins[{self._index}])'

    def _config_error(self, exc: PluginLoadError, field: str | None) -> ConfigError:
        # The runtime's message starts with the plug-in's name, which _where() says already.
        reason = str(exc).removeprefix(f'Plug-in "{self.name}"').lstrip(": ")
        where = f"{self._where()}: {field}" if field else self._where()
        return ConfigError(
            f"{where}: {reason}", path=str(self._file) if self._file is not None else None
        )


class EventsConfig(BaseModel):
    """How after-events are delivered from the outbox."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(8, ge=1, le=1000)
    backoff_s: float = Field(0.5, gt=0, le=3600)
    max_backoff_s: float = Field(300.0, gt=0, le=86400)
    poll_s: float = Field(1.0, gt=0, le=3600)
    retain_s: float = Field(7 * 86400, ge=0)
    max_depth: int = Field(8, ge=1, le=64)
    concurrency: int = Field(4, ge=1, le=64)  # deliveries in flight per plug-in, one per record
    grace_s: float = Field(5.0, ge=0, le=600)  # at shutdown, for deliveries in flight
    warn_lag_s: float = Field(60.0, gt=0)  # warn when the oldest pending delivery is older


class AdminConfig(BaseModel):
    """Where the admin token is (the console, ``/metrics``, the plug-in API): an
    environment variable or a file (a mounted secret), never the configuration
    file itself, which is read by more people and tools than the token should be."""

    model_config = ConfigDict(extra="forbid")

    token_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    token_file: str | None = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _no_token_here(cls, data: Any) -> Any:
        if isinstance(data, dict) and "token" in data:
            raise ValueError(
                "the admin token does not go in the configuration file; name the "
                "environment variable that holds it (token_env) or its file (token_file)"
            )
        return data

    @model_validator(mode="after")
    def _one_source(self) -> AdminConfig:
        if self.token_env is not None and self.token_file is not None:
            raise ValueError("give token_env or token_file, not both")
        return self


class HostwireConfig(BaseModel):
    """A whole configuration file. ``base_dir`` resolves relative paths."""

    model_config = ConfigDict(extra="ignore")

    openapi: str | None = None
    plugins: list[PluginConfig] = Field(default_factory=list)
    events: EventsConfig = Field(default_factory=EventsConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _unique_names(self) -> HostwireConfig:
        seen: set[str] = set()
        for plugin in self.plugins:
            if plugin.name in seen:
                raise ValueError(f'two plug-ins are named "{plugin.name}"')
            seen.add(plugin.name)
        return self

    @property
    def enabled_plugins(self) -> list[PluginConfig]:
        """Enabled WebAssembly plug-ins, in the file's order."""
        result = []
        for plugin in self.plugins:
            if not plugin.enabled:
                continue
            if not plugin.is_wasm:
                log.warning(
                    'Skipping plug-in "%s": it has no path or url (a Bifrost built-in?).',
                    plugin.name,
                )
                continue
            result.append(plugin)
        return result


def _describe(path: Path, raw: Any, loc: tuple[int | str, ...]) -> str:
    where = ""
    fields = list(loc)
    if len(fields) >= 2 and fields[0] == "plugins" and isinstance(fields[1], int):
        index = fields[1]
        name = None
        if isinstance(raw, dict) and isinstance(raw.get("plugins"), list):
            entries = raw["plugins"]
            if index < len(entries) and isinstance(entries[index], dict):
                name = entries[index].get("name")
        where = f'plugin "{name}" (plugins[{index}])' if name else f"plugins[{index}]"
        fields = fields[2:]
    field = dotted(tuple(fields))
    return ": ".join(part for part in (str(path), where, field) if part)


def _check_keys(raw: dict[str, Any], path: Path) -> None:
    schema = raw.get("$schema")
    if isinstance(schema, str) and "getbifrost" in schema:
        return  # a Bifrost config.json: its sections are Bifrost's to check
    known = {name for name in HostwireConfig.model_fields if name != "base_dir"}
    for key in raw:
        if key in known or key in BIFROST_SECTIONS:
            continue
        raise ConfigError(
            f'{path}: unknown top-level key "{key}"{_suggest(str(key), known)}.', path=str(path)
        )


def _suggest(key: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(names), n=1)
    if close:
        return f' (did you mean "{close[0]}"?)'
    return f"; the keys are {', '.join(sorted(names))}"


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        loc = error["loc"]
        model: type[BaseModel] = PluginConfig
        if loc[0] == "events":
            model = EventsConfig
        elif "limits" in loc[:-1]:
            model = LimitsConfig
        elif "rate_limit" in loc[:-1]:
            model = RateLimitConfig
        return f"unknown key{_suggest(str(loc[-1]), model.model_fields)}"
    message: str = error["msg"]
    return message.removeprefix("Value error, ")


def parse_config(raw: Any, *, path: Path) -> HostwireConfig:
    """Validate an already-parsed document; errors name file, plug-in and field."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping with a plugins list, "
            f"not {type(raw).__name__}.",
            path=str(path),
        )
    _check_keys(raw, path)
    try:
        config = HostwireConfig.model_validate(raw)
    except ValidationError as exc:
        # An unknown key is most likely a misspelt one, the cause of a "missing" beside it.
        first = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        extra = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise ConfigError(
            f"{_describe(path, raw, tuple(first['loc']))}: {_message(first)}{extra}",
            path=str(path),
        ) from None  # pydantic's error quotes the input, secrets included: the line says all
    config.base_dir = path.parent
    for index, plugin in enumerate(config.plugins):
        plugin._file = path
        plugin._index = index
    return config


def load_config(path: str | Path) -> HostwireConfig:
    """Read a YAML or JSON plug-in configuration file.

    The file may be at most 4 MiB, nest at most 64 levels, and expand (YAML
    aliases) to at most 500,000 values; each plug-in's ``config`` at most
    1 MiB as JSON.
    """
    path = Path(path)
    return parse_config(read_config_document(path), path=path)


def read_config_document(path: Path, kind: str = "configuration file") -> Any:
    """A configuration file's parsed YAML (or JSON when it ends in .json), bounded as
    ``load_config`` says; every failure is a one-line ``ConfigError`` naming ``kind``."""
    try:
        text = read_text(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such {kind}.", path=str(path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}.", path=str(path)) from exc
    except DocumentError as exc:
        raise ConfigError(f"{path}: {exc.reason}.", path=str(path)) from exc
    try:
        raw = parse_json(text) if path.suffix == ".json" else parse_yaml(text)
    except DocumentError as exc:
        raise ConfigError(f"{path}: {exc.reason}.", path=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.",
            path=str(path),
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML{yaml_problem(exc)}.", path=str(path)) from exc
    return raw
