"""Round trip of one host call (get_states): in process vs over HTTP on loopback.

Six variants, measured from one process and interleaved in rounds so that
machine noise hits them alike:

- raw Extism echo: a bare ``extism.Plugin`` echoing the reply's bytes, the
  floor of a plug-in call;
- raw Extism host function: the same guest on a bare ``extism.Plugin`` whose
  host function (the SDK's ``extism.Function``) answers the reply's bytes, the
  floor of a host call;
- in process: a hostwire guest calls host function ``get_states``, which
  dispatches to lightcontrol in process (no socket), on the plug-in's own
  thread, as lightcontrol declares for its light operations (``caller_thread``);
- in process, hop: the same, with lightcontrol answering on its own event loop
  (the plug-in's thread hands the request over and waits);
- HTTP client: ``httpx.Client`` sends GET /states to lightcontrol served by
  ``hostwire serve`` (uvicorn) in a subprocess on 127.0.0.1;
- guest via HTTP: the same guest, its host function calling that server over
  HTTP (the way the Lago demo's Ruby host called back into its app).

Both apps log every request to a file at INFO, as ``hostwire serve`` does.
Goals: HTTP client / in process >= 5 at the median; and the platform's
overhead in process (the round trip less lightcontrol's own handling, from
the breakdown that follows the table) <= 3x the raw Extism host function.

    make bench    # or: .venv/bin/python benchmarks/bench_hostcalls.py [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "platform"))

import extism
import httpx
from extism.extism import CompiledPlugin
from starlette.types import Receive, Scope, Send

from _bench import Sampler, free_port, print_table, run_rounds, served
from hostwire import (
    AsgiTarget,
    Caller,
    HostApi,
    HostFunction,
    HttpCall,
    HttpTarget,
    Limits,
    Plugin,
    Reply,
    run_app,
)
from hostwire._runtime.hostfn import CallContext
from hostwire._runtime.module import to_binary
from lightcontrol.app import Settings, create_app

SPEC = ROOT / "openapi" / "light.yaml"
TOKEN = "bench-token"
GOAL = 5.0
OVERHEAD_GOAL = 3.0
SERVER_START_S = 20.0

KERNEL = """
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
"""
ECHO_WAT = f"""
(module
  {KERNEL}
  (memory (export "memory") 1)
  (func (export "echo") (result i32)
    (call $output_set (call $input_offset) (call $input_length))
    (i32.const 0)))
"""
# Passes its input to host function get_states and outputs what it returned.
GUEST_WAT = f"""
(module
  {KERNEL}
  (import "extism:host/user" "get_states" (func $get_states (param i64) (result i64)))
  (memory (export "memory") 1)
  (func (export "call_get_states") (result i32) (local $r i64)
    (local.set $r (call $get_states (call $input_offset)))
    (call $output_set (local.get $r) (call $length (local.get $r)))
    (i32.const 0)))
