"""What recording a call's metrics costs: a 100-byte echo with and without it.

Two plug-ins of the same module in one process, one recording into its
``PluginStats`` (as every hostwire plug-in does) and one made with
``Plugin(..., stats=False)``; interleaved in rounds so that machine noise hits
batches of calls of the two, back to back in alternating order, so that machine
noise hits both alike. A sample is the mean of a batch of calls, so that the
clock readings of the benchmark itself do not blur a difference of some tens
of nanoseconds; the ratio is the median of the pairs' ratios. Goal (issue 18):
with / without <= 1.02.

    make bench          # or: .venv/bin/python benchmarks/bench_metrics.py [--pairs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "platform"))

from _bench import ECHO_WAT, print_table, summary
from hostwire import Limits, Plugin
from hostwire._runtime.module import to_binary

GOAL = 1.02
RECORDING = "Plugin.call, metrics recorded"
NOT_RECORDING = "Plugin.call, stats=False"


def batch_mean(call: Callable[[], object], batch: int) -> float:
    """The mean time of one of ``batch`` calls, in µs."""
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(batch):
        call()
    return (clock() - start) / batch / 1000


def paired(
    with_metrics: Callable[[], object],
    without: Callable[[], object],
    *,
    pairs: int,
    batch: int,
    max_seconds: float,
) -> tuple[list[float], list[float], list[float]]:
    """Batches of both variants back to back, in alternating order: each pair's ratio
    sees the same moment of the machine. (with µs, without µs, ratios)."""
    for _ in range(20):  # warm up
        batch_mean(with_metrics, batch)
        batch_mean(without, batch)
    timed_with, timed_without, ratios = [], [], []
    deadline = time.monotonic() + max_seconds
    for i in range(pairs):
        if i and time.monotonic() > deadline:
            break
        if i % 2:
            b = batch_mean(without, batch)
            a = batch_mean(with_metrics, batch)
        else:
            a = batch_mean(with_metrics, batch)
            b = batch_mean(without, batch)
        timed_with.append(a)
        timed_without.append(b)
        ratios.append(a / b)
    return timed_with, timed_without, ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=4000, help="pairs of batches")
    parser.add_argument("--batch", type=int, default=50, help="calls per batch")
    parser.add_argument("--max-seconds", type=float, default=40.0)
    args = parser.parse_args()

    wasm = to_binary(ECHO_WAT.encode(), "echo.wat")
    payload = json.dumps({"id": "light-1", "name": "kitchen", "on": True, "hue": 120}).encode()
    payload = payload + b" " * (100 - len(payload))
    limits = Limits()
    recording = Plugin("echo", wasm, limits=limits)
    silent = Plugin("echo", wasm, limits=limits, stats=False)
    try:
        timed_with, timed_without, ratios = paired(
            lambda: recording.call("echo", payload),
            lambda: silent.call("echo", payload),
            pairs=args.pairs,
            batch=args.batch,
            max_seconds=args.max_seconds,
        )
        counted = recording.stats.export("echo").calls
        uncounted = silent.stats.export("echo").calls
    finally:
        recording.close()
        silent.close()
    if uncounted != 0 or counted == 0:
        print(f"recording is not what it should be: {counted} and {uncounted} calls counted")
        return 1

    calls = len(ratios) * args.batch
    print(f"100-byte echo, {calls} calls each, in {len(ratios)} pairs of {args.batch}-call batches")
    print_table({RECORDING: summary(timed_with), NOT_RECORDING: summary(timed_without)}, 32)
    ratio = statistics.median(ratios)
    cost_ns = (ratio - 1) * statistics.median(timed_without) * 1000
    print(f"metrics cost per call: {cost_ns:.0f} ns (the median ratio of a pair)")
    print(f"with / without metrics, median of the pairs: {ratio:.3f}  (goal <= {GOAL:.2f})")
    print("goal met" if ratio <= GOAL else "goal missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
