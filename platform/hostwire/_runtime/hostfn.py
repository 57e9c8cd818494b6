"""Host functions: Python callables that plug-ins import and call.

Every host function has the wasm signature ``(i64) -> i64``: the guest passes
the offset of an Extism memory block holding its input and receives the
offset of a block holding the output. All of them share one cffi trampoline;
each is bound explicitly to the plug-ins that get it, never through the
Extism SDK's process-wide registry.

A failed host call stops the guest at once. The SDK ignores exceptions raised
in a host function and a C host function cannot trap, so the trampoline
records the failure in the call's context and answers ``FAILED`` (-1, never a
block offset); a small wasm module linked between the guest and its host
functions (``shim_wat``, the module the guest imports as ``extism:host/user``)
turns that answer into a trap, and the runtime raises the recorded error. The
trap belongs to the failing call's own store: nothing else is disturbed.
(Extism's cancel handle is not used: it increments the epoch of the engine
that every instance of a plug-in shares, so it interrupts their other calls
too; a late cancel was measured to hit about 1 call in 5,000.)

What a host function reads from the plug-in is bounded by the block's length
*before* anything is copied (``max_host_input_bytes``): an oversize call gets
``HostFunction.oversize``'s answer, by default a Contract 1 ``413``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import extism
from extism.extism import _ffi, _lib

from hostwire._contract import error_reply
from hostwire._errors import (
    HostCallLimitError,
    HostFunctionError,
    PluginError,
    PluginMemoryError,
    PluginTimeoutError,
)
from hostwire._runtime.limits import Limits
from hostwire._runtime.module import USER_MODULE

if TYPE_CHECKING:
    from hostwire._runtime.http import PluginHttp
    from hostwire._runtime.stats import PluginStats

_DEFAULTS = Limits()
# The answer of a failed host call: the shim traps on it. Extism block
# offsets are below 4 GiB, so -1 (u64::MAX) is never a real answer.
FAILED = -1
# Host functions are linked under this prefix; the shim re-exports them under
# the namespace the guest imports.
LINK_PREFIX = "hostwire:"


class CallContext:
    """State of one plug-in call, visible to the host functions it calls.

    ``extra`` holds what the caller of ``Plugin.call`` passed as keywords.
    An instance keeps one context for all its calls; ``Plugin.call`` resets the
    per-call fields (export, extra, host_calls, error, http_status, http_headers,
    refused, deadline) itself, inline, on its hot path.
    """

    __slots__ = (
        "deadline",
        "error",
        "export",
        "extra",
        "host_calls",
        "http",
        "http_headers",
        "http_status",
        "max_host_calls",
        "max_host_input_bytes",
        "max_output_bytes",
        "plugin",
        "refused",
        "stats",
    )

    def __init__(
        self,
        plugin: str,
        export: str,
        max_host_calls: int,
        extra: dict[str, Any] | None = None,
        *,
        max_host_input_bytes: int = _DEFAULTS.max_host_input_bytes,
        max_output_bytes: int = _DEFAULTS.max_output_bytes,
        http: PluginHttp | None = None,
    ) -> None:
        self.plugin = plugin
        self.export = export
        self.max_host_calls = max_host_calls
        self.max_host_input_bytes = max_host_input_bytes
        self.max_output_bytes = max_output_bytes
        self.http = http
        self.host_calls = 0
        self.extra: dict[str, Any] = extra if extra is not None else {}
        self.error: BaseException | None = None
        # time.monotonic() when the call's timeout_ms runs out: host functions
        # get only what is left, since the runtime cannot interrupt them.
        self.deadline: float | None = None
        self.http_status = 0
        self.http_headers: dict[str, str] | None = None
        # Operations this call was answered 403 not_granted for (the outbox's "never succeeds").
        self.refused: list[str] = []
        # The plug-in's counters, for host functions to count their calls (None: not counted).
        self.stats: PluginStats | None = None

    def fail(self, exc: BaseException) -> None:
        """Remember the first failure; later host calls of this call are refused."""
        if self.error is None:
            self.error = exc

    @property
    def where(self) -> str:
        return f'Plug-in "{self.plugin}" export "{self.export}"'


HostHandler = Callable[[CallContext, bytes], bytes]
# (context, function name, input length) -> the guest's answer to an oversize call.
OversizeAnswer = Callable[[CallContext, str, int], bytes]


def payload_too_large(context: CallContext, function: str, length: int) -> bytes:
    """The Contract 1 answer to a host call whose input is over ``max_host_input_bytes``."""
    message = (
        f'The input of host function "{function}" is {length} bytes, over the plug-in\'s '
        f"limit of {context.max_host_input_bytes} (max_host_input_bytes); it was not read."
    )
    return error_reply(413, "payload_too_large", message)


@dataclass(frozen=True, slots=True)
class HostFunction:
    """A host function: ``handler(context, input_bytes) -> output_bytes``.

    ``oversize`` answers a call whose input is over ``max_host_input_bytes``
    (the handler is not called and the input is not read).
    """

    name: str
    handler: HostHandler
    namespace: str = USER_MODULE
    oversize: OversizeAnswer = payload_too_large

    def to_extism(self, namespace: str | None = None) -> extism.Function:
        # The Function keeps the cffi handle to ``self`` alive; the compiled
        # plug-in keeps the Function alive.
        return extism.Function(
            self.namespace if namespace is None else namespace,
            self.name,
            [extism.ValType.I64],
            [extism.ValType.I64],
            _trampoline,
            self,
        )


# -- plug-in memory, from inside a host call -----------------------------------


def context_of(current: Any) -> CallContext | None:
    """The CallContext of the running call, or None outside hostwire's runtime."""
    raw = _lib.extism_current_plugin_host_context(current)
    if raw == _ffi.NULL:
        return None
    context = _ffi.from_handle(raw)
    return context if isinstance(context, CallContext) else None


