"""Large real OpenAPI documents: load time cold (no validation cache) vs warm.

Every document under tests/documents/ is loaded with ``load_openapi`` in
interleaved rounds, two ways: *cold*, with an empty cache folder, so the
document is parsed, validated with openapi-spec-validator and its verdict
written; and *warm*, as a new process finds it: nothing remembered in
memory, the verdict on disk. Beside them, once per document, *before*: as
hostwire loaded documents until issue 14, with the pure-Python YAML parser
and a validation at every load. Goal (issue 14): Lago's 877 KB document
loads in under a second (median, warm cache).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from unittest import mock

from hostwire import load_openapi
from hostwire._hostapi import openapi, speccache

DOCUMENTS = Path(__file__).resolve().parents[1] / "tests" / "documents"
GOAL_S = 1.0


def load_s(path: Path, cache: Path) -> float:
    """One load as a new process would do it, with ``cache`` as the cache folder."""
    speccache.VALIDATED = speccache.ValidationCache(cache)
    start = time.perf_counter()
    load_openapi(path)
    return time.perf_counter() - start


def before_s(path: Path, cache: Path) -> float:
    """One load the way it was before: the pure-Python parser, no validation cache."""
    with (
        mock.patch.object(openapi, "_parse_fast", return_value=openapi._UNPARSED),
        mock.patch.object(speccache, "document_key", return_value=None),
    ):
        return load_s(path, cache)


Times = dict[str, tuple[list[float], list[float], list[float]]]


def measure(rounds: int, folder: Path) -> Times:
    documents = sorted(p for p in DOCUMENTS.glob("*/openapi.*"))
    times: Times = {path.parent.name: ([], [], []) for path in documents}
    for index in range(rounds):
        for path in documents:
            before, cold, warm = times[path.parent.name]
            cache = folder / f"{path.parent.name}-{index}"
            if index == 0:
                before.append(before_s(path, folder / "unused"))
            cold.append(load_s(path, cache))  # an empty folder: validated, verdict written
            warm.append(load_s(path, cache))  # the verdict found on disk
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with TemporaryDirectory() as folder:
        times = measure(args.rounds, Path(folder))
    print(f"load_openapi in s: cold and warm median of {args.rounds} rounds (min in brackets)")
    print(
        f"{'document':<10} {'size':>8} {'before':>7} {'cold':>14} {'warm':>14}"
        f" {'before ÷ warm':>14}"
    )
    for name, (before, cold, warm) in times.items():
        (path,) = DOCUMENTS.glob(f"{name}/openapi.*")
        size = f"{path.stat().st_size / 1024:.0f} KB"
        b, c, w = before[0], statistics.median(cold), statistics.median(warm)
        print(
            f"{name:<10} {size:>8} {b:>7.2f} {c:>7.2f} ({min(cold):.2f})"
            f" {w:>7.2f} ({min(warm):.2f}) {b / w:>14.1f}"
        )
    lago = statistics.median(times["lago"][2])
    verdict = "goal met" if lago < GOAL_S else "goal missed"
    print(f"Lago loads in under {GOAL_S:g} s (warm cache, median): {lago:.2f} s: {verdict}")


if __name__ == "__main__":
    main()
