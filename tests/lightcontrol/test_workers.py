"""lightcontrol on PostgreSQL with several workers: nothing acknowledged is lost.

Real PostgreSQL (tests/postgres.py) and a real ``hostwire serve --workers 4``:
concurrent updates spread over the workers lose none (every acknowledged
write has its own revision, the final state is the last one acknowledged),
``GET /events/stream`` on one worker shows the changes of all of them,
PostgreSQL restarting under load gives 503 with ``Retry-After`` and the
workers reconnect on their own; SIGTERM stops them all with exit 0.
"""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from event_plugins import wait_for
from lightcontrol.feed import ChangeFeed
from lightcontrol.store import Change, LightRejected, LightStore
from postgres import PostgresServer
from workers_kit import AUTH, TOKEN, Ledger, check_ledger, worker_pids, workers_server

WORKERS = 4


@pytest.fixture
def pg_database(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


def _open_at_once(url: str, count: int) -> tuple[list[LightStore], list[BaseException]]:
    start = threading.Barrier(count)
    opened: list[LightStore] = []
    failures: list[BaseException] = []

    def open_store() -> None:
        start.wait(timeout=30)
        try:
            opened.append(LightStore(url))
        except Exception as error:
            failures.append(error)

    threads = [threading.Thread(target=open_store) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return opened, failures


def test_stores_opening_a_new_database_at_once_all_open_it(
    postgres_server: PostgresServer,
) -> None:
    """Workers starting together on an empty database: every one makes it or finds it made."""
    for _ in range(3):
        url = postgres_server.create_database()
        opened, failures = _open_at_once(url, 6)
        try:
            assert failures == []
            assert len(opened) == 6
            assert opened[0].get("default")["revision"] == 1
        finally:
            for store in opened:
                store.close()
            postgres_server.drop_database(url)


# -- the feed across processes (two stores on one database stand for two workers) -------


def test_the_feed_shows_what_another_process_commits_and_only_that(pg_database: str) -> None:
    first, second = LightStore(pg_database), LightStore(pg_database)
    feeds = [ChangeFeed(), ChangeFeed()]  # each process has its own
    feeds[0].attach(first)
    feeds[1].attach(second)
    feed = feeds[1]

    def refuse_green(change: Change) -> None:
        if change.step == "before_save" and change.record["color"] == "green":
            raise LightRejected("no green")

    first.observers.append(refuse_green)

    async def scenario() -> list[dict[str, Any]]:
        stream = feed.listen(limit=2)
        assert await anext(stream) == ": listening for light changes\n\n"
        await asyncio.to_thread(first.update, "default", {"color": "red"})
        with pytest.raises(LightRejected):
            await asyncio.to_thread(first.update, "default", {"color": "green"})
        await asyncio.to_thread(second.update, "default", {"status": "on"})  # its own, once
        entries = [_data(await anext(stream)) for _ in range(2)]
        assert [rest async for rest in stream] == []  # its limit: the stream ends
        return entries

    try:
        entries = asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        feeds[0].detach(first)
        feeds[1].detach(second)
        first.close()
        second.close()
    assert [e["type"] for e in entries] == ["light.after_update", "light.after_update"]
    assert [e["record"]["revision"] for e in entries] == [2, 3]
    assert entries[0]["changes"]["color"] == {"from": "white", "to": "red"}
    assert entries[1]["record"]["color"] == "red"
    assert entries[1]["changes"] == {
        "status": {"from": "off", "to": "on"},
        "updated_at": entries[1]["changes"]["updated_at"],
        "revision": {"from": 2, "to": 3},
    }


def _data(event: str) -> dict[str, Any]:
    lines = dict(line.split(": ", 1) for line in event.strip().splitlines())
    entry: dict[str, Any] = json.loads(lines["data"])
    assert lines["event"] == entry["type"]
    return entry


# -- real worker processes --------------------------------------------------------------


class Stream:
    """``GET /events/stream`` read in a thread: the entries it got so far."""

    def __init__(self, url: str) -> None:
        self.entries: list[dict[str, Any]] = []
        self.open = threading.Event()
        self._closing = threading.Event()
        self._client = httpx.Client(base_url=url, headers=AUTH, timeout=None)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.open.wait(30), "the stream did not open"

    def _read(self) -> None:
        try:
            with self._client.stream("GET", "/events/stream") as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.startswith(":"):
                        self.open.set()
                    elif line.startswith("data: "):
                        self.entries.append(json.loads(line.removeprefix("data: ")))
        except (httpx.HTTPError, RuntimeError):
            if not self._closing.is_set():  # closed by close(): the end of the test
                raise

    def revisions(self, light: str) -> list[int]:
        return [e["record"]["revision"] for e in list(self.entries) if e["record"]["id"] == light]

    def close(self) -> None:
        self._closing.set()
        self._client.close()
        self._thread.join(timeout=10)


def _streamed(stream: Stream, light: str, count: int) -> bool:
    return len(stream.revisions(light)) >= count


def _run_clients(url: str, ledger: Ledger, lights: list[str], clients: int, each: int) -> None:
    def client(n: int) -> None:
        for i in range(each):
            light = lights[(n + i) % len(lights)]
            ledger.send(url, light, {"brightness": (n * each + i) % 101, "name": f"c{n} #{i}"})

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)


def test_concurrent_updates_over_four_workers_lose_nothing(pg_database: str) -> None:
    with workers_server(pg_database, WORKERS, token=TOKEN) as (process, url):
        with httpx.Client(base_url=url, headers=AUTH) as client:
            lights = [client.post("/lights", json={"name": f"lamp {n}"}).json()["id"] for n in "ab"]
            lights.append("default")
        start = dict.fromkeys(lights, 1)
        ledger = Ledger()
        stream = Stream(url)  # on one worker
        try:
            for _ in range(3):
                _run_clients(url, ledger, lights, clients=8, each=8)
                assert ledger.refused == []
                check_ledger(url, ledger, lights, start)
            assert len(ledger.acked) == 3 * 8 * 8
            assert {worker for worker, _ in ledger.acked} == {"1", "2", "3", "4"}
            for light in lights:  # every worker's changes, in the order they committed
                wanted = sorted(r["revision"] for r in ledger.records(light))
                wait_for(functools.partial(_streamed, stream, light, len(wanted)), "the feed")
                assert stream.revisions(light) == wanted
        finally:
            stream.close()
        workers = worker_pids(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert all(pid not in worker_pids(process.pid) for pid in workers)


def _shown(url: str, ledger: Ledger, stream: Stream) -> bool:
    """One more change: is it in the stream within a second?"""
    assert ledger.send(url, "default", {"name": "after the restart"}) == 200
    revision = ledger.records("default")[-1]["revision"]
    deadline = time.monotonic() + 1.0
    while revision not in stream.revisions("default"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # polling the stream, not timing anything
    return True


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own: it is stopped and started again."""
    with PostgresServer() as server:
        yield server


def test_postgresql_restarting_under_load_gives_503_and_the_workers_reconnect(
    own_postgres: PostgresServer,
) -> None:
    database = own_postgres.create_database()
    with workers_server(database, WORKERS, token=TOKEN) as (process, url):
        ledger = Ledger()
        stream = Stream(url)
        stop = threading.Event()
        statuses: list[int] = []

        def load(n: int) -> None:
            i = 0
            while not stop.is_set():
                statuses.append(ledger.send(url, "default", {"brightness": (n * 7 + i) % 101}))
                i += 1

        threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: len(ledger.acked) >= 20, "writes before the restart", 60)
            own_postgres.stop(remove=False)  # a clean stop: committed work is on disk
            wait_for(lambda: len(ledger.refused) >= 8, "503 while PostgreSQL is down", 60)
            before = len(ledger.acked)
            own_postgres.start()
            # Every worker writes again, on its own.
            wait_for(
                lambda: {w for w, _ in ledger.acked[before:]} == {"1", "2", "3", "4"},
                "every worker writing again",
                60,
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        try:
            assert set(statuses) <= {200, 503}, sorted(set(statuses))
            for response in ledger.refused:
                assert response.status_code == 503
                assert response.headers["retry-after"].isdigit()
                assert response.json()["error"]["code"] == "storage_unavailable"
            check_ledger(url, ledger, ["default"], {"default": 1})
            # The stream opened before the restart shows changes made after it (once its
            # worker listens again: changes committed before that are not in it).
            wait_for(lambda: _shown(url, ledger, stream), "the feed after the restart", 60)
        finally:
            stream.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
