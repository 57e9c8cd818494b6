"""Event-handler test plug-ins and outbox helpers shared by the event tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import wat
from conftest import compile_wat
from hostwire import CallContext, HostFunction, Limits, Outbox, Plugin, new_envelope

LIGHT = {
    "id": "default",
    "name": "Default light",
    "status": "on",
    "color": "white",
    "brightness": 100,
    "created_at": "2026-11-21T20:00:00.000Z",
    "updated_at": "2026-11-21T23:00:00.000Z",
    "revision": 2,
}


class Recorder:
    """Host function ``note``: remembers every envelope a handler received."""

    def __init__(self, fail_first: int = 0) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def host_function(self) -> HostFunction:
        def note(context: CallContext, data: bytes) -> bytes:
            with self.lock:
                self.seen.append((context.plugin, json.loads(data)))
                if len(self.seen) <= self.fail_first:
                    raise RuntimeError("the handler's downstream is not ready")
            return b"{}"

        return HostFunction("note", note)

    def ids(self) -> list[str]:
        with self.lock:
            return [envelope["id"] for _, envelope in self.seen]


def handler(
    name: str,
    recorder: Recorder,
    *,
    answer: Any = None,
    trap: bool = False,
    exports: tuple[str, ...] = ("light_before_save",),
) -> Plugin:
    config: dict[str, object] = {}
    if answer is not None:
        config["answer"] = answer if isinstance(answer, str) else json.dumps(answer)
    if trap:
        config["trap"] = "yes"
    return Plugin(
        name,
        compile_wat(wat.event_handler(*exports)),
        config=config,
        host_functions=[recorder.host_function()],
        limits=Limits(timeout_ms=2000),
    )


class Gate:
    """Host function ``note`` that blocks each delivery until the test lets it go."""

    def __init__(self, parties: int = 0) -> None:
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = False
        self.barrier = threading.Barrier(parties, timeout=10) if parties else None

    def host_function(self) -> HostFunction:
        def note(context: CallContext, data: bytes) -> bytes:
            envelope = json.loads(data)
            first = False
            with self.lock:
                first = not any(
                    e["data"]["record"]["id"] == envelope["data"]["record"]["id"] for e in self.seen
                )
                self.seen.append(envelope)
            self.entered.set()
            if self.barrier is not None and first:
                self.barrier.wait()  # the first events of every record are in flight together
            elif self.barrier is None:
                assert self.release.wait(30), "the test never released the delivery"
                if self.fail:
                    raise RuntimeError("the app went away under the handler")
            return b"{}"

        return HostFunction("note", note)


def gated_handler(gate: Gate) -> Plugin:
    return Plugin(
        "gated",
        compile_wat(wat.event_handler("light_after_update")),
        host_functions=[gate.host_function()],
        limits=Limits(timeout_ms=60_000),
    )


TARGET = [("gated", "light_after_update")]


def write_event(outbox: Outbox, subject: str, targets: list[tuple[str, str]], **fields: Any) -> str:
    """Commit one ``light.after_update`` event for ``targets``, as an app would; its id."""
    envelope = new_envelope("light", "after_update", {**LIGHT, **fields}, LIGHT, {})
    with outbox.engine.begin() as conn:
        Outbox.add(conn, envelope, subject=subject, targets=targets)
    outbox.notify()
    event_id: str = envelope["id"]
    return event_id


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)  # polling a condition, not timing anything


def states(outbox: Outbox, plugin: str) -> list[str]:
    """The plug-in's delivery states, oldest first."""
    return [d["state"] for d in reversed(outbox.deliveries(plugin=plugin))]
