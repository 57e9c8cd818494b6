"""``hostwire gateway`` against a plain webhook receiver: latency and throughput.

Two servers, each this script in a subprocess under uvicorn on a free
127.0.0.1 port, both receiving the same kind of request: Lago's
``invoice.created`` body (tests/gateway/invoice_created.json, a fresh
``invoice.lago_id`` each time) signed per Standard Webhooks with a fresh
``webhook-id`` and the current timestamp:

- gateway: ``Gateway`` on tests/documents/lago/openapi.yaml (its 61 webhooks),
  as ``hostwire gateway`` serves it (its uvicorn configuration, INFO logging of
  one line per webhook to a file, its lifespan running delivery), with one
  plug-in exporting ``invoice_created`` (WAT, answers at once) and an SQLite
  file outbox on disk (WAL, synchronous=NORMAL, as the gateway makes it). A
  receipt is: signature and timestamp check (``standardwebhooks``), strict
  JSON, the event type, the webhook's schema, one committed transaction with
  the event and its delivery row, then 202; a delivery worker, woken by the
  commit, calls the plug-in;
- gateway, no delivery (in (b) only): the same, served without its lifespan,
  so events are recorded and never delivered: the receipt's cost alone;
- plain: a minimal Starlette route that verifies the signature with the same
  library (``Webhook.verify``, which parses the JSON too) and then "starts the
  handler"; it answers 200 and logs nothing. Nothing is durable: a crash after
  the answer loses the event, and a retry runs the handler twice.

(a) Latency, webhook receipt to handler start. t0 is taken just before the
request's first byte is written; t1 on entry to the handler: in the gateway
process by wrapping the loaded ``Plugin.call`` (this script's own wrapper), in
the plain receiver right after verification. Both read
``time.perf_counter_ns`` (CLOCK_MONOTONIC on Linux, one clock for every
process) and send it back in a UDP datagram to 127.0.0.1 after taking it, so
t1 - t0 is exact and costs neither side the datagram. One request at a time,
the two servers interleaved in rounds; after each gateway sample the bench
waits (untimed) until the outbox marks it delivered. Also shown: the time to
the answer (202 or 200), the receipt alone. Goal: gateway / plain <= 5 at the
median: a durable, at-least-once hop (a commit, a worker woken, the due row
fetched) may cost a few plain receipts, not an order of magnitude.

(b) Throughput: ``--clients`` keep-alive connections from one asyncio thread
(a minimal HTTP/1.1 client on prebuilt, pre-signed requests: little CPU of its
own, which matters on 2 cores), closed loop, ``--receipts`` per round or
``--round-seconds``, whichever comes first; rounds alternate between the
servers, the order flipping each round. Delivery runs in the gateway during
its rounds, as in production (it competes for the CPU); after each gateway
round the bench waits for the backlog to drain (timed separately, so it never
overlaps a plain round). Per round: receipts per second (its receipts / its
wall time; the median of the rounds is shown), the server's CPU per receipt
(from /proc: during the round, and including the drain, i.e. receipt plus
delivery) and the other processes' load. Goal: >= 500 gateway receipts per
second on SQLite on this 2-core machine.

When a goal is missed the bench says why (``--breakdown`` prints it in any
case): one receipt step by step, timed in this process on the gateway's own
receiver, a cProfile of 1000 receipts, and the medians above set side by side
(the steps against what was measured; CPU per receipt with and without
delivery). ``--profile FILE`` runs the gateway process under cProfile, every
thread on its own CPU clock, and prints where it spent its CPU.

    make bench    # or: .venv/bin/python benchmarks/bench_gateway.py [--samples N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import itertools
import json
import logging
import os
import pstats
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "platform"))

import uvicorn
import yaml
from sqlalchemy import Engine, func, select
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from _bench import (
    Sampler,
    cpu_seconds,
    free_port,
    http_load,
    machine_busy_seconds,
    parse_head,
    print_table,
    run_rounds,
    served,
    summary,
)
from hostwire._config import EventsConfig
from hostwire._events import sync_engine
from hostwire._events.outbox import deliveries
from hostwire._gateway import Gateway
from hostwire._gateway.receiver import Received
from hostwire._runtime import Plugin, loads_strict
from hostwire._targets.server import server_config

LAGO = ROOT / "tests" / "documents" / "lago" / "openapi.yaml"
INVOICE_CREATED = ROOT / "tests" / "gateway" / "invoice_created.json"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WEBHOOKS_PATH = "/webhooks"
LATENCY_GOAL = 5.0  # gateway / plain, receipt -> handler start, at the median
THROUGHPUT_GOAL = 500.0  # gateway receipts per second
SERVER_START_S = 60.0  # loading Lago's 877 KB document takes seconds
ARRIVAL_TIMEOUT_S = 10.0
ANSWER_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 120.0
BUSY_CORES = 0.25
# invoice_created: answers at once (no output, no host call).
HANDLER_WAT = """(module
  (memory (export "memory") 1)
  (func (export "invoice_created") (result i32) (i32.const 0)))
