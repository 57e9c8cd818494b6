"""The model path: lifecycle order, rejections, and no read-then-write races."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from lightcontrol.store import (
    Change,
    LightError,
    LightInvalid,
    LightReentrant,
    LightRejected,
    LightStore,
)


@pytest.fixture
def store(tmp_path: Path) -> LightStore:
    return LightStore(tmp_path / "lights.db")


def record_steps(store: LightStore) -> list[str]:
    steps: list[str] = []
    store.observers.append(lambda change: steps.append(change.step))
    return steps


def test_create_update_destroy_run_their_steps_in_order(store: LightStore) -> None:
    steps = record_steps(store)
    light = store.create({"name": "Porch"})
    # after_validation is an after-step: it runs in the write's transaction, first.
    assert steps == [
        "before_validation", "before_save", "before_create",
        "after_validation", "after_create", "after_save",
    ]  # fmt: skip
    steps.clear()
    store.update(light["id"], {"status": "on"})
    assert steps == [
        "before_validation", "before_save", "before_update",
        "after_validation", "after_update", "after_save",
    ]  # fmt: skip
    steps.clear()
    store.destroy(light["id"])
    assert steps == ["before_destroy", "after_destroy"]


def test_after_steps_see_the_write_in_its_transaction(store: LightStore) -> None:
    seen: list[object] = []

    def observer(change: Change) -> None:
        if change.step == "after_update" and change.connection is not None:
            status = change.connection.exec_driver_sql(
                "SELECT status FROM lights WHERE id = ?", (change.record["id"],)
            ).scalar_one()
            seen.append(status)

    store.observers.append(observer)
    store.update("default", {"status": "on"})
    assert seen == ["on"]


def test_changes_describe_what_moved(store: LightStore) -> None:
    captured: list[Change] = []
    store.observers.append(captured.append)
    store.update("default", {"color": "red"})
    before_save = next(c for c in captured if c.step == "before_save")
    assert before_save.changes["color"] == {"from": "white", "to": "red"}
    assert before_save.previous is not None
    assert before_save.previous["color"] == "white"


def test_a_before_step_can_rewrite_the_record(store: LightStore) -> None:
    def night_mode(change: Change) -> None:
        if change.step == "before_save" and change.record["color"] == "white":
            change.record["color"] = "red"

    store.observers.append(night_mode)
    assert store.update("default", {"color": "white", "status": "on"})["color"] == "red"
    assert store.get("default")["color"] == "red"


def test_a_rewrite_is_validated_again(store: LightStore) -> None:
    def broken(change: Change) -> None:
        if change.step == "before_save":
            change.record["brightness"] = 500

    store.observers.append(broken)
    with pytest.raises(LightInvalid) as caught:
        store.update("default", {"status": "on"})
    assert caught.value.details[0]["field"] == "/brightness"
    assert store.get("default")["status"] == "off"


def test_a_rejection_writes_nothing(store: LightStore) -> None:
    def reject(change: Change) -> None:
        if change.step == "before_update":
            raise LightRejected("not now")

    store.observers.append(reject)
    before = store.get("default")
    with pytest.raises(LightRejected):
        store.update("default", {"status": "on"})
    assert store.get("default") == before


def test_a_failing_after_step_rolls_the_write_back(store: LightStore) -> None:
    def fail(change: Change) -> None:
        if change.step == "after_save":
            raise RuntimeError("outbox full")

    store.observers.append(fail)
    with pytest.raises(RuntimeError):
        store.create({"name": "Ghost"})
    assert [light["name"] for light in store.list()] == ["Default light"]


def test_concurrent_changes_lose_nothing(store: LightStore) -> None:
    light = store.create({"name": "Busy"})
    per_thread = 40
    threads = 6
    errors: list[BaseException] = []
    slow_down = threading.Event()

    def observer(change: Change) -> None:
        # Widen the window between reading the light and writing it.
        if change.step == "before_save":
            slow_down.wait(0.0005)

    store.observers.append(observer)

    def worker(n: int) -> None:
        try:
            for i in range(per_thread):
                if (n + i) % 2:
                    store.update(light["id"], {"status": "on" if i % 2 else "off"})
                else:
                    store.update(light["id"], {"color": ["red", "green", "blue"][i % 3]})
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    assert not errors
    final = store.get(light["id"])
    assert final["revision"] == 1 + threads * per_thread


def test_a_change_of_a_light_from_inside_its_own_change_fails_at_once(
    store: LightStore,
) -> None:
    caught: list[LightError] = []

    def meddler(change: Change) -> None:
        if change.step == "before_save" and change.record["brightness"] == 7:
            try:
                store.update(change.record["id"], {"color": "red"})
            except LightError as exc:
                caught.append(exc)
            store.update("lamp", {"color": "blue"})  # another light: fine

    store.create({"name": "Lamp", "id": "lamp"})
    store.observers.append(meddler)
    assert store.update("default", {"brightness": 7})["color"] == "white"
    (error,) = caught
    assert isinstance(error, LightReentrant)
    assert (error.status, error.code) == (409, "reentrant_change")
    assert str(error).startswith('Light "default" cannot change while a change of it is under way')
    assert store.get("lamp")["color"] == "blue"
    # In another thread (no enclosing change) the same update works.
    worker = threading.Thread(target=store.update, args=("default", {"color": "green"}))
    worker.start()
    worker.join(30)
    assert store.get("default")["color"] == "green"
