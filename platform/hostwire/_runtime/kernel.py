"""Kernel functions hostwire provides itself, in place of Extism's.

Extism's linker lets a host function in ``extism:host/env`` shadow the
kernel's function of the same name, so plug-ins built with any PDK call these
unchanged:

- ``output_set(offset, length)``: the kernel silently ignores an offset or
  length outside memory (the output then reads as empty, which hooks and
  guards take as "go on") and accepts an offset where no block starts
  (garbage). hostwire's checks that a block starts at ``offset`` and holds
  ``length`` bytes, and that ``length`` is within ``max_output_bytes``,
  *before* copying; anything else fails the call with ``PluginOutputError``
  (or ``PluginTimeoutError`` past the call's deadline, when Extism no longer
  lets the kernel answer: see ``hostfn.block_length``).
- ``http_request``, ``http_status_code``, ``http_headers``: plug-in HTTP done
  by hostwire (``http``), so redirects cannot leave ``allowed_hosts``.

These cannot make the guest trap (only the user-function shim can, see
``hostfn``): a failure is recorded, the guest gets 0 and the call fails when
it returns; later host calls of that call are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import extism
from extism.extism import _ffi

from hostwire._errors import PluginOutputError
from hostwire._runtime.hostfn import CallContext, block_length, context_of, read_block
from hostwire._runtime.http import http_headers, http_request, http_status_code
from hostwire._runtime.module import KERNEL_MODULE

# handler(current, context, inputs, outputs); outputs are zeroed beforehand.
KernelHandler = Callable[[Any, CallContext, Any, Any], None]
_I32, _I64 = extism.ValType.I32, extism.ValType.I64


@dataclass(frozen=True, slots=True)
class _KernelFunction:
    name: str
    params: tuple[extism.ValType, ...]
    results: tuple[extism.ValType, ...]
    handler: KernelHandler

    def to_extism(self) -> extism.Function:
        return extism.Function(
            KERNEL_MODULE, self.name, list(self.params), list(self.results), _trampoline, self
        )


def output_set(current: Any, context: CallContext, inputs: Any, outputs: Any) -> None:
    offset, length = inputs[0].v.i64, inputs[1].v.i64
    if offset == 0 and length == 0:
        context.output = b""
        return
    block = block_length(current, context, offset, "output_set")
    where = f"{context.where} called output_set({offset}, {length})"
    problem = None
    if block == 0:
        problem = "no block of its memory starts at that offset"
    elif not 0 <= length <= block:
        problem = f"the length runs past the end of the {block}-byte block there"
    elif length > context.max_output_bytes:
        raise PluginOutputError(
            f"{context.where} returned {length} bytes, over its limit of "
            f"{context.max_output_bytes} (max_output_bytes).",
            plugin=context.plugin,
            export=context.export,
        )
    if problem is not None:
        raise PluginOutputError(
            f"{where}, but {problem}: its output is invalid.",
            plugin=context.plugin,
            export=context.export,
        )
    context.output = read_block(current, offset, length)


FUNCTIONS = (
    _KernelFunction("output_set", (_I64, _I64), (), output_set),
    _KernelFunction("http_request", (_I64, _I64), (_I64,), http_request),
    _KernelFunction("http_status_code", (), (_I32,), http_status_code),
    _KernelFunction("http_headers", (), (_I64,), http_headers),
)


def kernel_functions() -> list[extism.Function]:
    """Fresh Extism functions for one compiled plug-in."""
    return [f.to_extism() for f in FUNCTIONS]


@_ffi.callback(  # type: ignore[untyped-decorator]
    "void(ExtismCurrentPlugin*, const ExtismVal*, ExtismSize, ExtismVal*, ExtismSize, void*)"
)
def _trampoline(  # noqa: PLR0917 (the signature cffi calls)
    current: Any, inputs: Any, n_inputs: int, outputs: Any, n_outputs: int, user_data: Any
) -> None:
    function: _KernelFunction = _ffi.from_handle(user_data)[0]
    for i in range(n_outputs):
        outputs[i].v.i64 = 0
    context = context_of(current)
    if context is None or context.error is not None:
        return  # outside hostwire's runtime, or the call already failed
    try:
        function.handler(current, context, inputs, outputs)
    except BaseException as exc:  # recorded: the runtime raises it when the call returns
        for i in range(n_outputs):
            outputs[i].v.i64 = 0
        context.fail(exc)
