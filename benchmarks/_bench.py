"""What the benchmarks share: rounds of interleaved samples, summaries, tables,
and servers in subprocesses on free loopback ports."""

from __future__ import annotations

import contextlib
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
