"""hostwire: an application's OpenAPI document as a WebAssembly plug-in system."""

from hostwire._config import (
    HostwireConfig,
    LimitsConfig,
    PluginConfig,
    load_config,
    parse_config,
)
from hostwire._errors import (
    ConfigError,
    HostCallLimitError,
    HostFunctionError,
    HostwireError,
    PluginBusyError,
    PluginCallError,
    PluginError,
    PluginExportError,
    PluginInputError,
    PluginIntegrityError,
    PluginLoadError,
    PluginMemoryError,
    PluginOutputError,
    PluginTimeoutError,
    PluginTrapError,
)
from hostwire._hostfn import CallContext, HostFunction
from hostwire._limits import Limits
from hostwire._runtime import Plugin
from hostwire._source import fetch_url, read_path

__all__ = [
    "CallContext",
    "ConfigError",
    "HostCallLimitError",
    "HostFunction",
    "HostFunctionError",
    "HostwireConfig",
    "HostwireError",
    "Limits",
    "LimitsConfig",
    "Plugin",
    "PluginBusyError",
    "PluginCallError",
    "PluginConfig",
    "PluginError",
    "PluginExportError",
    "PluginInputError",
    "PluginIntegrityError",
    "PluginLoadError",
    "PluginMemoryError",
    "PluginOutputError",
    "PluginTimeoutError",
    "PluginTrapError",
    "fetch_url",
    "load_config",
    "parse_config",
    "read_path",
]
