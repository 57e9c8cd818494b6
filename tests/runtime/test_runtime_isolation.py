"""One call of a plug-in that is stopped (timeout_ms, cancel) never stops another.

Extism stops a call by bumping its engine's epoch, which interrupts every store
of that engine; hostwire gives each pooled instance an engine of its own.
"""

from __future__ import annotations

import threading
from typing import Any

from conftest import compile_wat
from hostwire import CallContext, HostFunction, Limits, Plugin, PluginError

# "spin" says it has started, then loops for ever; "work" waits in a host
# function, then runs a little wasm and returns 1.
MODULE = """
(module
  (import "extism:host/user" "started" (func $started (param i64) (result i64)))
  (import "extism:host/user" "wait" (func $wait (param i64) (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (func (export "spin") (result i32)
    (drop (call $started (i64.const 0)))
    (loop $l (br $l))
    (i32.const 0))
  (func (export "work") (result i32) (local $i i32)
    (drop (call $wait (i64.const 0)))
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))
    (i32.const 0)))
"""


def test_stopping_one_call_leaves_a_concurrent_call_running() -> None:
    # Cancelling and timeout_ms both stop a call through the engine's epoch;
    # the cancel can be timed exactly, so it stands for both here.
    started, spin_over, release = threading.Event(), threading.Event(), threading.Event()

    def on_started(context: CallContext, data: bytes) -> bytes:
        started.set()
        return b"{}"

    def on_wait(context: CallContext, data: bytes) -> bytes:
        release.wait(10)
        return b"{}"

    plugin = Plugin(
        "pair",
        compile_wat(MODULE),
        limits=Limits(timeout_ms=60_000),
        host_functions=[HostFunction("started", on_started), HostFunction("wait", on_wait)],
    )
    instances: list[Any] = []
    new_instance = plugin._new_instance

    def recording(*args: Any) -> Any:
        instance = new_instance(*args)
        instances.append(instance)
        return instance

    plugin._new_instance = recording  # type: ignore[method-assign,assignment]
    results: dict[str, object] = {}

    def run(export: str) -> None:
        try:
            results[export] = plugin.call(export)
        except Exception as exc:
            results[export] = exc
        finally:
            if export == "spin":
                spin_over.set()

    with plugin:
        work = threading.Thread(target=run, args=("work",))
        work.start()  # the idle instance: it now waits in its host function
        spin = threading.Thread(target=run, args=("spin",))
        spin.start()  # a new instance
        assert started.wait(10)
        (spinning,) = [i for i in instances if i.context.export == "spin"]
        spinning.plugin.cancel_handle().cancel()
        assert spin_over.wait(10)
        release.set()  # "work" goes back into wasm after "spin" was stopped
        work.join(10)
        spin.join(10)
    assert isinstance(results["spin"], PluginError)
    assert results["work"] == b""