def block_length(current: Any, context: CallContext, offset: int, what: str) -> int:
    """The length of the block at ``offset``; 0 if no block starts there.

    Extism asks the plug-in's kernel, and answers 0 also when that call fails:
    once the call is past its timeout_ms, Extism stops every entry into the
    plug-in, so a 0 past the deadline is a timeout (raised), not a missing block.
    ``context.deadline`` starts before Extism's timer does, so a stopped kernel
    is always past it.
    """
    if offset <= 0:  # 0 is no block; a negative i64 is an offset past 8 EiB
        return 0
    length = int(_lib.extism_current_plugin_memory_length(current, offset))
    if length == 0:
        check_deadline(context, what)
    return length


def read_block(current: Any, offset: int, length: int) -> bytes:
    """Copy ``length`` bytes of the block at ``offset`` (its length, checked by the caller)."""
    if length == 0:
        return b""
    base = _lib.extism_current_plugin_memory(current)
    return bytes(_ffi.buffer(base + offset, length))


def write_block(current: Any, context: CallContext, data: bytes, what: str) -> int:
    """Put ``data`` in a new block of the plug-in's memory and return its offset."""
    offset = _lib.extism_current_plugin_memory_alloc(current, len(data))
    if offset == 0:
        check_deadline(context, what)  # as in block_length: a stopped kernel answers 0 too
        raise PluginMemoryError(
            f"{context.where} ran out of memory: there is no room for the {len(data)}-byte "
            f"result of {what} (limit memory_mib).",
            plugin=context.plugin,
            export=context.export,
        )
    base = _lib.extism_current_plugin_memory(current)
    _ffi.buffer(base + offset, len(data))[:] = data
    return int(offset)


def free_block(current: Any, offset: int) -> None:
    if offset > 0:
        _lib.extism_current_plugin_memory_free(current, offset)


def check_deadline(context: CallContext, what: str) -> None:
    if context.deadline is not None and time.monotonic() > context.deadline:
        raise PluginTimeoutError(
            f"{context.where} ran out of time (limit timeout_ms) while {what} was running.",
            plugin=context.plugin,
            export=context.export,
        )


@_ffi.callback(  # type: ignore[untyped-decorator]
    "void(ExtismCurrentPlugin*, const ExtismVal*, ExtismSize, ExtismVal*, ExtismSize, void*)"
)
def _trampoline(  # noqa: PLR0917 (the signature cffi calls)
    current: Any, inputs: Any, n_inputs: int, outputs: Any, n_outputs: int, user_data: Any
) -> None:
    function: HostFunction = _ffi.from_handle(user_data)[0]
    outputs[0].v.i64 = 0
    context = context_of(current)
    if context is None:
        return  # called outside hostwire's runtime: nothing to report to
    outputs[0].v.i64 = FAILED
    if context.error is not None:
        return  # the call already failed: stop the guest, do no more work for it
    try:
        outputs[0].v.i64 = _host_call(current, function, context, inputs[0].v.i64)
    except BaseException as exc:  # the trampoline's own refusals: limits, memory, time
        context.fail(
            exc if isinstance(exc, PluginError) else _as_host_error(function, context, exc)
        )


def _host_call(current: Any, function: HostFunction, context: CallContext, offset: int) -> int:
    context.host_calls += 1
    if context.host_calls > context.max_host_calls:
        raise HostCallLimitError(
            f"{context.where} made more than {context.max_host_calls} host-function "
            f'calls (limit max_host_calls); the call to "{function.name}" was refused '
            "and the plug-in stopped.",
            plugin=context.plugin,
            export=context.export,
            function=function.name,
        )
    length = block_length(current, context, offset, f'host function "{function.name}"')
    if length > context.max_host_input_bytes:
        result = function.oversize(context, function.name, length)
    else:
        data = read_block(current, offset, length)
        try:
            result = function.handler(context, data)
        except BaseException as exc:  # every failure must reach the caller, see module doc
            context.fail(_as_host_error(function, context, exc))
            return FAILED
        check_deadline(context, f'host function "{function.name}"')
    return write_block(current, context, result, f'"{function.name}"')


def _as_host_error(
    function: HostFunction, context: CallContext, exc: BaseException
) -> BaseException:
    if isinstance(exc, (HostFunctionError, PluginTimeoutError)):
        return exc
    wrapped = HostFunctionError(
        f'{context.where} failed because host function "{function.name}" raised '
        f"{type(exc).__name__}: {exc}",
        plugin=context.plugin,
        export=context.export,
        function=function.name,
    )
    wrapped.__cause__ = exc
    return wrapped


# -- the shim: a failed host call traps ------------------------------------------


def _wat_string(text: str) -> str:
    return '"' + "".join(f"\\{b:02x}" for b in text.encode()) + '"'


def shim_wat(namespace: str, names: list[str]) -> str:
    """A module exporting each of ``names`` as ``(i64) -> i64``, forwarding to the
    host function linked as ``LINK_PREFIX + namespace`` and trapping on ``FAILED``."""
    imports = "\n".join(
        f"  (import {_wat_string(LINK_PREFIX + namespace)} {_wat_string(name)} "
        f"(func $f{i} (param i64) (result i64)))"
        for i, name in enumerate(names)
    )
    exports = "\n".join(
        f"""  (func (export {_wat_string(name)}) (param i64) (result i64) (local $r i64)
    (local.set $r (call $f{i} (local.get 0)))
    (if (i64.eq (local.get $r) (i64.const {FAILED})) (then unreachable))
    (local.get $r))"""
        for i, name in enumerate(names)
    )
    return f"(module\n{imports}\n{exports}\n)"