"""


# -- the servers (subprocesses of this script) -----------------------------------------


class Reporter:
    """Sends ``<key> <t1_ns>`` to the bench's UDP socket on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.address = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def __call__(self, key: str, t1_ns: int) -> None:
        with contextlib.suppress(OSError):  # the bench may be gone; never fail a handler
            self.sock.sendto(f"{key} {t1_ns}".encode(), self.address)


def lago_id(payload: bytes | str) -> str:
    try:
        return str(json.loads(payload)["invoice"]["lago_id"])
    except (ValueError, KeyError, TypeError):
        return "-"


def instrument(plugin: Plugin, report: Reporter) -> None:
    """Wrap ``plugin.call`` so that every call reports when it started."""
    call = plugin.call

    def timed_call(export: str, data: bytes | str = b"", **extra: Any) -> bytes:
        t1 = time.perf_counter_ns()
        report(lago_id(data), t1)
        return call(export, data, **extra)

    setattr(plugin, "call", timed_call)  # noqa: B010 (mypy refuses assigning to a method)


class ThreadProfiles:
    """cProfile in every thread started from now on (and this one), merged at the end;
    each thread's CPU time, so that waiting (for the GIL, a lock, I/O) is not counted."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        threading.setprofile(self._start)
        self._start()

    def _start(self, *_: Any) -> None:
        profile = cProfile.Profile(time.thread_time)  # CPU time: waits for the GIL don't count
        self.profiles.append(profile)
        profile.enable()  # replaces this hook in the thread that called it

    def dump(self, path: Path) -> None:
        threading.setprofile(None)
        for profile in self.profiles:
            profile.disable()  # stops it in this thread; the others have ended by now
        stats = pstats.Stats(self.profiles[0])
        for profile in self.profiles[1:]:
            stats.add(profile)
        stats.dump_stats(path)


class QuietExit(uvicorn.Server):
    """uvicorn that, once shut down by SIGTERM, returns (as ``hostwire gateway`` does)
    rather than re-raising the signal, so that the profile gets written."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def serve_gateway(
    config: Path, port: int, report_port: int, profile: Path | None, delivery: bool
) -> int:
    """The gateway of ``config`` as ``hostwire gateway`` serves it, its plug-ins timed.
    Without ``delivery`` uvicorn runs no lifespan: events are recorded, never delivered."""
    logging.basicConfig(  # as hostwire's command line: one INFO line per webhook
        level=logging.INFO, format="%(name)s: %(levelname)s: %(message)s", stream=sys.stderr
    )
    gateway = Gateway(config)
    report = Reporter(report_port)
    for plugin in gateway.plugins:
        instrument(plugin, report)
    profiles = ThreadProfiles() if profile is not None else None  # loaded: serving from now
    try:
        lifespan = "on" if delivery else "off"
        QuietExit(server_config(gateway.app, host="127.0.0.1", port=port, lifespan=lifespan)).run()
    finally:
        gateway.close()
        if profiles is not None and profile is not None:
            profiles.dump(profile)
    return 0


