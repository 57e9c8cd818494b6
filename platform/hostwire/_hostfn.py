"""Host functions: Python callables that plug-ins import and call.

Every host function has the wasm signature ``(i64) -> i64``: the guest passes
the offset of an Extism memory block holding its input and receives the
offset of a block holding the output. All of them share one cffi trampoline;
each is bound explicitly to the plug-ins that get it, never through the
Extism SDK's process-wide registry.

The SDK ignores exceptions raised in a host function (cffi prints them and the
guest reads offset 0). The trampoline instead records the exception in the
call's context, answers every later host call of that plug-in call at once
with offset 0, and the runtime raises the exception when ``call`` returns, so
a failing host function always fails the call. (Extism's cancel handle is not
used for this: it works through the engine's shared epoch, and a cancel that
lands late interrupted a later call of another instance, measured at about 1
in 5,000 calls.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import extism
from extism.extism import _ffi, _lib

from hostwire._errors import HostCallLimitError, HostFunctionError, PluginTimeoutError
from hostwire._wasm import USER_MODULE


class CallContext:
    """State of one plug-in call, visible to the host functions it calls.

    ``extra`` holds what the caller of ``Plugin.call`` passed as keywords.
    """

    __slots__ = (
        "deadline",
        "error",
        "export",
        "extra",
        "host_calls",
        "max_host_calls",
        "plugin",
    )

    def __init__(
        self,
        plugin: str,
        export: str,
        max_host_calls: int,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.plugin = plugin
        self.export = export
        self.max_host_calls = max_host_calls
        self.host_calls = 0
        self.extra: dict[str, Any] = extra if extra is not None else {}
        self.error: BaseException | None = None
        # time.monotonic() when the call's timeout_ms runs out: host functions
        # get only what is left, since the runtime cannot interrupt them.
        self.deadline: float | None = None

    def fail(self, exc: BaseException) -> None:
        """Remember the first failure; later host calls of this call are refused."""
        if self.error is None:
            self.error = exc


HostHandler = Callable[[CallContext, bytes], bytes]


@dataclass(frozen=True, slots=True)
class HostFunction:
    """A host function: ``handler(context, input_bytes) -> output_bytes``."""

    name: str
    handler: HostHandler
    namespace: str = USER_MODULE

    def to_extism(self) -> extism.Function:
        # The Function keeps the cffi handle to ``self`` alive; the compiled
        # plug-in keeps the Function alive.
        return extism.Function(
            self.namespace,
            self.name,
            [extism.ValType.I64],
            [extism.ValType.I64],
            _trampoline,
            self,
        )


def _read_block(current: Any, offset: int) -> bytes:
    length = _lib.extism_current_plugin_memory_length(current, offset)
    if length == 0:
        return b""
    base = _lib.extism_current_plugin_memory(current)
    return bytes(_ffi.buffer(base + offset, length))


def _write_block(current: Any, data: bytes) -> int:
    offset = _lib.extism_current_plugin_memory_alloc(current, len(data))
    if offset == 0:
        raise MemoryError(
            f"the plug-in's memory limit leaves no room for a {len(data)}-byte host-function result"
        )
    base = _lib.extism_current_plugin_memory(current)
    _ffi.buffer(base + offset, len(data))[:] = data
    return int(offset)


@_ffi.callback(  # type: ignore[untyped-decorator]
    "void(ExtismCurrentPlugin*, const ExtismVal*, ExtismSize, ExtismVal*, ExtismSize, void*)"
)
def _trampoline(  # noqa: PLR0917 (the signature cffi calls)
    current: Any, inputs: Any, n_inputs: int, outputs: Any, n_outputs: int, user_data: Any
) -> None:
    function: HostFunction = _ffi.from_handle(user_data)[0]
    outputs[0].v.i64 = 0
    raw_context = _lib.extism_current_plugin_host_context(current)
    if raw_context == _ffi.NULL:
        return  # called outside hostwire's runtime: nothing to report to
    context: CallContext | None = _ffi.from_handle(raw_context)
    if not isinstance(context, CallContext) or context.error is not None:
        return  # after a failure the call is lost anyway: do no more work for it
    try:
        context.host_calls += 1
        if context.host_calls > context.max_host_calls:
            raise HostCallLimitError(
                f'Plug-in "{context.plugin}" export "{context.export}" made more than '
                f"{context.max_host_calls} host-function calls (limit max_host_calls); "
                f'the call to "{function.name}" was refused.',
                plugin=context.plugin,
                export=context.export,
                function=function.name,
            )
        data = _read_block(current, inputs[0].v.i64)
        result = function.handler(context, data)
        if context.deadline is not None and time.monotonic() > context.deadline:
            raise PluginTimeoutError(
                f'Plug-in "{context.plugin}" export "{context.export}" ran out of time '
                f'(limit timeout_ms) while host function "{function.name}" was running.',
                plugin=context.plugin,
                export=context.export,
            )
        outputs[0].v.i64 = _write_block(current, result)
    except BaseException as exc:  # every failure must reach the caller, see module doc
        context.fail(_as_host_error(function, context, exc))


def _as_host_error(
    function: HostFunction, context: CallContext, exc: BaseException
) -> BaseException:
    if isinstance(exc, (HostFunctionError, PluginTimeoutError)):
        return exc
    wrapped = HostFunctionError(
        f'Plug-in "{context.plugin}" export "{context.export}" failed because host function '
        f'"{function.name}" raised {type(exc).__name__}: {exc}',
        plugin=context.plugin,
        export=context.export,
        function=function.name,
    )
    wrapped.__cause__ = exc
    return wrapped
