"""Lifecycle events: after_update delivery latency, and the cost of before_save hooks.

(a) Latency from ``LightStore.update`` to a plug-in's ``light_after_update``
handler having run, two variants interleaved in rounds:

- in process: lightcontrol's own wiring (hostwire's ``ModelTracker`` on ``Light``, an ``EventBus``
  with openapi/light.yaml, which checks each envelope against its webhook,
  and the durable ``Outbox``, its worker woken when the change commits). The
  handler passes the envelope to host function ``done``, which parses it and
  takes the time;
- webhook: the same event (made and checked by the same bus's ``envelope``,
  captured by an after_update observer) signed per Standard Webhooks (webhook-id, webhook-timestamp,
  webhook-signature "v1,<base64 HMAC-SHA256>") and POSTed by ``httpx.Client``
  (keep-alive) to a Starlette receiver served by uvicorn in a subprocess on
  127.0.0.1. The receiver checks the timestamp and signature, parses the JSON
  and takes the time, which it sends back.

t0 is taken just before ``update``; t1 where the handler ran: both sides read
``time.perf_counter_ns``, which on Linux is CLOCK_MONOTONIC, one clock for
every process, so the receiver's t1 compares with the sender's t0 without the
response's trip back. Both variants include the same kind of SQLite write and
commit; the latency from the commit (a store's first after_commit hook) to t1,
the delivery alone, is shown too. The webhook side is favoured: it is sent
inline right after the commit, with no durable queue and no worker thread, and
its receiver logs nothing. Goal: webhook / in process >= 10 at the median,
from the update call.

(b) Cost of ``update`` with 0, 1 and 3 plug-ins exporting ``light_before_save``
(answering ``{}``), wired as lightcontrol does (the bus validates envelopes
against the webhooks of openapi/light.yaml), against a raw Extism
``plugin.call`` of the same export with the same kind of envelope. Per hook:
(save with k - save with 0) / k. Goal: per hook / raw call <= 1.5 at the median.

Databases live on /dev/shm when there is one: every commit fsyncs
(synchronous=FULL), and on a disk that fsync dwarfs and blurs what is measured
here; on tmpfs it costs next to nothing. A breakdown of one hook follows.

    make bench    # or: .venv/bin/python benchmarks/bench_events.py [--updates N] [--saves N]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "platform"))

import extism
import httpx
import uvicorn
from extism.extism import CompiledPlugin
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from _bench import Sampler, free_port, print_table, run_rounds, served, summary
from hostwire import (
    CallContext,
    EventBus,
    HostFunction,
    Limits,
    Outbox,
    Plugin,
    Subscriber,
    load_openapi,
    new_envelope,
)
from hostwire._events import EventSink, ModelTracker, encode_event
from hostwire._runtime.module import to_binary
from lightcontrol.store import DEFAULT_LIGHT_ID, Change, Light, LightStore

SPEC = ROOT / "openapi" / "light.yaml"
LATENCY_GOAL = 10.0
HOOK_GOAL = 1.5
SERVER_START_S = 20.0
ARRIVAL_TIMEOUT_S = 10.0
TOLERANCE_S = 300  # Standard Webhooks' suggested timestamp tolerance
SECRET_ENV = "BENCH_EVENTS_SECRET"
EXPORT = "light_before_save"
HOOK_COUNTS = (0, 1, 3)

KERNEL = """
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
"""
# Hands its input, the envelope, to host function done.
AFTER_WAT = f"""
(module
  {KERNEL}
  (import "extism:host/user" "done" (func $done (param i64) (result i64)))
  (memory (export "memory") 1)
  (func (export "light_after_update") (result i32)
    (drop (call $done (call $input_offset)))
    (i32.const 0)))
"""
# Answers {} (go on unchanged).
BEFORE_WAT = f"""
(module
  {KERNEL}
  (memory (export "memory") 1)
  (func (export "light_before_save") (result i32) (local $out i64)
    (local.set $out (call $alloc (i64.const 2)))
    (call $store_u8 (local.get $out) (i32.const 123))
    (call $store_u8 (i64.add (local.get $out) (i64.const 1)) (i32.const 125))
    (call $output_set (local.get $out) (i64.const 2))
    (i32.const 0)))