def receiver_app(secret: str, report: Reporter) -> Starlette:
    """The plain receiver: verify with ``standardwebhooks``, then the handler starts."""
    hook = Webhook(secret)

    async def webhook(request: Request) -> Response:
        body = await request.body()
        try:
            event = hook.verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)
        t1 = time.perf_counter_ns()  # the handler starts here
        report(str(event["invoice"]["lago_id"]), t1)
        return JSONResponse({"ok": True})

    async def ready(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(
        routes=[Route(WEBHOOKS_PATH, webhook, methods=["POST"]), Route("/ready", ready)]
    )


def serve_receiver(port: int, report_port: int) -> int:
    app = receiver_app(SECRET, Reporter(report_port))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    return 0


@dataclass
class Server:
    name: str
    port: int
    pid: int
    status: bytes  # the answer to a new webhook
    engine: Engine | None = None  # a delivering gateway's outbox, to wait for its deliveries
    rates: list[float] = field(default_factory=list)  # receipts per second, per round
    cpu_per_receipt: list[float] = field(default_factory=list)  # µs, the round only
    cpu_with_drain: list[float] = field(default_factory=list)  # µs, round and drain
    drain_s: list[float] = field(default_factory=list)
    delivered_in_round: list[float] = field(default_factory=list)  # share delivered by the end
    latencies: list[float] = field(default_factory=list)  # ms, every request of (b)
    other_load: list[float] = field(default_factory=list)  # cores, per round
    client_cpu: list[float] = field(default_factory=list)  # load generator CPU / wall


@contextlib.contextmanager
def served_server(
    tmp: Path, name: str, mode: list[str], ready_path: str, report_port: int
) -> Iterator[tuple[int, int]]:
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), *mode]
    command += ["--port", str(port), "--report-port", str(report_port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "platform")}
    with served(
        name,
        command=command,
        env=env,
        log_path=tmp / f"{name}.log",
        ready_url=f"http://127.0.0.1:{port}{ready_path}",
        start_s=SERVER_START_S,
    ) as server:
        yield port, server.pid


def write_gateway(tmp: Path, name: str, document: Path, concurrency: int | None) -> Path:
    (tmp / "handler.wat").write_text(HANDLER_WAT)
    config = {
        "openapi": str(document),
        "app": {"base_url": "http://127.0.0.1:9/api/v1"},  # never called: no host calls
        "webhooks": {
            "path": WEBHOOKS_PATH,
            "secret": SECRET,
            "event_type": "/webhook_type",
            "subject": ["/{object_type}/lago_id"],
        },
        "database": str(tmp / f"{name}.db"),
        "plugins": [{"name": "bench", "path": "handler.wat"}],
    }
    if concurrency is not None:
        config["events"] = {"concurrency": concurrency}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# -- requests ---------------------------------------------------------------------------


class Bodies:
    """Signed ``invoice.created`` webhooks, each with its own invoice and webhook-id."""

    def __init__(self) -> None:
        self.template: dict[str, Any] = json.loads(INVOICE_CREATED.read_text(encoding="utf-8"))
        self.hook = Webhook(SECRET)

    def body(self) -> tuple[str, bytes]:
        key = str(uuid.uuid4())
        self.template["invoice"]["lago_id"] = key
        return key, json.dumps(self.template, separators=(",", ":")).encode()

    def headers(self, body: bytes) -> dict[str, str]:
        msg_id = f"msg_{uuid.uuid4().hex}"
        now = datetime.now(UTC)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.hook.sign(msg_id, now, body.decode()),
            "content-type": "application/json",
        }

    def request(self, port: int) -> tuple[str, bytes]:
        """(lago_id, the whole HTTP/1.1 request)."""
        key, body = self.body()
        head = f"POST {WEBHOOKS_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in self.headers(body).items())
        head += f"content-length: {len(body)}\r\n\r\n"
        return key, head.encode("ascii") + body


