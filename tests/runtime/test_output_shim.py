"""output_set is checked in wasm: the guest's import is moved to hostwire's shim, which
hands good calls to Extism's kernel and reports bad ones (tests of the bad ones:
test_runtime_limits.py). Here: the limits at their edges, and the import rewrite itself."""

from __future__ import annotations

import pytest

from conftest import compile_wat
from hostwire import Limits, Plugin, PluginOutputError
from hostwire._runtime.module import inspect_module, rename_imports

# Outputs the first N bytes of its input, N given by the export; "twice" sets an
# output, then output_set(0, 0), which leaves no output.
SIZED = """
(module
  (import "env" "table" (table 1 funcref))
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "env" "memory_base" (global i32))
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (memory (export "memory") 1)
  (func (export "all") (result i32)
    (call $output_set (call $input_offset) (call $input_length))
    (i32.const 0))
  (func (export "twice") (result i32)
    (call $output_set (call $input_offset) (call $input_length))
    (call $output_set (i64.const 0) (i64.const 0))
    (i32.const 0)))
"""


def _loadable(text: str) -> bytes:
    # Extism cannot provide the env imports: those are only for the rewrite test.
    return compile_wat(
        text.replace('  (import "env" "table" (table 1 funcref))\n', "").replace(
            '  (import "env" "memory_base" (global i32))\n', ""
        )
    )


def test_an_output_of_exactly_max_output_bytes_passes_and_one_more_byte_fails() -> None:
    with Plugin("sized", _loadable(SIZED), limits=Limits(max_output_bytes=1000)) as plugin:
        assert plugin.call("all", b"x" * 1000) == b"x" * 1000
        with pytest.raises(PluginOutputError, match="returned 1001 bytes, over its limit of 1000"):
            plugin.call("all", b"x" * 1001)
        assert plugin.call("all", b"after") == b"after"  # a fresh instance answers


def test_output_set_of_nothing_after_an_output_leaves_no_output() -> None:
    with Plugin("sized", _loadable(SIZED)) as plugin:
        assert plugin.call("twice", b"dropped") == b""
        assert plugin.call("all", b"") == b""


def test_the_rewrite_moves_only_output_set_and_keeps_every_other_import() -> None:
    wasm = compile_wat(SIZED)
    moved = rename_imports(wasm, {("extism:host/env", "output_set"): "hostwire:env"})
    before, after = inspect_module(wasm), inspect_module(moved)
    assert [(i.module, i.name, i.kind, i.signature) for i in after.imports] == [
        ("hostwire:env" if i.name == "output_set" else i.module, i.name, i.kind, i.signature)
        for i in before.imports
    ]
    assert after.exports == before.exports
    assert len(moved) == len(wasm) + len("hostwire:env") - len("extism:host/env")
    # Nothing to move: the very same bytes.
    assert rename_imports(wasm, {("extism:host/env", "missing"): "x"}) is wasm
    with pytest.raises(ValueError, match="not a binary WebAssembly module"):
        rename_imports(b"(module)", {})
