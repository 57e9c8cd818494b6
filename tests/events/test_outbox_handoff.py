"""Deliveries handed to the workers in memory once their transaction commits
(``Outbox.committed``, SQLite): no read back, and never ahead of an older
delivery of their subject."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from event_plugins import LIGHT, TARGET, Gate, gated_handler, states, wait_for
from hostwire import Outbox, new_envelope
from hostwire._events.claims import Due


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "app.db", backoff_s=0.01, max_backoff_s=0.05, poll_s=0.05)
    yield box
    box.close()


def commit(outbox: Outbox, subject: str, **fields: Any) -> str:
    """Add one event in a transaction, commit, then hand it over; its id."""
    envelope = new_envelope("light", "after_update", {**LIGHT, **fields}, LIGHT, {})
    handoff: list[tuple[str, Due]] = []
    with outbox.engine.begin() as conn:
        Outbox.add(conn, envelope, subject=subject, targets=TARGET, handoff=handoff)
    assert [(p, d.id, d.subject) for p, d in handoff] == [("gated", envelope["id"], subject)]
    outbox.committed(handoff)
    event_id: str = envelope["id"]
    return event_id


def count_fetches(outbox: Outbox) -> list[int]:
    lane = outbox._lanes["gated"]
    fetched = [0]
    fetch = lane.claims.fetch

    def counted(limit: int) -> list[Due]:
        found = fetch(limit)
        fetched[0] += len(found)
        return found

    lane.claims.fetch = counted  # type: ignore[method-assign]
    return fetched


def started(outbox: Outbox, gate: Gate) -> list[int]:
    outbox.start([gated_handler(gate)])
    lane = outbox._lanes["gated"]
    wait_for(lambda: lane._exact, "the idle lane to know it holds every pending delivery")
    return count_fetches(outbox)


def seen(gate: Gate) -> list[str]:
    with gate.lock:
        return [e["id"] for e in gate.seen]


def test_a_committed_delivery_reaches_the_worker_without_a_read(outbox: Outbox) -> None:
    gate = Gate()
    gate.release.set()
    fetched = started(outbox, gate)
    ids = [commit(outbox, f"light/{n}", brightness=n) for n in range(3)]
    wait_for(lambda: states(outbox, "gated") == ["delivered"] * 3, "three deliveries")
    assert sorted(seen(gate)) == sorted(ids)
    assert fetched == [0]  # none was read back from the database


def test_a_handed_delivery_waits_behind_one_of_its_subject_in_flight(outbox: Outbox) -> None:
    gate = Gate()
    fetched = started(outbox, gate)
    first = commit(outbox, "light/default", brightness=1)
    assert gate.entered.wait(10)
    second = commit(outbox, "light/default", brightness=2)
    third = commit(outbox, "light/default", brightness=3)
    threading.Timer(0.2, gate.release.set).start()  # the others wait meanwhile
    wait_for(lambda: states(outbox, "gated") == ["delivered"] * 3, "three deliveries")
    assert seen(gate) == [first, second, third]
    assert fetched == [0]


def test_behind_a_delivery_that_failed_the_next_waits_for_its_retry(outbox: Outbox) -> None:
    # Retried every few ms while it fails: never dead before the test lets it pass,
    # however slowly this thread gets to look (a loaded machine took 8 attempts).
    outbox.max_attempts = 1000
    gate = Gate()
    gate.fail = True
    started(outbox, gate)
    first = commit(outbox, "light/default", brightness=1)
    assert gate.entered.wait(10)
    second = commit(outbox, "light/default", brightness=2)  # held behind the first
    gate.release.set()  # the first fails: it stays pending, so the second must wait
    wait_for(lambda: len(seen(gate)) >= 1 and outbox.deliveries()[-1]["attempts"] >= 1, "a try")
    gate.fail = False
    wait_for(lambda: states(outbox, "gated") == ["delivered"] * 2, "both deliveries")
    # the first may be retried more than once before ``fail`` is cleared (its
    # backoff is ~0), but the second is never tried before the first succeeds
    order = seen(gate)
    assert order[-1] == second
    assert order.count(second) == 1
    assert len(order) >= 3
    assert set(order[:-1]) == {first}


def test_a_lane_unsure_of_the_database_reads_it(outbox: Outbox) -> None:
    gate = Gate()
    gate.release.set()
    outbox.start([gated_handler(gate)])
    lane = outbox._lanes["gated"]
    wait_for(lambda: lane._exact, "the idle lane to know it holds every pending delivery")
    outbox.notify()  # rows added elsewhere may exist: no hand-off until it knows again
    assert not lane.hand(Due(1, "light_after_update", "light/x", 0, "evt_x", "{}", "[]"))


def test_an_add_on_a_connection_not_yet_begun_rolls_back_and_commits_with_it(
    outbox: Outbox,
) -> None:
    # On SQLite the rows go in through the driver; the transaction is still the caller's.
    for finish in ("rollback", "commit"):
        with outbox.engine.connect() as conn:
            envelope = new_envelope("light", "after_update", LIGHT, LIGHT, {})
            Outbox.add(conn, envelope, subject="light/default", targets=TARGET)
            getattr(conn, finish)()
    assert [d["state"] for d in outbox.deliveries()] == ["pending"]
