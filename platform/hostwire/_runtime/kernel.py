"""Kernel functions hostwire provides itself, in place of Extism's.

Extism's linker lets a host function in ``extism:host/env`` shadow the
kernel's function of the same name, so plug-ins built with any PDK call these
unchanged:

- ``output_set(offset, length)``: the kernel silently ignores an offset or
  length outside memory (the output then reads as empty, which hooks and
  guards take as "go on") and accepts an offset where no block starts
  (garbage). A guest's import of it is moved to a small wasm module of
  hostwire's (``output_shim_wat``, linked as ``OUTPUT_MODULE``), which checks
  that a block starts at ``offset`` and holds ``length`` bytes, and that
  ``length`` is within ``max_output_bytes``, then hands them to the kernel's
  ``output_set``: no Python runs on a good call. Anything else calls
  ``output_refused`` (Python), which fails the call with ``PluginOutputError``.
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
from hostwire._runtime.hostfn import CallContext, check_deadline, context_of
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
    namespace: str = KERNEL_MODULE

    def to_extism(self) -> extism.Function:
        return extism.Function(
            self.namespace, self.name, list(self.params), list(self.results), _trampoline, self
        )


# The module a guest's output_set import is moved to (see plugin.py), and the
# namespace of the Python function its shim calls on a bad call (Extism links
# only its kernel's own names in extism:host/env).
OUTPUT_MODULE = "hostwire:env"
REFUSED_MODULE = "hostwire:output"


def output_shim_wat(max_output_bytes: int) -> str:
    """The module that checks a guest's ``output_set(offset, length)`` in wasm, then calls
    the kernel's; a bad call goes to ``output_refused`` instead and sets no output."""
    return f"""(module
  (import "{KERNEL_MODULE}" "output_set" (func $set (param i64 i64)))
  (import "{KERNEL_MODULE}" "length" (func $length (param i64) (result i64)))
  (import "{KERNEL_MODULE}" "alloc" (func $alloc (param i64) (result i64)))
  (import "{REFUSED_MODULE}" "output_refused" (func $refused (param i64 i64 i64)))
  (func (export "output_set") (param $offset i64) (param $size i64) (local $block i64)
    ;; No output: the kernel ignores offset 0, so an empty block of its own stands for it.
    (if (i64.eqz (i64.or (local.get $offset) (local.get $size)))
      (then (call $set (call $alloc (i64.const 1)) (i64.const 0)) (return)))
    (if (i64.gt_s (local.get $offset) (i64.const 0))
      (then (local.set $block (call $length (local.get $offset)))))
    (if (i32.or (i64.eqz (local.get $block))
                (i32.or (i64.gt_u (local.get $size) (local.get $block))
                        (i64.gt_u (local.get $size) (i64.const {max_output_bytes}))))
      (then (call $refused (local.get $offset) (local.get $size) (local.get $block)) (return)))
    (call $set (local.get $offset) (local.get $size))))
"""


def output_refused(current: Any, context: CallContext, inputs: Any, outputs: Any) -> None:
    """The shim's report of an ``output_set(offset, length)`` it refused (``block`` is the
    length of the block at ``offset``, 0 if none starts there): the call fails."""
    offset, length, block = inputs[0].v.i64, inputs[1].v.i64, inputs[2].v.i64
    if block == 0:
        check_deadline(context, "output_set")  # a stopped kernel answers 0 too
        problem = "no block of its memory starts at that offset"
    elif not 0 <= length <= block:
        problem = f"the length runs past the end of the {block}-byte block there"
    else:
        raise PluginOutputError(
            f"{context.where} returned {length} bytes, over its limit of "
            f"{context.max_output_bytes} (max_output_bytes).",
            plugin=context.plugin,
            export=context.export,
        )
    raise PluginOutputError(
        f"{context.where} called output_set({offset}, {length}), but {problem}: "
        "its output is invalid.",
        plugin=context.plugin,
        export=context.export,
    )


FUNCTIONS = (
    _KernelFunction("output_refused", (_I64, _I64, _I64), (), output_refused, REFUSED_MODULE),
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
