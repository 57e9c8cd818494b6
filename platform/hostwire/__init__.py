"""hostwire: an application's OpenAPI document as a WebAssembly plug-in system."""

from hostwire._apprunner import run_app
from hostwire._config import (
    EventsConfig,
    HostwireConfig,
    LimitsConfig,
    PluginConfig,
    load_config,
    parse_config,
)
from hostwire._dispatch import AsgiTarget, Caller, DispatchError, HttpTarget, Reply, Target
from hostwire._errors import (
    ConfigError,
    EventHandlerError,
    EventRejected,
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
    SpecError,
    StorageError,
)
from hostwire._events import EventBus, Subscriber, new_envelope
from hostwire._hooks import HttpHooksMiddleware
from hostwire._hostapi import HostApi
from hostwire._hostfn import CallContext, HostFunction
from hostwire._limits import Limits
from hostwire._logs import log_safe
from hostwire._openapi import OpenAPIDocument, Operation, Webhook, load_openapi, snake_case
from hostwire._outbox import Outbox
from hostwire._pluginset import PluginSet
from hostwire._runtime import Plugin
from hostwire._source import fetch_url, read_path
from hostwire._storage import StorageGuard
from hostwire._threads import to_thread
from hostwire._validate import HttpCall, compile_schema

__all__ = [
    "AsgiTarget",
    "CallContext",
    "Caller",
    "ConfigError",
    "DispatchError",
    "EventBus",
    "EventHandlerError",
    "EventRejected",
    "EventsConfig",
    "HostApi",
    "HostCallLimitError",
    "HostFunction",
    "HostFunctionError",
    "HostwireConfig",
    "HostwireError",
    "HttpCall",
    "HttpHooksMiddleware",
    "HttpTarget",
    "Limits",
    "LimitsConfig",
    "OpenAPIDocument",
    "Operation",
    "Outbox",
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
    "PluginSet",
    "PluginTimeoutError",
    "PluginTrapError",
    "Reply",
    "SpecError",
    "StorageError",
    "StorageGuard",
    "Subscriber",
    "Target",
    "Webhook",
    "compile_schema",
    "fetch_url",
    "load_config",
    "load_openapi",
    "log_safe",
    "new_envelope",
    "parse_config",
    "read_path",
    "run_app",
    "snake_case",
    "to_thread",
]
