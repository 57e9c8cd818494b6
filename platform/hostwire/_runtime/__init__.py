"""The plug-in runtime: compiled modules, instance pools, host functions, limits.

It owns everything between a ``.wasm`` file and a finished call: reading and
inspecting modules (``module``), fetching them (``source``), the instance pool
and the call itself (``plugin``), the trampoline that carries host-function
calls (``hostfn``), the kernel functions and plug-in HTTP (``kernel``,
``http``), limits, the plug-in log router (``logs``), the strict JSON decoder
for plug-in output (``strictjson``), the worker threads of nested calls
(``chain``) and blocking calls on the app's thread pool (``threads``). It
imports only ``hostwire._errors`` and ``hostwire._text``: it knows nothing of
OpenAPI, apps or events.
"""

from hostwire._runtime.chain import CHAIN, ON_CALLER_THREAD, describe, to_thread
from hostwire._runtime.hostfn import CallContext, HostFunction, payload_too_large
from hostwire._runtime.imports import (
    HOST_FUNCTION,
    describe_imports,
    provider,
    unprovided,
    unprovided_hint,
)
from hostwire._runtime.limits import Limits
from hostwire._runtime.logs import log_safe
from hostwire._runtime.module import (
    KERNEL_MODULE,
    USER_MODULE,
    WASI_MODULES,
    NotWebAssembly,
    inspect_module,
)
from hostwire._runtime.plugin import Plugin
from hostwire._runtime.source import DOWNLOAD_TIMEOUT_S, fetch_url, read_path, sha256_hex
from hostwire._runtime.strictjson import (
    JsonProblem,
    dumps,
    loads_strict,
    parse_json,
    plugin_json,
)
from hostwire._runtime.threads import run_blocking

__all__ = [
    "CHAIN",
    "DOWNLOAD_TIMEOUT_S",
    "HOST_FUNCTION",
    "KERNEL_MODULE",
    "ON_CALLER_THREAD",
    "USER_MODULE",
    "WASI_MODULES",
    "CallContext",
    "HostFunction",
    "JsonProblem",
    "Limits",
    "NotWebAssembly",
    "Plugin",
    "describe",
    "describe_imports",
    "dumps",
    "fetch_url",
    "inspect_module",
    "loads_strict",
    "log_safe",
    "parse_json",
    "payload_too_large",
    "plugin_json",
    "provider",
    "read_path",
    "run_blocking",
    "sha256_hex",
    "to_thread",
    "unprovided",
    "unprovided_hint",
]
