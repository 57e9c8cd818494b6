"""One exception tree: every error hostwire raises on purpose is a HostwireError,
drawn in _errors' docstring, with its exit code decided by its class."""

from __future__ import annotations

import inspect

from hostwire import _errors
from hostwire._errors import ConfigError, HostwireError, PluginError, UsageError


def _classes() -> list[type[HostwireError]]:
    return [
        c
        for _, c in inspect.getmembers(_errors, inspect.isclass)
        if issubclass(c, HostwireError) and c.__module__ == _errors.__name__
    ]


def test_the_docstring_draws_every_exception() -> None:
    drawing = _errors.__doc__ or ""
    missing = [
        c.__name__ for c in _classes() if f" {c.__name__} " not in drawing.replace("\n", " ")
    ]
    assert missing == []


def test_the_errors_of_every_layer_join_the_tree() -> None:
    names = {c.__name__ for c in _classes()}
    assert {"DispatchError", "InvalidCall", "HookFailed", "AppStartupError", "UsageError"} <= names


def test_usage_configuration_and_plugin_errors_have_their_own_exit_codes() -> None:
    codes = [HostwireError.exit_code, UsageError.exit_code, ConfigError.exit_code]
    assert len({*codes, PluginError.exit_code}) == 4