"""

# n -> n latencies in µs, (from the update call, from the commit)
Latencies = Callable[[int], list[tuple[float, float]]]


# -- Standard Webhooks -------------------------------------------------------------


def signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(key: bytes, msg_id: str, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature(key, msg_id, timestamp, body),
    }


def receiver_app(key: bytes) -> Starlette:
    """The webhook receiver: verify, parse, note the time it ran."""

    async def webhook(request: Request) -> Response:
        body = await request.body()
        msg_id = request.headers.get("webhook-id", "")
        timestamp = request.headers.get("webhook-timestamp", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_S:
            return JSONResponse({"error": "bad timestamp"}, 400)
        expected = signature(key, msg_id, timestamp, body)
        offered = request.headers.get("webhook-signature", "").split()
        if not any(hmac.compare_digest(expected, s) for s in offered):
            return JSONResponse({"error": "bad signature"}, 401)
        event = json.loads(body)
        t1 = time.perf_counter_ns()
        brightness = event["data"]["record"]["brightness"]
        return JSONResponse({"t1_ns": t1, "id": event["id"], "brightness": brightness})

    async def ready(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(routes=[Route("/webhook", webhook, methods=["POST"]), Route("/ready", ready)])


def run_receiver(port: int) -> int:
    key = base64.b64decode(os.environ[SECRET_ENV])
    uvicorn.run(receiver_app(key), host="127.0.0.1", port=port, log_level="warning")
    return 0


@contextlib.contextmanager
def served_receiver(tmp: Path, key: bytes) -> Iterator[str]:
    """The receiver in a subprocess on a free loopback port; yields its base URL."""
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--receiver-port", str(port)]
    env = {**os.environ, SECRET_ENV: base64.b64encode(key).decode()}
    base = f"http://127.0.0.1:{port}"
    with served(
        "the receiver",
        command=command,
        env=env,
        log_path=tmp / "receiver.log",
        ready_url=f"{base}/ready",
        start_s=SERVER_START_S,
    ):
        yield base


# -- measuring ---------------------------------------------------------------------


def timed(fn: Callable[[], Any], check: Callable[[Any], bool]) -> Sampler:
    def sample(calls: int) -> list[float]:
        timings = []
        clock = time.perf_counter_ns
        for _ in range(calls):
            start = clock()
            result = fn()
            timings.append((clock() - start) / 1000)
            if not check(result):
                raise RuntimeError(f"unexpected result: {result!r:.300}")
        return timings

    return sample


def raw_extism(wasm: bytes) -> extism.Plugin:
    limits = Limits()
    compiled = CompiledPlugin(
        {
            "wasm": [{"data": wasm}],
            "memory": {"max_pages": limits.max_pages},
            "timeout_ms": limits.timeout_ms,
        },
        functions=[],
    )
    return extism.Plugin(compiled, functions=[])


# One tracker for the Light class (its listeners are the class's, not a store's):
# each variant binds it to its own bus and outbox before it runs (untimed).
TRACKER = ModelTracker()
TRACKER.track(Light, name="light", schema="Light")


def bound(sample: Callable[[int], Any], bus: EventBus, outbox: EventSink | None) -> Any:
    def run(calls: int) -> Any:
        TRACKER.bind(bus, outbox)
        return sample(calls)

    return run


def brightness_values() -> Iterator[int]:
    return itertools.cycle(range(101))  # each update changes the light


# -- (a) after_update latency -------------------------------------------------------


class Arrival:
    """Where a handler reports in: when it ran and what it saw."""

    def __init__(self) -> None:
        self.ran = threading.Event()
        self.t1_ns = 0
        self.brightness: int | None = None

    def host_function(self) -> HostFunction:
        def done(context: CallContext, data: bytes) -> bytes:
            event = json.loads(data)
            self.t1_ns = time.perf_counter_ns()
            self.brightness = event["data"]["record"]["brightness"]
            self.ran.set()
            return b"{}"

        return HostFunction("done", done)


class CommitClock:
    """A store's first after_commit hook: when its last write committed."""

    def __init__(self, store: LightStore) -> None:
        self.t_ns = 0
        store.after_commit.insert(0, self.mark)

    def mark(self) -> None:
        self.t_ns = time.perf_counter_ns()


def in_process_latency(store: LightStore, outbox: Outbox, arrival: Arrival) -> Latencies:
    values = brightness_values()
    committed = CommitClock(store)

    def idle() -> bool:
        return not outbox.summary()  # only plug-ins with undelivered events are listed

    def sample(calls: int) -> list[tuple[float, float]]:
        found = []
        for _ in range(calls):
            value = next(values)
            arrival.ran.clear()
            t0 = time.perf_counter_ns()
            store.update(DEFAULT_LIGHT_ID, {"brightness": value})
            if not arrival.ran.wait(ARRIVAL_TIMEOUT_S):
                raise RuntimeError(f"after_update did not run within {ARRIVAL_TIMEOUT_S:g} s")
            t1 = arrival.t1_ns
            found.append(((t1 - t0) / 1000, (t1 - committed.t_ns) / 1000))
            if arrival.brightness != value:
                raise RuntimeError(f"the handler saw brightness {arrival.brightness}, not {value}")
            # Let the worker mark the delivery before the next write (untimed).
            deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
            while not idle():
                if time.monotonic() > deadline:
                    raise RuntimeError("the delivery was not marked delivered")
                time.sleep(0.0001)
        return found

    return sample


