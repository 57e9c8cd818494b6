"""The plug-in runtime: compile once, call from a pool of instances.

An Extism ``Plugin`` is not thread-safe, so each concurrent call takes its own
instance from a pool. Each instance is compiled with an engine of its own (paid
when the pool grows or replaces an instance): Extism stops a call by
bumping its engine's epoch, which would stop every call on a shared engine. An instance that
trapped, timed out, ran out of memory or whose host call failed is freed,
never reused.

Besides the plug-in's module, each instance links a shim per host-function
namespace (a failed host call traps, see ``hostfn``), a shim that checks
``output_set`` in wasm, and hostwire's own plug-in HTTP (``kernel``). The
output is what the guest gave ``output_set``, checked and bounded before it
is copied.

A call goes straight to the Extism C API (the SDK's ``Plugin.call`` wraps the
same three calls with a new handle and an encoded name per call): a good call
runs no Python between its input and its output.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

# Rust captures a full native backtrace for every trap when RUST_BACKTRACE is
# set (it is on many developer machines), which makes a trap slow. hostwire
# reports the wasm reason instead, so library backtraces are off. This must
# happen at import, before extism loads its native library: Rust reads the
# variable once, at the first backtrace, and keeps the answer.
os.environ.setdefault("RUST_LIB_BACKTRACE", "0")

import extism
from extism.extism import CompiledPlugin, _ffi, _lib

from hostwire._errors import (
    HostFunctionError,
    PluginBusyError,
    PluginCallError,
    PluginError,
    PluginExportError,
    PluginInputError,
    PluginLoadError,
    PluginMemoryError,
    PluginTimeoutError,
    PluginTrapError,
)
from hostwire._runtime.hostfn import LINK_PREFIX, CallContext, HostFunction, shim_wat
from hostwire._runtime.http import PluginHttp
from hostwire._runtime.imports import describe_imports, unprovided, unprovided_hint
from hostwire._runtime.kernel import OUTPUT_MODULE, kernel_functions, output_shim_wat
from hostwire._runtime.limits import Limits
from hostwire._runtime.logs import ROUTER
from hostwire._runtime.module import (
    KERNEL_MODULE,
    USER_MODULE,
    ModuleInfo,
    NotWebAssembly,
    inspect_module,
    rename_imports,
    to_binary,
)
from hostwire._runtime.stats import PluginStats
from hostwire._runtime.strictjson import plugin_json
from hostwire._text import one_line

_TRAP_PREFIX = "error while executing"
_clock = time.monotonic  # the deadline's clock, so one reading serves both
_E = TypeVar("_E", bound=BaseException)


@dataclass(eq=False, slots=True)
class _Instance:
    plugin: extism.Plugin
    uuid: str
    context: CallContext
    pointer: Any  # the native plug-in, for calls straight to the C API
    handle: Any  # the cffi handle of ``context``, passed as every call's host context


def _config_value(value: object) -> str:
    # Extism config is a string-to-string map; anything else travels as JSON.
    return value if isinstance(value, str) else json.dumps(value)


def _host_failure(context: CallContext) -> PluginError:
    error = context.error
    if isinstance(error, PluginError):
        return error
    wrapped = HostFunctionError(
        f'Plug-in "{context.plugin}" export "{context.export}" failed in a host function: {error}',
        plugin=context.plugin,
        export=context.export,
        function="?",
    )
    wrapped.__cause__ = error
    return wrapped


class Plugin:
    """One loaded plug-in: a compiled module, its limits and a pool of instances.

    Safe to call from many threads at once. Use as a context manager or call
    ``close()`` (idempotent) to free the native resources.
    """

    def __init__(
        self,
        name: str,
        wasm: bytes,
        *,
        limits: Limits | None = None,
        config: Mapping[str, object] | None = None,
        host_functions: Iterable[HostFunction] = (),
        allowed_hosts: Sequence[str] = (),
        allowed_paths: Mapping[str, str] | None = None,
        stats: PluginStats | bool = True,
    ) -> None:
        self.name = name
        self.limits = limits or Limits()
        self.sha256 = hashlib.sha256(wasm).hexdigest()
        # False turns recording off (the metrics benchmark's baseline); a PluginStats
        # carries a predecessor's counters on (so does ``plugin.stats = old.stats``).
        self._recording = stats is not False
        self._stats = stats if isinstance(stats, PluginStats) else PluginStats(name)
        self.host_functions = {f.name: f for f in host_functions}
        try:
            self.info: ModuleInfo = inspect_module(wasm)
        except NotWebAssembly as exc:
            raise PluginLoadError(
                f'Plug-in "{name}" is not WebAssembly: {exc}.', plugin=name
            ) from exc
        except ValueError as exc:
            raise PluginLoadError(
                f'Plug-in "{name}" is not a valid WebAssembly module: {exc}', plugin=name
            ) from exc
        self._check_imports()
        self._exports = self.info.function_exports
        # export -> (its name for the C API, the append of its pending latencies): resolved
        # once, not per call.
        self._entries = self._resolve_entries()
        # Only plug-ins that can log need the log buffer drained after each call.
        self._logs = any(i.name.startswith("log_") for i in self.info.imports_from(KERNEL_MODULE))
        # Plug-in HTTP is hostwire's (http.py): Extism never gets allowed_hosts.
        self._http = PluginHttp(allowed_hosts, self.limits.max_input_bytes)
        manifest = {
            "wasm": [
                *self._shims(),
                *self._output_shim(),
                {"data": self._main(wasm), "name": "main"},
            ],
            "memory": {"max_pages": self.limits.max_pages},
            "timeout_ms": self.limits.timeout_ms,
            "allowed_paths": dict(allowed_paths or {}),
            "config": {str(k): _config_value(v) for k, v in (config or {}).items()},
        }
        ROUTER.start()
        self._wasi = self.info.uses_wasi or bool(allowed_paths)
        self._manifest: dict[str, Any] | None = manifest
        # Compile now so that compile and link errors surface at load time.
        compiled = self._compile()
        self._max_host_calls = self.limits.max_host_calls
        self._timeout_s = self.limits.timeout_ms / 1000
        self._max_input = self.limits.max_input_bytes
        self._max_output = self.limits.max_output_bytes
        self._lock = threading.Lock()
        # Idle instances. A call pops one and appends it back (each atomic under the
        # GIL, so the common path takes no lock); the lock guards growing and shrinking
        # the pool, whose size (_alive) bounds the calls in flight (max_instances).
        self._idle: list[_Instance] = []
        self._instances: set[_Instance] = set()  # every live one, to hand a new stats to
        self._alive = 1
        self._closed = False
        self._idle.append(self._new_instance(compiled))

    @property
    def exports(self) -> frozenset[str]:
        """The names of the functions the plug-in exports."""
        return self._exports

    @property
    def stats(self) -> PluginStats:
        """The plug-in's counters; assign a predecessor's to carry them on across a reload."""
        return self._stats

    @stats.setter
    def stats(self, stats: PluginStats) -> None:
        self._stats = stats
        self._entries = self._resolve_entries()
        with self._lock:
            for instance in self._instances:
                instance.context.stats = stats if self._recording else None

    def _resolve_entries(self) -> dict[str, tuple[bytes, Callable[[float], None] | None]]:
        stats = self._stats
        return {
            name: (name.encode(), stats.export(name).pending.append if self._recording else None)
            for name in sorted(self._exports)
        }

    def _check_imports(self) -> None:
        for imp in self.info.imports_from(USER_MODULE):
            if imp.name not in self.host_functions:
                offered = ", ".join(sorted(self.host_functions)) or "none"
                raise PluginLoadError(
                    f'Plug-in "{self.name}" imports host function "{imp.name}" from '
                    f'"{USER_MODULE}", which this host does not provide '
                    f"(host functions available: {offered}).",
                    plugin=self.name,
                )
        provided = {(f.namespace, f.name) for f in self.host_functions.values()}
        missing = unprovided(self.info, provided)
        if missing:
            raise PluginLoadError(
                f'Plug-in "{self.name}" imports {describe_imports(missing)}, which the host '
                f"cannot provide: {unprovided_hint(missing)}.",
                plugin=self.name,
            )

    def _shims(self) -> list[dict[str, object]]:
        """One shim module per namespace the guest imports host functions from."""
        shims: list[dict[str, object]] = []
        for namespace in sorted({f.namespace for f in self.host_functions.values()}):
            names = sorted(
                i.name
                for i in self.info.imports_from(namespace)
                if i.name in self.host_functions
                and self.host_functions[i.name].namespace == namespace
            )
            if not names:
                continue
            if namespace == KERNEL_MODULE:
                raise PluginLoadError(
                    f'Plug-in "{self.name}": host functions cannot be put in "{KERNEL_MODULE}" '
                    f"({', '.join(names)}).",
                    plugin=self.name,
                )
            shim = to_binary(shim_wat(namespace, names).encode(), "shim.wat")
            shims.append({"data": shim, "name": namespace})
        return shims

    def _imports_output_set(self) -> bool:
        return any(i.name == "output_set" for i in self.info.imports_from(KERNEL_MODULE))

    def _main(self, wasm: bytes) -> bytes:
        """The guest's module, its output_set import moved to the shim's (binary, not WAT)."""
        if not self._imports_output_set():
            return wasm
        binary = to_binary(wasm)
        return rename_imports(binary, {(KERNEL_MODULE, "output_set"): OUTPUT_MODULE})

    def _output_shim(self) -> list[dict[str, object]]:
        if not self._imports_output_set():
            return []
        shim = to_binary(output_shim_wat(self.limits.max_output_bytes).encode(), "output.wat")
        return [{"data": shim, "name": OUTPUT_MODULE}]

    # -- the pool -----------------------------------------------------------

    def _compile(self) -> CompiledPlugin:
        if self._manifest is None:
            raise PluginError(f'Plug-in "{self.name}" is closed.', plugin=self.name)
        try:
            return CompiledPlugin(
                self._manifest,
                wasi=self._wasi,
                functions=[
                    *(f.to_extism(LINK_PREFIX + f.namespace) for f in self.host_functions.values()),
                    *kernel_functions(),
                ],
            )
        except extism.Error as exc:
            raise PluginLoadError(
                f'Plug-in "{self.name}" failed to compile: {one_line(str(exc))}', plugin=self.name
            ) from exc

    def _new_instance(self, compiled: CompiledPlugin | None = None) -> _Instance:
        # Every instance gets an engine of its own (a compile): Extism
        # enforces timeout_ms by bumping the engine's epoch, which interrupts every
        # store of that engine, so with a shared engine one call's timeout killed the
        # other calls of the same plug-in running at that moment.
        compiled = compiled or self._compile()
        try:
            plugin = extism.Plugin(compiled, functions=[])
        except extism.Error as exc:
            raise PluginLoadError(
                f'Plug-in "{self.name}" failed to instantiate: {one_line(str(exc))}',
                plugin=self.name,
            ) from exc
        finally:
            compiled.__del__()  # the instance keeps what it needs of it
        context = CallContext(
            self.name,
            "",
            self._max_host_calls,
            max_host_input_bytes=self.limits.max_host_input_bytes,
            max_output_bytes=self._max_output,
            http=self._http,
        )
        instance = _Instance(
            plugin, str(plugin.id), context, plugin.plugin, _ffi.new_handle(context)
        )
        ROUTER.register(instance.uuid, self.name)
        with self._lock:
            context.stats = self._stats if self._recording else None
            self._instances.add(instance)
        return instance

    def _grow(self, export: str) -> _Instance:
        with self._lock:
            if self._closed:
                raise PluginError(f'Plug-in "{self.name}" is closed.', plugin=self.name)
            if self._alive >= self.limits.max_instances:
                in_flight = self._alive - len(self._idle)
                raise PluginBusyError(
                    f'Plug-in "{self.name}" already runs {in_flight} calls '
                    f"(limit max_instances); the call to {export} was refused.",
                    plugin=self.name,
                    export=export,
                )
            self._alive += 1
        try:
            return self._new_instance()
        except BaseException:
            with self._lock:
                self._alive -= 1
            raise

    def _retire(self, instance: _Instance) -> None:
        with self._lock:
            self._alive -= 1
        self._free(instance)

    def _free(self, instance: _Instance) -> None:
        with self._lock:
            self._instances.discard(instance)
        ROUTER.unregister(instance.uuid)
        instance.plugin.__del__()  # the SDK's only way to free a Plugin now

    # -- calls --------------------------------------------------------------

    def call(self, export: str, data: bytes | str = b"", **extra: Any) -> bytes:  # noqa: PLR0915 (inlined: the hot path)
        """Run ``export`` with ``data`` as input and return its output.

        Keyword arguments are put in the call's ``CallContext.extra`` for the
        host functions it calls. Raises a ``PluginError`` subclass on failure.
        """
        if isinstance(data, str):
            data = data.encode()
        entry = self._entries.get(export)
        if entry is None or len(data) > self._max_input:
            raise self._failed(export, self._refusal(export, data))
        name, record = entry
        # The pool take and the context reset, inlined: a method call is a tenth of an echo.
        try:
            instance = self._idle.pop()
        except IndexError:
            instance = self._grow_or_refuse(export)
        else:
            if self._closed:
                self._retire(instance)
                raise self._failed(export, self._closed_error())
        # Each instance reuses one context: it runs one call at a time. Every field a
        # call changes is reset here (CallContext's per-call fields).
        context = instance.context
        # One clock reading: the deadline's start is the latency's too.
        start = _clock()
        context.export = export
        context.extra = extra
        context.host_calls = 0
        context.error = None
        context.http_status = 0
        context.http_headers = None
        if context.refused:
            context.refused = []
        context.deadline = start + self._timeout_s
        pointer = instance.pointer
        try:
            rc = _lib.extism_plugin_call_with_host_context(
                pointer, name, data, len(data), instance.handle
            )
            error = _lib.extism_plugin_error(pointer)
            if rc != 0 or error != _ffi.NULL:
                message = _ffi.string(error).decode() if error != _ffi.NULL else f"code {rc}"
                raise extism.Error(message)
        except extism.Error as exc:
            failure = (
                _host_failure(context) if context.error else self._failure(export, exc, instance)
            )
            self._end(instance, reuse=False)
            failure.refused = tuple(context.refused)
            self._failed(export, failure, start)
            if context.error is not None:
                raise failure  # noqa: B904 (its cause is the host function's error)
            raise failure from exc
        except BaseException as exc:
            self._end(instance, reuse=False)
            self._failed(export, exc, start)
            raise
        if self._logs:
            ROUTER.drain()
        if context.error is not None:
            # The call "succeeded" after a host function failed: never a silent success.
            self._end(instance, reuse=False)
            raise self._failed(export, _host_failure(context), start)
        # The output shim has checked the length against max_output_bytes; this copies.
        length = _lib.extism_plugin_output_length(pointer)
        output = _ffi.buffer(_lib.extism_plugin_output_data(pointer), length)[:] if length else b""
        if record is not None:
            # ExportStats.record, inlined: this runs on every call (see stats.py).
            record(_clock() - start)
        self._idle.append(instance)  # _end(reuse=True), inlined
        if self._closed:  # close() ran meanwhile: it may not have seen this instance
            self._drain()
        return output

    def _refusal(self, export: str, data: bytes) -> PluginError:
        """Why a call of ``export`` with ``data`` cannot start (too large, no such export)."""
        if len(data) > self._max_input:
            return PluginInputError(
                f'Input for plug-in "{self.name}" export "{export}" is {len(data)} bytes, '
                f"over its limit of {self.limits.max_input_bytes} (max_input_bytes).",
                plugin=self.name,
                export=export,
            )
        available = ", ".join(sorted(self.exports)) or "none"
        return PluginExportError(
            f'Plug-in "{self.name}" has no export "{export}" (exports: {available}).',
            plugin=self.name,
            export=export,
        )

    def _closed_error(self) -> PluginError:
        return PluginError(f'Plug-in "{self.name}" is closed.', plugin=self.name)

    def _grow_or_refuse(self, export: str) -> _Instance:
        try:
            return self._grow(export)
        except PluginError as exc:
            self._failed(export, exc)
            raise

    def _failed(self, export: str, exc: _E, start: float | None = None) -> _E:
        """Count the failed call of ``export`` (``start``: when it ran; None: it was refused
        before it ran); returns ``exc``, for ``raise``."""
        if self._recording:
            elapsed = None if start is None else _clock() - start
            self._stats.failed(export, exc, elapsed)
        return exc

    def call_json(self, export: str, value: Any = None, **extra: Any) -> Any:
        """Call ``export`` with ``value`` as JSON and parse its JSON output.

        Empty output gives ``None``; output that is not strict JSON in UTF-8
        (or nested too deeply) raises ``PluginOutputError``.
        """
        output = self.call(export, json.dumps(value).encode(), **extra)
        if not output.strip():
            return None
        try:
            return plugin_json(output, plugin=self.name, export=export)
        except PluginError as exc:  # the call itself is counted: only its failure is left
            if self._recording:
                self._stats.failure(export, "output", one_line(str(exc)))
            raise

    def _end(self, instance: _Instance, *, reuse: bool) -> None:
        if not reuse:
            self._retire(instance)
            return
        self._idle.append(instance)
        if self._closed:  # close() ran meanwhile: it may not have seen this instance
            self._drain()

    def _drain(self) -> None:
        """Free every idle instance (each is popped once, so only once freed)."""
        while True:
            try:
                instance = self._idle.pop()
            except IndexError:
                return
            self._retire(instance)

    def _failure(self, export: str, exc: extism.Error, instance: _Instance) -> PluginError:
        reason = ROUTER.take_error(instance.uuid)
        message = str(exc)
        where = f'Plug-in "{self.name}" export "{export}"'
        if message == "timeout":
            return PluginTimeoutError(
                f"{where} timed out after {self.limits.timeout_ms} ms (limit timeout_ms); "
                "the instance was stopped and discarded.",
                plugin=self.name,
                export=export,
            )
        if message == "oom":
            return PluginMemoryError(
                f"{where} ran out of memory: it needed more than {self.limits.memory_mib} MiB "
                "(limit memory_mib); the instance was discarded.",
                plugin=self.name,
                export=export,
            )
        if message.startswith(_TRAP_PREFIX):
            detail = reason or one_line(message)
            return PluginTrapError(
                f"{where} trapped: {detail}; the instance was discarded.",
                plugin=self.name,
                export=export,
            )
        # The export set an error itself (error_set + non-zero return): its words.
        return PluginCallError(
            f"{where} failed: {one_line(message)}", plugin=self.name, export=export
        )

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        """Free every idle instance and the compiled module. Idempotent.

        Calls in flight finish; their instances are freed when they end.
        """
        with self._lock:
            self._closed = True
            self._manifest = None
        self._drain()
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
