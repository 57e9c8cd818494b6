"""Where the admin token comes from, and the tokens refused as one.

In order: ``Hostwire(admin_token=)``; the configuration's ``admin.token_env``
(an environment variable's name) or ``admin.token_file`` (a file holding it,
such as a mounted secret); else ``HOSTWIRE_ADMIN_TOKEN``. None anywhere: the
admin routes are off. A token is refused (``ConfigError``, one line) when it is
shorter than ``MIN_LENGTH``, when it is one of the app's own API tokens (the app
names them), or when a plug-in can read it (its ``config`` holds it, or its
``allowed_paths`` hold the token's file): a sandboxed plug-in must never hold
the operator's key.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from hostwire._config import HostwireConfig
from hostwire._errors import ConfigError

ENV = "HOSTWIRE_ADMIN_TOKEN"
MIN_LENGTH = 16
MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(24))'"


def admin_token(
    given: str | None, config: HostwireConfig, app_tokens: Collection[str] = ()
) -> str | None:
    """The admin token to serve with (None: the admin routes are off), checked;
    ``app_tokens`` are the app's own API credentials, which it must not be."""
    token, source = _find(given, config)
    if token is None:
        return None
    if len(token) < MIN_LENGTH:
        raise ConfigError(
            f"The admin token from {source} is {len(token)} characters; an admin token "
            f"needs at least {MIN_LENGTH} (make one: {MAKE_ONE})."
        )
    if any(hmac.compare_digest(token.encode(), other.encode()) for other in app_tokens if other):
        raise ConfigError(
            f"The admin token from {source} is also one of the app's API tokens: whoever "
            "may call the API could then run the console; give the admin a token of its own."
        )
    check_plugins(token, config, source)
    return token


def check_plugins(token: str | None, config: HostwireConfig, source: str = "the admin") -> None:
    """Refuse a configuration whose plug-ins can read the admin token: in their
    ``config``, or as ``admin.token_file`` inside a folder of their ``allowed_paths``."""
    if token is None:
        return
    secret = _token_file(config)
    for plugin in config.plugins:
        for where in _holding(plugin.config, token, "config"):
            raise plugin.error(
                f"its {where} holds the admin token (from {source}): plug-ins read their "
                "config, so give it a credential of its own."
            )
        if secret is None:
            continue
        for host in plugin.allowed_paths:
            folder = Path(host).resolve()
            if secret == folder or folder in secret.parents:
                raise plugin.error(
                    f"its allowed_paths give it {host}, which holds the admin token's file "
                    f"({secret}): keep the token outside every plug-in's folders."
                )


def _token_file(config: HostwireConfig) -> Path | None:
    name = config.admin.token_file
    if name is None:
        return None
    path = Path(name)
    return (path if path.is_absolute() else config.base_dir / path).resolve()


def _find(given: str | None, config: HostwireConfig) -> tuple[str | None, str]:
    if given:
        return given, "Hostwire(admin_token=)"
    admin = config.admin
    if admin.token_env is not None:
        value = os.environ.get(admin.token_env)
        if not value:
            raise ConfigError(
                f"admin.token_env names {admin.token_env}, which is not set (or empty): "
                "set it to the admin token, or take admin out of the configuration."
            )
        return value, f"${admin.token_env}"
    path = _token_file(config)
    if path is not None:
        try:
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"admin.token_file {path} cannot be read: {reason}.") from exc
        if not value:
            raise ConfigError(f"admin.token_file {path} is empty: write the admin token in it.")
        return value, str(path)
    value = os.environ.get(ENV)
    return (value, f"${ENV}") if value else (None, "")


def _holding(value: Any, token: str, where: str) -> Iterator[str]:
    """Where in a plug-in's config ``token`` appears (in a string, or as a key)."""
    if isinstance(value, str):
        if token in value:
            yield where
    elif isinstance(value, dict):
        for key, item in value.items():
            if token in str(key):
                yield f"{where} (a key)"
            yield from _holding(item, token, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _holding(item, token, f"{where}[{index}]")