class WebhookSender:
    """Captures after_update envelopes and POSTs them, signed, once the write commits."""

    def __init__(self, bus: EventBus, client: httpx.Client, key: bytes) -> None:
        self.bus = bus
        self.client = client
        self.key = key
        self.pending: dict[str, Any] | None = None
        self.answer: dict[str, Any] = {}

    def attach(self, store: LightStore) -> None:
        store.observers.append(self.observe)
        store.after_commit.append(self.send)

    def observe(self, change: Change) -> None:
        if change.step == "after_update" and change.connection is not None:
            self.pending = self.bus.envelope(
                "light", change.step, change.record, change.previous, change.changes
            )

    def send(self) -> None:
        envelope, self.pending = self.pending, None
        if envelope is None:
            return
        body = json.dumps(envelope, separators=(",", ":")).encode()
        response = self.client.post(
            "/webhook", content=body, headers=signed_headers(self.key, envelope["id"], body)
        )
        if response.status_code != 200:
            raise RuntimeError(f"the receiver answered {response.status_code}: {response.text}")
        self.answer = response.json()
        if self.answer["id"] != envelope["id"]:
            raise RuntimeError("the receiver saw another event")


def webhook_latency(store: LightStore, sender: WebhookSender) -> Latencies:
    values = brightness_values()
    committed = CommitClock(store)

    def sample(calls: int) -> list[tuple[float, float]]:
        found = []
        for _ in range(calls):
            value = next(values)
            sender.answer = {}
            t0 = time.perf_counter_ns()
            store.update(DEFAULT_LIGHT_ID, {"brightness": value})
            t1 = sender.answer["t1_ns"]
            found.append(((t1 - t0) / 1000, (t1 - committed.t_ns) / 1000))
            if sender.answer["brightness"] != value:
                raise RuntimeError(f"the receiver saw {sender.answer['brightness']}, not {value}")
        return found

    return sample


def update_alone(store: LightStore) -> Latencies:
    """The same update with no plug-in and no event: the SQLite write both variants make."""
    values = brightness_values()

    def sample(calls: int) -> list[tuple[float, float]]:
        found = []
        for _ in range(calls):
            value = next(values)
            t0 = time.perf_counter_ns()
            store.update(DEFAULT_LIGHT_ID, {"brightness": value})
            found.append(((time.perf_counter_ns() - t0) / 1000, 0.0))
        return found

    return sample


