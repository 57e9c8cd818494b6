"""Latency of a 100-byte echo export: hostwire vs the raw Extism SDK vs the floor.

All three run in one process, interleaved in rounds so that machine noise hits
them alike. The floor is plain Python doing the json loads+dumps a host would
do around a call. Goal (issue 17): hostwire / raw Extism <= 1.10 at the median.

    make bench          # or: .venv/bin/python benchmarks/bench_runtime.py [--calls N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "platform"))

import extism
from extism.extism import CompiledPlugin

from _bench import ECHO_WAT, summary
from hostwire import Limits, Plugin
from hostwire._runtime.module import to_binary

GOAL = 1.10


def measure(fn: Callable[[], object], calls: int) -> list[float]:
    timings = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        fn()
        timings.append((clock() - start) / 1000)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per variant")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    wasm = to_binary(ECHO_WAT.encode(), "echo.wat")
    payload = json.dumps({"id": "light-1", "name": "kitchen", "on": True, "hue": 120}).encode()
    payload = payload + b" " * (100 - len(payload))
    assert len(payload) == 100
    limits = Limits()
    raw = extism.Plugin(
        CompiledPlugin(
            {
                "wasm": [{"data": wasm}],
                "memory": {"max_pages": limits.max_pages},
                "timeout_ms": limits.timeout_ms,
            },
            functions=[],
        ),
        functions=[],
    )
    hosted = Plugin("echo", wasm, limits=limits)
    text = payload.decode()

    variants: dict[str, Callable[[], object]] = {
        "floor: json loads+dumps": lambda: json.dumps(json.loads(text)),
        "raw Extism plugin.call": lambda: raw.call("echo", payload),
        "hostwire Plugin.call": lambda: hosted.call("echo", payload),
    }
    for fn in variants.values():  # warm up
        measure(fn, 2000)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    per_round = max(1, args.calls // args.rounds)
    for _ in range(args.rounds):
        for name, fn in variants.items():
            samples[name].extend(measure(fn, per_round))

    print(f"100-byte echo, {per_round * args.rounds} calls each, {args.rounds} interleaved rounds")
    print(f"{'variant':<26} {'median µs':>10} {'p99 µs':>10}")
    stats = {name: summary(values) for name, values in samples.items()}
    for name, (median, p99) in stats.items():
        print(f"{name:<26} {median:>10.1f} {p99:>10.1f}")
    ratio = stats["hostwire Plugin.call"][0] / stats["raw Extism plugin.call"][0]
    print(f"hostwire / raw Extism at the median: {ratio:.3f}  (goal <= {GOAL:.2f})")
    print("goal met" if ratio <= GOAL else "goal missed")
    hosted.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
