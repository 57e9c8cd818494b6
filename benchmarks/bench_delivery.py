"""After-event delivery throughput against sustained writes.

``hostwire serve`` (lightcontrol, SQLite, uvicorn, in a subprocess) with the
sample plug-in ``follow`` (``light_after_update``: copies the default light to
a lamp through ``updateLight``, so every delivery is a host call and a write
of its own). Several HTTP clients change the default light for a fixed time;
meanwhile and afterwards the outbox is read: events recorded per second (the
app's commits), deliveries made per second, and the backlog left when the
writes stop. Run with ``events.concurrency`` 1 (one delivery at a time per
plug-in, as before) and the default.

Goal: with the default concurrency the plug-in keeps up: deliveries per second
>= 0.95 x events recorded per second over the write window.

    .venv/bin/python benchmarks/bench_delivery.py [--seconds 10] [--clients 6]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from _bench import free_port, served

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
GOAL = 0.95


def counts(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        created = conn.execute("SELECT COUNT(*) FROM hostwire_deliveries").fetchone()[0]
        delivered = conn.execute(
            "SELECT COUNT(*) FROM hostwire_deliveries WHERE state = 'delivered'"
        ).fetchone()[0]
    return int(created), int(delivered)


def run(tmp: Path, concurrency: int, seconds: float, clients: int) -> dict[str, float]:
    work = tmp / f"c{concurrency}"
    work.mkdir()
    db = work / "lights.db"
    config = work / "plugins.yaml"
    config.write_text(
        f"openapi: {ROOT / 'openapi/light.yaml'}\nplugins:\n  - name: follow\n"
        f"    path: {ROOT / 'sample_plugins/follow/build/plugin.wasm'}\n"
        "    config: {source: default, target: lamp}\n    grants: [updateLight]\n"
        f"events: {{concurrency: {concurrency}}}\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    command = [sys.executable, "-m", "hostwire", "serve", "--port", str(port),
               "--db", str(db), "--config", str(config)]  # fmt: skip
    env = {**os.environ, "LIGHTCONTROL_TOKEN": TOKEN}
    with served(
        f"serve (concurrency {concurrency})",
        command=command,
        env=env,
        log_path=work / "server.log",
        ready_url=f"{url}/openapi.json",
        start_s=60,
    ):
        httpx.post(f"{url}/lights", json={"id": "lamp", "name": "Lamp"}, headers=headers)
        stop = threading.Event()
        writes = [0] * clients

        def writer(n: int) -> None:
            colours = ["ToRed", "ToGreen", "ToBlue"]
            with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
                i = n
                while not stop.is_set():
                    if (
                        client.post("/light_color", json={"action": colours[i % 3]}).status_code
                        == 200
                    ):
                        writes[n] += 1
                    i += 1

        created0, delivered0 = counts(db)
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(seconds)  # the measured window: writes run for this long
        stop.set()
        for thread in threads:
            thread.join(60)
        window = time.monotonic() - started
        created1, delivered1 = counts(db)
        drain_deadline = time.monotonic() + 120
        while counts(db)[1] < counts(db)[0] and time.monotonic() < drain_deadline:
            time.sleep(0.1)  # polling for the backlog to drain, bounded
        drained = time.monotonic() - started - window
    return {
        "writes/s": sum(writes) / window,
        "events/s recorded": (created1 - created0) / window,
        "deliveries/s": (delivered1 - delivered0) / window,
        "backlog at end": created1 - delivered1,
        "drain s": drained,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="after-event delivery throughput")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        results = {c: run(Path(tmp), c, args.seconds, args.clients) for c in (1, 8)}
    columns = list(results[1])
    print(f"{args.clients} clients writing for {args.seconds:g} s; follow delivers every event")
    print(f"{'concurrency':<12}" + "".join(f"{c:>20}" for c in columns))
    for concurrency, figures in results.items():
        print(f"{concurrency:<12}" + "".join(f"{figures[c]:>20.1f}" for c in columns))
    best = results[8]
    ratio = best["deliveries/s"] / max(best["events/s recorded"], 1e-9)
    print(f"deliveries / events recorded, concurrency 8: {ratio:.2f}  (goal >= {GOAL:g})")
    met = ratio >= GOAL
    print("goal met" if met else "goal missed")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
