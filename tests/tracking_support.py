"""Models, plug-ins and an outbox stand-in for the tracked-model tests."""

from __future__ import annotations

import datetime as dt
import enum
import json
import threading
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import wat
from conftest import compile_wat
from hostwire import CallContext, EventBus, HostFunction, Limits, Plugin, Subscriber, load_openapi
from hostwire._events import ModelTracker

CREATED = dt.datetime(2026, 1, 2, 3, 4, 5)
TASK_EXPORTS = tuple(
    f"task_{phase}_{step}"
    for phase in ("before", "after")
    for step in ("validation", "save", "create", "update", "destroy")
)


class Base(DeclarativeBase):
    pass


class Status(enum.Enum):
    OPEN = "open"
    DONE = "done"


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(50))
    done: Mapped[bool] = mapped_column(default=False)
    status: Mapped[Status] = mapped_column(default=Status.OPEN)
    created_at: Mapped[dt.datetime] = mapped_column(default=lambda: CREATED)
    origin: Mapped[str] = mapped_column(server_default="app")
    cost: Mapped[Decimal | None] = mapped_column(sa.Numeric(10, 2))


class Recorder:
    """Host function ``note``: remembers what handlers received, and on which thread."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def host_function(self) -> HostFunction:
        def note(context: CallContext, data: bytes) -> bytes:
            with self.lock:
                self.seen.append(json.loads(data))
                self.threads.append(threading.current_thread())
            return b"{}"

        return HostFunction("note", note)

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.seen]


def handler(
    name: str,
    recorder: Recorder,
    answers: dict[str, Any] | None = None,
    *,
    exports: Iterable[str] = TASK_EXPORTS,
) -> Plugin:
    """A plug-in exporting ``exports``; each notes its input and answers ``answers[export]``."""
    config = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (answers or {}).items()}
    return Plugin(
        name,
        compile_wat(wat.hook_handler(*exports)),
        config=config,
        host_functions=[recorder.host_function()],
        limits=Limits(timeout_ms=10_000),
    )


def bus_for(tracker: ModelTracker, plugins: Iterable[Plugin], directory: Path) -> EventBus:
    """A bus whose document declares the tracked models' webhooks (envelopes are checked)."""
    base = {"openapi": "3.1.0", "info": {"title": "tasks", "version": "1"}, "paths": {}}
    path = directory / "tasks.json"
    path.write_text(json.dumps(tracker.document(base)))
    return EventBus([Subscriber(p) for p in plugins], spec=load_openapi(path))


class FakeOutbox:
    """Records after-events in a table, on the caller's connection and transaction."""

    TABLE = sa.Table(
        "fake_outbox",
        sa.MetaData(),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("subject", sa.String),
        sa.Column("type", sa.String),
        sa.Column("envelope", sa.JSON),
        sa.Column("targets", sa.JSON),
    )

    def __init__(self) -> None:
        self.notified = 0

    @classmethod
    def create(cls, connection: sa.Connection) -> None:
        cls.TABLE.create(connection, checkfirst=True)

    def add(
        self,
        connection: sa.Connection,
        envelope: dict[str, Any],
        *,
        subject: str,
        targets: Iterable[tuple[str, str]],
    ) -> None:
        connection.execute(
            self.TABLE.insert().values(
                subject=subject,
                type=envelope["type"],
                envelope=envelope,
                targets=[list(t) for t in targets],
            )
        )

    def notify(self) -> None:
        self.notified += 1

    def rows(self, engine: sa.Engine) -> list[dict[str, Any]]:
        with engine.connect() as connection:
            return self.rows_on(connection)

    def rows_on(self, connection: sa.Connection) -> list[dict[str, Any]]:
        result = connection.execute(sa.select(self.TABLE).order_by(self.TABLE.c.seq))
        return [dict(row._mapping) for row in result]