"""
OK_REPLY = b'{"status":200,'


def measure(fn: Callable[[], Any], check: Callable[[Any], bool], calls: int) -> list[float]:
    timings = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        result = fn()
        timings.append((clock() - start) / 1000)
        if not check(result):
            raise RuntimeError(f"unexpected result: {result!r:.300}")
    return timings


def ok_reply(out: bytes) -> bool:
    return out.startswith(OK_REPLY)


def sampler(fn: Callable[[], Any], check: Callable[[Any], bool]) -> Sampler:
    return lambda calls: measure(fn, check, calls)


@contextlib.contextmanager
def served_app(tmp: Path) -> Iterator[str]:
    """``hostwire serve`` in a subprocess on a free loopback port; yields its base URL."""
    port = free_port()
    executable = Path(sys.executable).with_name("hostwire")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "hostwire"]
    command += ["serve", "--host", "127.0.0.1", "--port", str(port), "--db", str(tmp / "served.db")]
    env = {**os.environ, "LIGHTCONTROL_TOKEN": TOKEN, "PYTHONPATH": str(ROOT / "platform")}
    base = f"http://127.0.0.1:{port}"
    with served(
        "the server",
        command=command,
        env=env,
        log_path=tmp / "server.log",
        ready_url=f"{base}/openapi.json",
        start_s=SERVER_START_S,
    ):
        yield base


def log_like_the_server(tmp: Path) -> None:
    # hostwire serve logs at INFO, so its access log writes a line per request;
    # the in-process app does the same here so both sides do the same work.
    handler = logging.FileHandler(tmp / "inprocess.log")
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    app_log = logging.getLogger("lightcontrol")
    app_log.setLevel(logging.INFO)
    app_log.addHandler(handler)
    app_log.propagate = False


async def noop_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return  # no lifespan of its own
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def raw_host_function_plugin(guest: bytes, reply: bytes) -> extism.Plugin:
    """The guest on a bare ``extism.Plugin``: its ``get_states`` is the SDK's own host
    function answering ``reply`` (the floor of a host call)."""

    # The SDK's lowest-level host function: wasm-level types, no inference.
    @extism.host_fn(  # type: ignore[untyped-decorator]
        name="get_states",
        namespace="extism:host/user",
        signature=([extism.ValType.I64], [extism.ValType.I64]),
    )
    def function(current: extism.CurrentPlugin, inputs: Any, outputs: Any, *_: Any) -> None:
        current.input_bytes(inputs[0])
        current.return_bytes(outputs[0], reply)

    limits = Limits()
    manifest = {
        "wasm": [{"data": guest}],
        "memory": {"max_pages": limits.max_pages},
        "timeout_ms": limits.timeout_ms,
    }
    return extism.Plugin(CompiledPlugin(manifest, functions=[function]), functions=[function])


def breakdown(
    *,
    target: AsgiTarget,
    api: HostApi,
    guest: bytes,
    reply: bytes,
    full: Sampler,
    platform_alone: Sampler,
    raw_host: Sampler,
    args: argparse.Namespace,
) -> bool:
    """Each layer of the in-process round trip (on the caller's thread) on its own,
    interleaved; returns whether the overhead goal is met."""
    handler = next(
        f.handler for f in api.host_functions("bench", ["getStates"]) if f.name == "get_states"
    )
    context = CallContext("bench", "call_get_states", Limits().max_host_calls)
    constant = Plugin(
        "const", guest, host_functions=[HostFunction("get_states", lambda c, d: reply)]
    )
    call = HttpCall("GET", "/states", operation="get_states", operation_id="getStates")
    caller = Caller("bench")
    noop = AsgiTarget(noop_app)  # only its adapter runs
    loop = asyncio.new_event_loop()

    def on_a_loop(request: Callable[[], Awaitable[Reply]]) -> Sampler:
        async def timings(calls: int) -> list[float]:
            found = []
            clock = time.perf_counter_ns
            for _ in range(calls):
                start = clock()
                answer = await request()
                found.append((clock() - start) / 1000)
                if answer.status != 200:
                    raise RuntimeError(f"the app answered {answer.status}")
            return found

        # _request is what send() runs on the caller's thread, in its own loop.
        return lambda calls: loop.run_until_complete(timings(calls))

    layers = {
        "in process (whole round trip)": full,
        "in process, a no-op app (the platform alone)": platform_alone,
        "raw Extism host function (floor)": raw_host,
        "guest calling a constant host function": sampler(
            lambda: constant.call("call_get_states", b"{}"), lambda out: out == reply
        ),
        "HostApi handler called from Python": sampler(lambda: handler(context, b"{}"), ok_reply),
        "target.send alone": sampler(lambda: target.send(call, caller), lambda r: r.status == 200),
        "_request of lightcontrol, on a loop": on_a_loop(
            lambda: target._request(call, caller, on_asyncio=True)
        ),
        "_request of a no-op ASGI app, on a loop": on_a_loop(
            lambda: noop._request(call, caller, on_asyncio=True)
        ),
    }
    try:
        stats, _ = run_rounds(
            layers, args.rounds, max(1, args.calls // args.rounds), args.max_seconds
        )
    finally:
        constant.close()
        loop.close()
    print("\nin-process breakdown, on the caller's thread (each layer alone, interleaved)")
    print_table(stats)
    median = {name: value[0] for name, value in stats.items()}
    wasm = median["guest calling a constant host function"]
    hostapi = median["HostApi handler called from Python"] - median["target.send alone"]
    adapter = median["_request of a no-op ASGI app, on a loop"]
    loop_run = median["target.send alone"] - median["_request of lightcontrol, on a loop"]
    app = median["_request of lightcontrol, on a loop"] - adapter
    parts = {
        "wasm call + trampoline (Plugin.call, constant host fn)": wasm,
        "HostApi handler: parse, validate, encode reply": hostapi,
        "running the request on this thread's loop": loop_run,
        "AsgiTarget adapter (scope, deadline, response)": adapter,
        "lightcontrol: middleware, routing, SQLite, access log": app,
    }
    for name, value in parts.items():
        print(f"  {name:<56} {value:>7.1f} µs")
    total = sum(parts.values())
    whole = median["in process (whole round trip)"]
    print(f"  {'sum':<56} {total:>7.1f} µs  (whole round trip: {whole:.1f} µs)")
    # The platform's overhead: the same round trip with an app that does nothing, so
    # that lightcontrol's own handling (and the caches it takes) is out of it.
    overhead = median["in process, a no-op app (the platform alone)"]
    floor = median["raw Extism host function (floor)"]
    ratio = overhead / floor
    print(
        f"  whole round trip - lightcontrol's part: {whole - app:.1f} µs"
        " (the whole costs more than its parts measured alone)"
    )
    print(
        f"platform overhead (round trip to a no-op app): {overhead:.1f} µs"
        f" = {ratio:.2f} x the raw Extism host function ({floor:.1f} µs)"
        f"  (goal <= {OVERHEAD_GOAL:g})"
    )
    met = ratio <= OVERHEAD_GOAL
    print("goal met" if met else "goal missed")
    return met


def report(stats: dict[str, tuple[float, float]]) -> None:
    print_table(stats)
    local = stats["in process"][0]
    http_ratio = stats["HTTP client"][0] / local
    guest_ratio = stats["guest via HTTP"][0] / local
    hop_ratio = stats["HTTP client"][0] / stats["in process, hop to the app's loop"][0]
    floor = stats["raw extism echo"][0]
    print(f"HTTP client / in process at the median:    {http_ratio:6.2f}  (goal >= {GOAL:g})")
    print(f"guest via HTTP / in process at the median: {guest_ratio:6.2f}  (goal >= {GOAL:g})")
    print(f"HTTP client / in process with the hop:     {hop_ratio:6.2f}")
    print(f"in process / raw extism at the median:     {local / floor:6.2f}  (platform cost)")
    print("goal met" if http_ratio >= GOAL else "goal missed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per variant")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--max-seconds", type=float, default=60.0, help="stop after the round that passes this"
    )
    parser.add_argument("--no-breakdown", action="store_true", help="skip the in-process breakdown")
    args = parser.parse_args()
    per_round = max(1, args.calls // args.rounds)

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-hostcalls-")))
        log_like_the_server(tmp)
        base = stack.enter_context(served_app(tmp))
        # As lightcontrol declares: its light operations run on the caller's thread.
        app = create_app(Settings(db_path=str(tmp / "inprocess.db"), token=TOKEN))
        target = stack.enter_context(run_app(app))
        if not target.runs_on_caller_thread(
            HttpCall("GET", "/states", operation="get_states", operation_id="getStates")
        ):
            raise RuntimeError("lightcontrol no longer runs getStates on the caller's thread")
        hop_app = create_app(Settings(db_path=str(tmp / "hop.db"), token=TOKEN))
        hop_target = stack.enter_context(run_app(hop_app, caller_thread=()))

        guest = to_binary(GUEST_WAT.encode(), "guest.wat")
        local_api = HostApi(SPEC, target)
        in_process = stack.enter_context(
            Plugin("bench", guest, host_functions=local_api.host_functions("bench", ["getStates"]))
        )
        hop_api = HostApi(SPEC, hop_target)
        hopping = stack.enter_context(
            Plugin("bench", guest, host_functions=hop_api.host_functions("bench", ["getStates"]))
        )
        remote_api = HostApi(SPEC, HttpTarget(base))
        stack.callback(remote_api.close)
        via_http = stack.enter_context(
            Plugin(
                "bench",
                guest,
                host_functions=remote_api.host_functions("bench", ["getStates"], token=TOKEN),
            )
        )
        client = stack.enter_context(httpx.Client(base_url=base, trust_env=False))
        auth = {"Authorization": f"Bearer {TOKEN}"}

        reply = in_process.call("call_get_states", b"{}")
        if not ok_reply(reply) or not ok_reply(hopping.call("call_get_states", b"{}")):
            raise RuntimeError(f"in-process get_states failed: {reply!r}")
        limits = Limits()
        raw = extism.Plugin(
            CompiledPlugin(
                {
                    "wasm": [{"data": to_binary(ECHO_WAT.encode(), "echo.wat")}],
                    "memory": {"max_pages": limits.max_pages},
                    "timeout_ms": limits.timeout_ms,
                },
                functions=[],
            ),
            functions=[],
        )
        raw_guest = raw_host_function_plugin(guest, reply)

        full = sampler(lambda: in_process.call("call_get_states", b"{}"), ok_reply)
        raw_host = sampler(
            lambda: raw_guest.call("call_get_states", b"{}"), lambda out: out == reply
        )
        variants = {
            "raw extism echo": sampler(lambda: raw.call("echo", reply), lambda out: out == reply),
            "raw extism host function": raw_host,
            "in process": full,
            "in process, hop to the app's loop": sampler(
                lambda: hopping.call("call_get_states", b"{}"), ok_reply
            ),
            "HTTP client": sampler(
                lambda: client.get("/states", headers=auth), lambda r: r.status_code == 200
            ),
            "guest via HTTP": sampler(lambda: via_http.call("call_get_states", b"{}"), ok_reply),
        }
        stats, rounds = run_rounds(variants, args.rounds, per_round, args.max_seconds)
        print(
            f"get_states round trip, {per_round * rounds} calls each, {rounds} interleaved rounds"
            f" ({len(reply)}-byte reply)"
        )
        report(stats)
        if not args.no_breakdown:
            noop_target = stack.enter_context(run_app(noop_app, caller_thread={"*"}))
            noop_api = HostApi(SPEC, noop_target)
            alone = stack.enter_context(
                Plugin(
                    "bench", guest, host_functions=noop_api.host_functions("bench", ["getStates"])
                )
            )
            breakdown(
                target=target,
                api=local_api,
                guest=guest,
                reply=reply,
                full=full,
                platform_alone=sampler(lambda: alone.call("call_get_states", b"{}"), ok_reply),
                raw_host=raw_host,
                args=args,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