class Connection:
    """One keep-alive HTTP/1.1 connection, blocking: a request out, its answer in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def send(self, request: bytes) -> None:
        self.sock.sendall(request)

    def answer(self) -> tuple[bytes, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status, length = parse_head(head)
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, body

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


class Arrivals:
    """The bench's UDP socket: handler starts, as the servers report them."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.port: int = self.sock.getsockname()[1]

    def drain(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(256)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def wait_for(self, key: str) -> int:
        deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
        while True:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                found, _, t1 = self.sock.recv(256).decode().partition(" ")
            except TimeoutError:
                raise RuntimeError(
                    f"the handler did not start within {ARRIVAL_TIMEOUT_S:g} s"
                ) from None
            if found == key:
                return int(t1)


def pending(engine: Engine) -> int:
    """Deliveries the outbox has not delivered yet."""
    query = select(func.count()).select_from(deliveries).where(deliveries.c.state != "delivered")
    with engine.connect() as conn:
        return int(conn.scalar(query) or 0)


def wait_idle(engine: Engine, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while pending(engine):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the outbox still had deliveries after {timeout_s:g} s")
        time.sleep(0.0002)  # polling for the delivery mark, untimed


# -- (a) latency -------------------------------------------------------------------------

Latencies = Callable[[int], list[tuple[float, float]]]  # n -> (to handler, to answer) µs


def latency(server: Server, bodies: Bodies, arrivals: Arrivals) -> Latencies:
    port, status, engine = server.port, server.status, server.engine
    connection = Connection(port)

    def sample(calls: int) -> list[tuple[float, float]]:
        found = []
        clock = time.perf_counter_ns
        for _ in range(calls):
            key, request = bodies.request(port)
            arrivals.drain()
            t0 = clock()
            connection.send(request)
            answer, body = connection.answer()
            answered = clock()
            if answer != status:
                raise RuntimeError(f"the server answered {answer!r}: {body[:300]!r}")
            t1 = arrivals.wait_for(key)
            found.append(((t1 - t0) / 1000, (answered - t0) / 1000))
            if engine is not None:
                wait_idle(engine, ARRIVAL_TIMEOUT_S)
        return found

    return sample


def bench_latency(
    gateway: Server, plain: Server, bodies: Bodies, arrivals: Arrivals, args: Any
) -> tuple[bool, dict[str, tuple[float, float]]]:
    variants = {
        "gateway": latency(gateway, bodies, arrivals),
        "plain": latency(plain, bodies, arrivals),
    }
    per_round = max(1, args.samples // args.rounds)
    for sample in variants.values():  # warm up
        sample(max(50, per_round // 3))
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    deadline = time.monotonic() + args.max_seconds
    rounds = 0
    while rounds < args.rounds and (rounds == 0 or time.monotonic() < deadline):
        for name, sample in variants.items() if rounds % 2 == 0 else reversed(variants.items()):
            samples[name].extend(sample(per_round))
        rounds += 1
    stats = {}
    for name, values in samples.items():
        stats[f"{name}: receipt -> handler start"] = summary([v[0] for v in values])
    for name, values in samples.items():
        stats[f"{name}: receipt -> answer"] = summary([v[1] for v in values])
    print(
        f"(a) webhook receipt -> handler start, {per_round * rounds} webhooks each, one at a"
        f" time, {rounds} interleaved rounds"
    )
    print_table(stats)
    through, plain_start = (stats[f"{n}: receipt -> handler start"] for n in variants)
    ratio, tail = through[0] / plain_start[0], through[1] / plain_start[1]
    print(
        f"gateway / plain at the median: {ratio:.2f}  (goal <= {LATENCY_GOAL:g});"
        f" at p99: {tail:.2f}"
    )
    met = ratio <= LATENCY_GOAL
    print("goal met" if met else "goal missed")
    return met, stats


# -- (b) throughput -----------------------------------------------------------------------


async def load(
    server: Server, requests: list[bytes], clients: int, seconds: float
) -> tuple[int, float, list[float]]:
    """Send ``requests`` over ``clients`` connections until done or ``seconds`` pass;
    (receipts answered, wall seconds, latencies in ms)."""
    return await http_load(
        server.port,
        requests,
        clients,
        check=lambda head, _: head[9:12] == server.status,
        label=server.name,
        answer_timeout_s=ANSWER_TIMEOUT_S,
        seconds=seconds,
    )


def run_round(runner: asyncio.Runner, server: Server, bodies: Bodies, args: Any) -> None:
    engine = server.engine
    requests = [bodies.request(server.port)[1] for _ in range(args.receipts)]  # untimed
    busy_before = machine_busy_seconds()
    cpu_before = cpu_seconds(server.pid)
    client_before = time.process_time()
    done, elapsed, latencies = runner.run(load(server, requests, args.clients, args.round_seconds))
    client = time.process_time() - client_before
    cpu_round = cpu_seconds(server.pid)
    busy_after = machine_busy_seconds()
    server.rates.append(done / elapsed)
    server.latencies.extend(latencies)
    server.client_cpu.append(client / elapsed)
    if cpu_before is not None and cpu_round is not None:
        used = cpu_round - cpu_before
        server.cpu_per_receipt.append(used / done * 1e6)
        if busy_before is not None and busy_after is not None:
            other = busy_after - busy_before - used - client
            server.other_load.append(max(0.0, other / elapsed))
    if engine is not None:
        left = pending(engine)
        server.delivered_in_round.append(1 - left / done)
        drain_start = time.monotonic()
        wait_idle(engine, DRAIN_TIMEOUT_S)
        server.drain_s.append(time.monotonic() - drain_start)
        cpu_drained = cpu_seconds(server.pid)
        if cpu_before is not None and cpu_drained is not None:
            server.cpu_with_drain.append((cpu_drained - cpu_before) / done * 1e6)


def median_text(values: list[float], spec: str, unit: str = "") -> str:
    return f"{statistics.median(values):{spec}}{unit}" if values else "n/a"


def bench_throughput(servers: list[Server], bodies: Bodies, args: Any) -> tuple[bool, float]:
    gateway, plain = servers[0], servers[-1]
    with asyncio.Runner() as runner:
        for server in servers:  # warm up, untimed
            requests = [bodies.request(server.port)[1] for _ in range(max(100, args.receipts // 4))]
            runner.run(load(server, requests, args.clients, args.round_seconds))
            if server.engine is not None:
                wait_idle(server.engine, DRAIN_TIMEOUT_S)
        deadline = time.monotonic() + args.max_seconds
        rounds = 0
        while rounds < args.rounds and (rounds == 0 or time.monotonic() < deadline):
            for server in servers if rounds % 2 == 0 else servers[::-1]:
                run_round(runner, server, bodies, args)
            rounds += 1
    print(
        f"\n(b) receipts per second, {args.clients} keep-alive clients, up to {args.receipts}"
        f" webhooks or {args.round_seconds:g} s per round, {rounds} interleaved rounds;"
        f" in {gateway.name!r} delivery runs meanwhile (then the backlog drains, untimed)"
    )
    width = max(len(s.name) for s in servers)
    print(
        f"{'variant':<{width}} {'rec/s':>6} {'min':>6} {'max':>6} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'CPU µs/rec':>10} {'+drain':>7} {'delivered':>9} {'drain s':>7}"
        f" {'client':>6} {'other load':>11}"
    )
    for s in servers:
        ordered = sorted(s.latencies)
        p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
        print(
            f"{s.name:<{width}} {statistics.median(s.rates):>6.0f} {min(s.rates):>6.0f}"
            f" {max(s.rates):>6.0f} {statistics.median(s.latencies):>7.2f} {p99:>7.2f}"
            f" {median_text(s.cpu_per_receipt, '.0f'):>10}"
            f" {median_text(s.cpu_with_drain, '.0f'):>7}"
            f" {median_text(s.delivered_in_round, '.0%'):>9}"
            f" {median_text(s.drain_s, '.2f'):>7}"
            f" {median_text(s.client_cpu, '.0%'):>6}"
            f" {median_text(s.other_load, '.2f', ' cores'):>11}"
        )
    print(
        "  CPU µs/rec: the server's CPU (all threads) during the round, per receipt; +drain: with"
        " the backlog's drain,\n  i.e. receipt and delivery; delivered: the share of the round's"
        " events delivered when it ended"
    )
    rate = statistics.median(gateway.rates)
    ratio = rate / statistics.median(plain.rates)
    print(
        f"gateway receipts/s: {rate:.0f}  (goal >= {THROUGHPUT_GOAL:g});"
        f" gateway / plain: {ratio:.2f}"
    )
    busy = max((statistics.median(s.other_load) for s in servers if s.other_load), default=0.0)
    if busy > BUSY_CORES:
        print(
            f"warning: other processes kept {busy:.2f} cores busy during the rounds (median):"
            " the figures are unreliable; run again on an idle machine"
        )
    met = rate >= THROUGHPUT_GOAL
    print("goal met" if met else "goal missed")
    return met, rate


# -- why: one receipt, step by step ------------------------------------------------------


def breakdown(config: Path, tmp: Path, args: Any) -> dict[str, float]:
    """Each step of a receipt timed on the gateway's own receiver in this process
    (no HTTP, no delivery), then a cProfile of 1000 receipts (check and outbox write)."""
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["database"] = str(tmp / "breakdown.db")
    local = tmp / "breakdown.yaml"
    local.write_text(yaml.safe_dump(raw), encoding="utf-8")
    bodies = Bodies()
    with contextlib.closing(Gateway(local)) as gateway:  # delivery never starts
        receiver = gateway.receiver
        _, body = bodies.body()
        headers = bodies.headers(body)
        text = body.decode()
        value = loads_strict(body)
        webhook = receiver._webhook(value)
        received = receiver.check(body, headers)
        plugin = next(iter(gateway.plugins))

        def timed(fn: Callable[[], Any]) -> Sampler:
            def sample(calls: int) -> list[float]:
                found = []
                clock = time.perf_counter_ns
                for _ in range(calls):
                    start = clock()
                    fn()
                    found.append((clock() - start) / 1000)
                return found

            return sample

        ids = (f"msg_bench_{n}" for n in itertools.count())  # uuid4 is slow here: not timed

        def record() -> None:
            fresh = Received(next(ids), received.webhook, received.payload, received.subject)
            receiver._record(fresh)

        steps: dict[str, Sampler] = {
            "signature + timestamp (standardwebhooks)": timed(
                lambda: receiver.verifier.verify(text, headers)
            ),
            "strict JSON (loads_strict)": timed(lambda: loads_strict(body)),
            "event type + webhook lookup": timed(lambda: receiver._webhook(value)),
            "schema validation (Lago invoice.created)": timed(
                lambda: receiver._valid(webhook, value, received.event_id)
            ),
            "check(): all of the above + subject": timed(lambda: receiver.check(body, headers)),
            "outbox write (event + delivery, commit)": timed(record),
            "the handler (Plugin.call, answers at once)": timed(
                lambda: plugin.call("invoice_created", body)
            ),
        }
        stats, _ = run_rounds(steps, args.rounds, 200, 30.0)
        print("\none receipt, step by step, in this process (no HTTP, no delivery worker)")
        print_table(stats)

        signed = [bodies.body()[1] for _ in range(1000)]
        webhooks = [(body, bodies.headers(body)) for body in signed]
        profile = cProfile.Profile()
        profile.enable()
        for body, headers in webhooks:
            receiver._record(receiver.check(body, headers))
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
        print("\ncProfile of 1000 receipts (check + outbox write, no HTTP), by own time:")
        print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))
    return {name: median for name, (median, _) in stats.items()}


def explain(
    latency: dict[str, tuple[float, float]], servers: list[Server], steps: dict[str, float]
) -> None:
    """Where the gateway's time goes, from the medians measured above."""
    checks = steps["check(): all of the above + subject"]
    beyond = checks - steps["signature + timestamp (standardwebhooks)"]
    write = steps["outbox write (event + delivery, commit)"]
    plain = latency["plain: receipt -> handler start"][0]
    through = latency["gateway: receipt -> handler start"][0]
    print("\nwhy: (a) receipt -> handler start at the median, in µs")
    parts = {
        "the plain receiver (HTTP in, signature)": plain,
        "+ JSON, event type, schema validation": beyond,
        "+ outbox write (event + delivery, commit)": write,
    }
    for name, value in parts.items():
        print(f"  {name:<58} {value:>8.0f}")
    steps_sum = sum(parts.values())
    print(f"  {'= the steps, one after another on one thread':<58} {steps_sum:>8.0f}")
    print(f"  {'measured through the gateway':<58} {through:>8.0f}")
    print(
        f"  {'the rest: thread hops (event loop -> writer thread -> woken delivery':<58}"
        f" {through - steps_sum:>8.0f}\n"
        "    worker), the worker's query for the due row, the GIL shared by those threads"
    )
    cpu = {s.name: statistics.median(s.cpu_per_receipt) for s in servers if s.cpu_per_receipt}
    if {"gateway", "gateway, no delivery", "plain"} <= cpu.keys():
        receipt, full, bare = cpu["gateway, no delivery"], cpu["gateway"], cpu["plain"]
        print("why: (b) server CPU per receipt at the median of the rounds, in µs")
        print(f"  {'the plain receiver (HTTP, signature, JSON)':<58} {bare:>8.0f}")
        print(f"  {'the gateway, no delivery (HTTP, checks, outbox write)':<58} {receipt:>8.0f}")
        print(
            f"  {'  of which the steps above (check + write, in this process)':<58}"
            f" {checks + write:>8.0f}"
        )
        print(f"  {'the gateway with delivery (+ claim, call, mark per event)':<58} {full:>8.0f}")
        print(
            "  one core's worth of receipts/s at these costs: gateway"
            f" {1e6 / full:.0f}, no delivery {1e6 / receipt:.0f}, plain {1e6 / bare:.0f}"
        )


def print_profile(path: Path, limit: int = 30) -> None:
    if not path.exists():
        print(f"\nno profile: the gateway did not write {path.name} (see its log)")
        return
    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("tottime").print_stats(limit)
    print("\nthe gateway process under cProfile, (a) and (b), all threads, by own time:")
    print("\n".join(line for line in out.getvalue().splitlines()[2:] if line.strip()))


# -- main -----------------------------------------------------------------------------------


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=1000, help="webhooks per server in (a)")
    parser.add_argument("--receipts", type=int, default=2000, help="webhooks per round in (b)")
    parser.add_argument("--round-seconds", type=float, default=20.0, help="a round's limit in (b)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections in (b)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--max-seconds", type=float, default=90.0, help="per part: stop after the round past this"
    )
    parser.add_argument("--breakdown", action="store_true", help="print the breakdown anyway")
    parser.add_argument(
        "--concurrency", type=int, help="the gateway's events.concurrency (default: its default)"
    )
    parser.add_argument(
        "--no-idle-gateway",
        action="store_true",
        help="skip the gateway without delivery in (b)",
    )
    parser.add_argument("--document", type=Path, default=LAGO, help="the app's document")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="run the gateway under cProfile (all threads), keep its stats in FILE, print them",
    )
    parser.add_argument("--serve-gateway", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-delivery", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-receiver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--report-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.samples, args.receipts, args.clients, args.rounds) < 1:
        parser.error("--samples, --receipts, --clients and --rounds must be at least 1")
    return args


def main() -> int:
    args = arguments()
    if args.serve_gateway is not None:
        return serve_gateway(
            args.serve_gateway, args.port, args.report_port, args.profile_to, not args.no_delivery
        )
    if args.serve_receiver:
        return serve_receiver(args.port, args.report_port)
    document = args.document.resolve()
    shown = document.relative_to(ROOT) if document.is_relative_to(ROOT) else document
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as folder:
        tmp = Path(folder)
        config = write_gateway(tmp, "gateway", document, args.concurrency)
        quiet = write_gateway(tmp, "no-delivery", document, args.concurrency)
        profile = args.profile.resolve() if args.profile else None
        with contextlib.ExitStack() as stack:
            arrivals = Arrivals()
            stack.callback(arrivals.sock.close)
            mode = ["--serve-gateway", str(config)]
            mode += ["--profile-to", str(profile)] if profile is not None else []
            port, pid = stack.enter_context(
                served_server(tmp, "gateway", mode, "/healthz", arrivals.port)
            )
            engine = sync_engine(tmp / "gateway.db")  # the gateway made it and its tables
            stack.callback(engine.dispose)
            gateway = Server("gateway", port, pid, b"202", engine)
            servers = [gateway]
            if not args.no_idle_gateway:
                mode = ["--serve-gateway", str(quiet), "--no-delivery"]
                port, pid = stack.enter_context(
                    served_server(tmp, "no-delivery", mode, "/healthz", arrivals.port)
                )
                servers.append(Server("gateway, no delivery", port, pid, b"202"))
            port, pid = stack.enter_context(
                served_server(tmp, "plain", ["--serve-receiver"], "/ready", arrivals.port)
            )
            plain = Server("plain", port, pid, b"200")
            servers.append(plain)
            print(
                f"{shown}; each gateway's outbox in an SQLite file in {tmp}"
                " (WAL, synchronous=NORMAL); delivery concurrency"
                f" {args.concurrency or EventsConfig().concurrency}"
            )
            if profile is not None:
                print("the gateway runs under cProfile (all its threads): slower than it is")
            print()
            bodies = Bodies()
            latency_met, latency_stats = bench_latency(gateway, plain, bodies, arrivals, args)
            throughput_met, _ = bench_throughput(servers, bodies, args)
        if profile is not None:
            print_profile(profile)
        if not (latency_met and throughput_met) or args.breakdown:
            explain(latency_stats, servers, breakdown(config, tmp, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
