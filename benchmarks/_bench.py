"""What the benchmarks share: rounds of interleaved samples, summaries, tables,
servers in subprocesses on free loopback ports, CPU time from /proc, and a
minimal HTTP/1.1 load generator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx

Sampler = Callable[[int], list[float]]  # n -> n timings in µs


def summary(samples: list[float]) -> tuple[float, float]:
    """Median and p99."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.99) - 1)]


def run_rounds(
    variants: dict[str, Sampler], rounds: int, per_round: int, max_seconds: float
) -> tuple[dict[str, tuple[float, float]], int]:
    """Warm up, then run every variant ``per_round`` times per round, in turn."""
    for sample in variants.values():
        sample(max(50, per_round // 3))
    samples: dict[str, list[float]] = {name: [] for name in variants}
    deadline = time.monotonic() + max_seconds
    done = 0
    while done < rounds and (done == 0 or time.monotonic() < deadline):
        for name, sample in variants.items():
            samples[name].extend(sample(per_round))
        done += 1
    return {name: summary(values) for name, values in samples.items()}, done


def print_table(stats: dict[str, tuple[float, float]], width: int = 44) -> None:
    print(f"{'variant':<{width}} {'median µs':>10} {'p99 µs':>10}")
    for name, (median, p99) in stats.items():
        print(f"{name:<{width}} {median:>10.1f} {p99:>10.1f}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def served(
    label: str,
    *,
    command: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    ready_url: str,
    start_s: float,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until ``ready_url`` answers 200 (bounded by ``start_s``);
    stop it on the way out. Its output goes to ``log_path``."""
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env
        )
    try:
        deadline = time.monotonic() + start_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"{label} exited with {server.returncode}:\n{log_path.read_text()[-2000:]}"
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(ready_url, timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label} did not answer within {start_s:g} s")
            time.sleep(0.05)  # waiting for the port to open, not timing anything
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * fraction) - 1)]


# -- CPU time from /proc -------------------------------------------------------------


def cpu_seconds(pid: int, *, children: bool = False) -> float | None:
    """User + system CPU time of process ``pid`` (all its threads; with ``children``,
    also its waited-for children's), or None without /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After "pid (comm)": state ppid ... utime(12) stime(13) cutime(14) cstime(15).
    ticks = sum(int(f) for f in fields[11 : 15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(parent: int) -> float:
    """CPU seconds of ``parent``, its ended children, and its live children (one level):
    a server's processes, such as PostgreSQL's backends or hostwire's workers."""
    total = cpu_seconds(parent, children=True) or 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue  # ended meanwhile
        if ppid == parent:
            total += cpu_seconds(int(entry.name)) or 0.0
    return total


def machine_busy_seconds() -> float | None:
    """CPU time all processes of the machine used (every core, not idle), or None."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait
    busy = sum(int(fields[i]) for i in (1, 2, 3, 6, 7, 8))
    return busy / os.sysconf("SC_CLK_TCK")


# -- the load generator ----------------------------------------------------------------
#
# On a 2-core machine the generator competes with the server for the CPU: it is
# asyncio streams and prebuilt request bytes (about 30 µs of CPU per request),
# where httpx.AsyncClient would cost several times what the server does.

Check = Callable[[bytes, bytes], bool]  # (lower-cased header block, body) -> as expected


def parse_head(head: bytes) -> tuple[bytes, int]:
    """The status and Content-Length of a response's header block."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return head[9:12], int(value)
    raise RuntimeError(f"an answer without Content-Length: {head[:300]!r}")


async def http_load(
    port: int,
    requests: Iterable[bytes],
    connections: int,
    *,
    check: Check,
    label: str,
    answer_timeout_s: float = 10.0,
    seconds: float | None = None,
) -> tuple[int, float, list[float]]:
    """Send ``requests`` over ``connections`` keep-alive connections to 127.0.0.1:``port``,
    each waiting for its answer before the next, until they are done (or ``seconds``
    pass); every answer must pass ``check``. (answered, wall seconds, latencies in ms)."""
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    queue = iter(requests)
    latencies: list[float] = []
    clock = time.perf_counter_ns
    stop_at = None if seconds is None else time.monotonic() + seconds

    async def exchange(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> None:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        _, length = parse_head(head)
        body = await reader.readexactly(length)
        if not check(head.lower(), body):
            raise RuntimeError(f"{label} answered {head[:300]!r} {body[:300]!r}")

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for request in queue:
            start = clock()
            await asyncio.wait_for(exchange(reader, writer, request), answer_timeout_s)
            latencies.append((clock() - start) / 1e6)
            if stop_at is not None and time.monotonic() > stop_at:
                return

    try:
        start = time.perf_counter()
        await asyncio.gather(*(client(r, w) for r, w in streams))
        elapsed = time.perf_counter() - start
    finally:
        for _, writer in streams:
            writer.close()
        for _, writer in streams:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return len(latencies), elapsed, latencies


# A 100-byte echo export in WebAssembly text: the plug-in call the runtime and metrics
# benchmarks time.
ECHO_WAT = """
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (func (export "echo") (result i32)
    (call $output_set (call $input_offset) (call $input_length))
    (i32.const 0)))
"""