def bench_latency(tmp: Path, stack: contextlib.ExitStack, args: argparse.Namespace) -> bool:
    arrival = Arrival()
    wasm = to_binary(AFTER_WAT.encode(), "after.wat")
    plugin = stack.enter_context(Plugin("after", wasm, host_functions=[arrival.host_function()]))
    store = LightStore(tmp / "after.db")
    stack.callback(store.close)
    outbox = Outbox(store.engine)
    spec = load_openapi(SPEC)
    bus = EventBus([Subscriber(plugin)], spec=spec)
    outbox.start([plugin])
    stack.callback(outbox.stop)

    key = secrets.token_bytes(32)
    base = stack.enter_context(served_receiver(tmp, key))
    client = stack.enter_context(httpx.Client(base_url=base, trust_env=False))
    hooked = LightStore(tmp / "webhook.db")
    stack.callback(hooked.close)
    sender = WebhookSender(EventBus([], spec=spec), client, key)
    sender.attach(hooked)

    alone = LightStore(tmp / "alone.db")
    stack.callback(alone.close)

    variants = {
        "in process": bound(in_process_latency(store, outbox, arrival), bus, outbox),
        "webhook": bound(webhook_latency(hooked, sender), sender.bus, None),
        "update alone": bound(update_alone(alone), sender.bus, None),
    }
    per_round = max(1, args.updates // args.rounds)
    for sample in variants.values():  # warm up
        sample(max(50, per_round // 3))
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    deadline = time.monotonic() + args.max_seconds
    rounds = 0
    while rounds < args.rounds and (rounds == 0 or time.monotonic() < deadline):
        for name, sample in variants.items():
            samples[name].extend(sample(per_round))
        rounds += 1
    write = summary([v[0] for v in samples.pop("update alone")])
    stats = {}
    for start, column in (("update call", 0), ("commit", 1)):
        for name, values in samples.items():
            stats[f"{name}, from {start}"] = summary([v[column] for v in values])
    stats["update alone (no plug-in, no event)"] = write
    print(
        f"(a) update -> after_update handler ran, {per_round * rounds} updates each,"
        f" {rounds} interleaved rounds"
    )
    print_table(stats)
    ratio = stats["webhook, from update call"][0] / stats["in process, from update call"][0]
    delivery = stats["webhook, from commit"][0] / stats["in process, from commit"][0]
    print(f"webhook / in process at the median:       {ratio:6.2f}  (goal >= {LATENCY_GOAL:g})")
    print(f"  the same from the commit (delivery only): {delivery:6.2f}")
    # What bounds the first ratio: the update itself, in both variants.
    best = stats["webhook, from update call"][0] / write[0]
    print(f"  webhook / update alone (the ratio if delivery and events cost nothing): {best:6.2f}")
    met = ratio >= LATENCY_GOAL
    print("goal met" if met else "goal missed")
    return met


# -- (b) before_save hooks ----------------------------------------------------------


def saving(store: LightStore) -> Sampler:
    values = brightness_values()
    return timed(
        lambda: store.update(DEFAULT_LIGHT_ID, {"brightness": next(values)}),
        lambda light: isinstance(light, dict),
    )


def bench_hooks(tmp: Path, stack: contextlib.ExitStack, args: argparse.Namespace) -> bool:
    wasm = to_binary(BEFORE_WAT.encode(), "before.wat")
    spec = load_openapi(SPEC)
    stores: dict[int, LightStore] = {}
    buses: dict[int, tuple[EventBus, Outbox]] = {}
    for count in HOOK_COUNTS:
        plugins = [stack.enter_context(Plugin(f"before-{count}-{i}", wasm)) for i in range(count)]
        store = LightStore(tmp / f"save{count}.db")
        stack.callback(store.close)
        bus = EventBus([Subscriber(p) for p in plugins], spec=spec)
        buses[count] = (bus, Outbox(store.engine))
        stores[count] = store

    # A real before_save envelope, as the bus would send it.
    seen: list[Change] = []
    stores[0].observers.append(lambda c: seen.append(c) if c.step == "before_save" else None)
    TRACKER.bind(*buses[0])
    stores[0].update(DEFAULT_LIGHT_ID, {"brightness": 42})
    stores[0].observers.pop()
    change = seen[-1]
    envelope = new_envelope("light", "before_save", change.record, change.previous, change.changes)
    payload = json.dumps(envelope, separators=(",", ":")).encode()
    raw = raw_extism(wasm)
    hosted = stack.enter_context(Plugin("hosted", wasm))

    def answers_go_on(out: bytes) -> bool:
        return out == b"{}"

    def raw_after_update(calls: int) -> list[float]:
        """The raw call right after an update (untimed): caches as a hook finds them."""
        values = brightness_values()
        timings = []
        clock = time.perf_counter_ns
        for _ in range(calls):
            stores[0].update(DEFAULT_LIGHT_ID, {"brightness": next(values)})
            start = clock()
            out = raw.call(EXPORT, payload)
            timings.append((clock() - start) / 1000)
            if not answers_go_on(out):
                raise RuntimeError(f"unexpected result: {out!r:.300}")
        return timings

    variants = {
        "raw Extism plugin.call": timed(lambda: raw.call(EXPORT, payload), answers_go_on),
        "raw plugin.call right after an update": bound(raw_after_update, *buses[0]),
        "hostwire Plugin.call": timed(lambda: hosted.call(EXPORT, payload), answers_go_on),
        **{
            f"save, {count} before_save hooks": bound(saving(stores[count]), *buses[count])
            for count in HOOK_COUNTS
        },
    }
    per_round = max(1, args.saves // args.rounds)
    stats, rounds = run_rounds(variants, args.rounds, per_round, args.max_seconds)
    print(
        f"\n(b) LightStore.update with before_save hooks, {per_round * rounds} calls each,"
        f" {rounds} interleaved rounds ({len(payload)}-byte envelope)"
    )
    print_table(stats)
    floor = stats["raw Extism plugin.call"][0]
    base = stats[f"save, {HOOK_COUNTS[0]} before_save hooks"][0]
    met = True
    for count in HOOK_COUNTS[1:]:
        per_hook = (stats[f"save, {count} before_save hooks"][0] - base) / count
        ratio = per_hook / floor
        met = met and ratio <= HOOK_GOAL
        print(
            f"per hook with {count}: {per_hook:7.1f} µs = {ratio:5.2f} x raw call"
            f"  (goal <= {HOOK_GOAL:g})"
        )
    print("goal met" if met else "goal missed")
    cold = stats["raw plugin.call right after an update"][0]
    for count in HOOK_COUNTS[1:]:
        per_hook = (stats[f"save, {count} before_save hooks"][0] - base) / count
        print(
            f"  per hook with {count} / raw call right after an update (the same caches):"
            f" {per_hook / cold:5.2f}"
        )
    if not args.no_breakdown:
        hook_breakdown(spec, wasm, change, payload, args)
    return met


def hook_breakdown(
    spec: Any, wasm: bytes, change: Change, payload: bytes, args: argparse.Namespace
) -> None:
    """What one hook costs, layer by layer, interleaved."""
    with contextlib.ExitStack() as stack:
        plugin = stack.enter_context(Plugin("breakdown", wasm))
        checked = EventBus([Subscriber(plugin)], spec=spec)
        unchecked = EventBus([Subscriber(plugin)])
        envelope = new_envelope(
            "light", "before_save", change.record, change.previous, change.changes
        )
        checked.problems(envelope)  # compile the schema once, as the app's bus does
        raw = raw_extism(wasm)
        record = change.record

        def before(bus: EventBus) -> Callable[[], Any]:
            return lambda: bus.before(
                "light", "before_save", record, change.previous, change.changes
            )

        def is_record(out: Any) -> bool:
            return out is record

        def anything(out: Any) -> bool:
            return True

        names = (f"light {n}" for n in itertools.count())

        def fresh_envelope() -> Any:  # a record the bus has not seen
            return checked.envelope(
                "light",
                "before_save",
                {**record, "name": next(names)},
                change.previous,
                change.changes,
            )

        layers: dict[str, Sampler] = {
            "raw Extism plugin.call": timed(lambda: raw.call(EXPORT, payload), anything),
            "hostwire Plugin.call": timed(lambda: plugin.call(EXPORT, payload), anything),
            "EventBus.before, spec (as the app)": timed(before(checked), is_record),
            "EventBus.before, no spec": timed(before(unchecked), is_record),
            "new_envelope": timed(
                lambda: new_envelope(
                    "light", "before_save", record, change.previous, change.changes
                ),
                anything,
            ),
            "bus.envelope, record seen (the tracker's)": timed(
                lambda: checked.envelope(
                    "light", "before_save", record, change.previous, change.changes
                ),
                anything,
            ),
            "bus.envelope, record not seen": timed(fresh_envelope, anything),
            "whole envelope check (bus.problems)": timed(
                lambda: checked.problems(envelope), lambda found: not found
            ),
            "encode_event(envelope)": timed(lambda: encode_event(envelope), anything),
            "json.dumps(envelope).encode()": timed(
                lambda: json.dumps(envelope, separators=(",", ":")).encode(), anything
            ),
            "json.loads(b'{}')": timed(lambda: json.loads(b"{}"), anything),
        }
        stats, _ = run_rounds(layers, args.rounds, max(1, args.saves // args.rounds), 60.0)
    print("\none before_save hook, layer by layer (interleaved)")
    print_table(stats)
    median = {name: value[0] for name, value in stats.items()}
    parts = {
        "wasm call (raw Extism plugin.call)": median["raw Extism plugin.call"],
        "hostwire Plugin.call over raw": median["hostwire Plugin.call"]
        - median["raw Extism plugin.call"],
        "bus.envelope: make, check by parts (record seen)": median[
            "bus.envelope, record seen (the tracker's)"
        ],
        "encode_event (orjson)": median["encode_event(envelope)"],
    }
    for name, value in parts.items():
        print(f"  {name:<44} {value:>7.1f} µs")
    total = sum(parts.values())
    whole = median["EventBus.before, spec (as the app)"]
    print(f"  {'sum':<44} {total:>7.1f} µs  (EventBus.before: {whole:.1f} µs)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=2000, help="updates per variant in (a)")
    parser.add_argument("--saves", type=int, default=20_000, help="calls per variant in (b)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--max-seconds", type=float, default=60.0, help="per part: stop after the round past this"
    )
    parser.add_argument("--no-breakdown", action="store_true", help="skip the hook breakdown")
    parser.add_argument("--receiver-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver_port is not None:
        return run_receiver(args.receiver_port)

    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with contextlib.ExitStack() as stack:
        tmp = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-events-", dir=where))
        )
        print(f"databases in {tmp} (synchronous=FULL commits)\n")
        bench_latency(tmp, stack, args)
    with contextlib.ExitStack() as stack:
        tmp = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-events-", dir=where))
        )
        bench_hooks(tmp, stack, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
