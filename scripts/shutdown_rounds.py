"""Many SIGTERM rounds of `hostwire serve` with a delivery backlog and hostile
plug-in answers (tests/events/test_shutdown.py runs a few): every one must exit 0.

    .venv/bin/python scripts/shutdown_rounds.py [--rounds 50] [--writes 60]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "events"))

from test_shutdown import sigterm_round  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--writes", type=int, default=60)
    args = parser.parse_args()
    codes: collections.Counter[int] = collections.Counter()
    stops, burned, backlog = [], 0, 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            outcome = sigterm_round(Path(tmp), args.writes)
            codes[outcome["code"]] += 1
            stops.append(outcome["stop_s"])
            burned += len(outcome["burned"])
            backlog = max(backlog, outcome["pending"])
            print(
                f"round {n + 1:>3}: exit {outcome['code']:>3}, "
                f"stopped in {outcome['stop_s']:.2f} s, {outcome['pending']} pending",
                flush=True,
            )
            if outcome["code"] != 0:
                print(outcome["log"][-3000:])
    stops.sort()
    print(
        f"{args.rounds} rounds in {time.monotonic() - started:.0f} s: exit codes {dict(codes)}; "
        f"stop median {stops[len(stops) // 2]:.2f} s, max {stops[-1]:.2f} s; "
        f"largest backlog {backlog}; attempts burned at shutdown {burned}"
    )
    ok = set(codes) == {0} and burned == 0
    print("goal met" if ok else "goal missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
