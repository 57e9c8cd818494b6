"""Tracked SQLAlchemy models: after-event throughput, and the cost of a tracked write.

(a) Throughput: 10,000 updates of tracked rows (100 rows, one transaction per
update, from one thread, sync ``Session``), each raising ``item.after_update``
for one plug-in whose handler answers at once; the figure is events committed
*and* delivered per second, from the first commit to the last delivery
recorded, on SQLite (a file in WAL mode, synchronous=NORMAL) and on
PostgreSQL (a throw-away server from Debian's package, started here; it runs
with fsync off, as the test suite's).

(b) Cost per write: one insert per transaction, side by side in interleaved
rounds, of an untracked mapped class (raw SQLAlchemy), a tracked class with
no plug-in, and a tracked class with one plug-in exporting
``item_before_save`` (answering ``{}``), on SQLite. Goals: tracking with no
plug-in costs at most 1.5 times a raw insert; one before_save plug-in at most 3 times.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from sqlalchemy import String, create_engine, event, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from _bench import print_table, run_rounds
from hostwire import EventBus, Outbox, Plugin, Subscriber, load_openapi
from hostwire._events import ModelTracker
from hostwire._runtime.module import to_binary

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from postgres import PostgresServer  # the test suite's throw-away server

HANDLER = """
(module
  (memory (export "memory") 1)
  (func (export "item_after_update") (result i32) (i32.const 0))
  (func (export "item_before_save") (result i32) (i32.const 0)))
"""
DOCUMENT = {"openapi": "3.1.0", "info": {"title": "bench", "version": "1"}, "paths": {}}


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    n: Mapped[int] = mapped_column(default=0)


class RawItem(Base):
    __tablename__ = "raw_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    n: Mapped[int] = mapped_column(default=0)


class BareItem(Base):
    __tablename__ = "bare_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    n: Mapped[int] = mapped_column(default=0)


def plugin() -> Plugin:
    return Plugin("handler", to_binary(HANDLER.encode(), "bench.wat"))


def bus_for(tracker: ModelTracker, subscribers: list[Subscriber]) -> EventBus:
    spec = load_openapi(tracker.document(dict(DOCUMENT)), name="the benchmark's document")
    return EventBus(subscribers, spec=spec)


def throughput(engine: Engine, updates: int) -> float:
    Base.metadata.create_all(engine)
    handler = plugin()
    outbox = Outbox(engine, poll_s=0.2)
    tracker = ModelTracker()
    tracker.track(Item, name="item")
    tracker.bind(bus_for(tracker, [Subscriber(handler)]), outbox)
    try:
        with Session(engine) as session:
            session.add_all(Item(id=i, name=f"item {i}") for i in range(100))
            session.commit()
        # The creates raised no after_update: only the updates are counted.
        outbox.start([handler])
        start = time.perf_counter()
        with Session(engine, expire_on_commit=False) as session:
            items = list(session.scalars(select(Item).order_by(Item.id)))
            for count in range(updates):
                items[count % 100].n += 1
                session.commit()
        deadline = time.monotonic() + 300
        while _delivered(engine) < updates:
            if time.monotonic() > deadline:
                raise RuntimeError("deliveries did not finish within 300 s")
            time.sleep(0.01)
        return updates / (time.perf_counter() - start)
    finally:
        outbox.stop()
        tracker.close()
        handler.close()


def _delivered(engine: Engine) -> int:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT COUNT(*) FROM hostwire_deliveries WHERE state = 'delivered'")
        ).scalar()
    return int(found or 0)


def write_costs(engine: Engine, rounds: int, per_round: int) -> dict[str, tuple[float, float]]:
    Base.metadata.create_all(engine)
    handler = plugin()
    outbox = Outbox(engine)
    bare, one = ModelTracker(), ModelTracker()
    bare.track(BareItem, name="bare")
    one.track(Item, name="item")
    bare.bind(bus_for(bare, []), outbox)
    one.bind(bus_for(one, [Subscriber(handler)]), outbox)

    def inserter(kind: type[Any]) -> Any:
        def sample(n: int) -> list[float]:
            timings = []
            with Session(engine) as session:
                for _ in range(n):
                    t0 = time.perf_counter_ns()
                    session.add(kind(name="x"))
                    session.commit()
                    timings.append((time.perf_counter_ns() - t0) / 1000)
            return timings

        return sample

    try:
        stats, _ = run_rounds(
            {
                "raw SQLAlchemy insert": inserter(RawItem),
                "tracked, no plug-in": inserter(BareItem),
                "tracked, 1 before_save plug-in": inserter(Item),
            },
            rounds,
            per_round,
            max_seconds=120,
        )
        return stats
    finally:
        bare.close()
        one.close()
        handler.close()


def _sqlite(folder: str, name: str) -> Engine:
    engine = create_engine(f"sqlite:///{folder}/{name}.db")

    @event.listens_for(engine, "connect")
    def _wal(connection: Any, record: Any) -> None:  # what an app with concurrent writers sets
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")

    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=300)
    args = parser.parse_args()
    with TemporaryDirectory() as folder:
        print(f"(a) after-event throughput, {args.updates} updates, one plug-in")
        sqlite_rate = throughput(_sqlite(folder, "throughput"), args.updates)
        print(f"  SQLite file:  {sqlite_rate:8.0f} events committed and delivered per second")
        with PostgresServer() as server:
            url = server.create_database()
            engine = create_engine(url)
            try:
                pg_rate = throughput(engine, args.updates)
            finally:
                engine.dispose()
        print(f"  PostgreSQL:   {pg_rate:8.0f} events committed and delivered per second")
        print("\n(b) cost of one insert per transaction, SQLite")
        engine = _sqlite(folder, "costs")
        stats = write_costs(engine, args.rounds, args.per_round)
        print_table(stats)
        raw = stats["raw SQLAlchemy insert"][0]
        for name, goal in (("tracked, no plug-in", 1.5), ("tracked, 1 before_save plug-in", 3.0)):
            ratio = stats[name][0] / raw
            verdict = "goal met" if ratio <= goal else "goal missed"
            print(f"{name} ÷ raw insert (median): {ratio:.2f} (goal <= {goal}): {verdict}")
        with engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(Item)).scalar()
        print(f"(rows written by the tracked variant: {rows})")


if __name__ == "__main__":
    main()
