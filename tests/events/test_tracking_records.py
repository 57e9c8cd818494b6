"""Records of tracked models: column values as JSON and back, defaults the
before-events see, and rows the flush writes on its own (cascades)."""

from __future__ import annotations

import base64
import datetime as dt
import enum
import logging
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
)

from hostwire._events import ModelTracker
from hostwire._events.records import RecordShape
from tracking_support import FakeOutbox, Recorder, bus_for, handler


class Base(DeclarativeBase):
    pass


class Size(enum.Enum):
    SMALL = "s"
    LARGE = "l"


class Sample(Base):
    __tablename__ = "samples"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    day: Mapped[dt.date]
    at: Mapped[dt.time]
    seen: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True))
    took: Mapped[dt.timedelta]
    blob: Mapped[bytes]
    size: Mapped[Size] = mapped_column(
        sa.Enum(Size, values_callable=lambda e: [m.value for m in e])
    )
    price: Mapped[Decimal] = mapped_column(sa.Numeric(8, 3))
    ratio: Mapped[float]
    extra: Mapped[dict[str, Any]] = mapped_column(sa.JSON)


def test_column_values_become_json_and_back() -> None:
    shape = RecordShape(sa.inspect(Sample), "sample")
    values = {
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "day": dt.date(2026, 1, 2),
        "at": dt.time(3, 4, 5),
        "seen": dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "took": dt.timedelta(minutes=1, seconds=30),
        "blob": b"\x00\xff",
        "size": Size.LARGE,
        "price": Decimal("1.250"),
        "ratio": 0.5,
        "extra": {"tags": ["a"], "when": dt.datetime(2026, 1, 2)},
    }
    record = shape.record(values)
    assert record == {
        "id": "12345678-1234-5678-1234-567812345678",
        "day": "2026-01-02",
        "at": "03:04:05",
        "seen": "2026-01-02T03:04:05.600000+02:00",
        "took": 90.0,
        "blob": base64.b64encode(b"\x00\xff").decode(),
        "size": "l",  # what the column stores (values_callable), not the member's name
        "price": "1.250",
        "ratio": 0.5,
        "extra": {"tags": ["a"], "when": "2026-01-02T00:00:00Z"},
    }
    back = {key: shape.from_json(key, value) for key, value in record.items()}
    assert back == {**values, "extra": {"tags": ["a"], "when": "2026-01-02T00:00:00Z"}}
    with pytest.raises(ValueError, match="cannot be read"):
        shape.from_json("day", "tomorrow")
    with pytest.raises(ValueError, match='sample field "ratio" is nan'):
        shape.record({**values, "ratio": float("nan")})
    schema = shape.schema()
    assert schema["properties"]["size"] == {"type": "string", "enum": ["s", "l"]}
    assert schema["properties"]["price"]["type"] == "string"
    assert schema["properties"]["id"] == {"type": "string", "format": "uuid"}
    assert shape.generated == frozenset()  # uuid4 runs in Python


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40))
    slug: Mapped[str] = mapped_column(
        sa.String(40), default=lambda context: context.get_current_parameters()["name"].lower()
    )
    revised: Mapped[int] = mapped_column(default=1, onupdate=lambda: 2)
    steps: Mapped[list[Step]] = relationship(cascade="all, delete-orphan")


class Step(Base):
    __tablename__ = "steps"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id"))
    text: Mapped[str]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[sa.Engine, Recorder, FakeOutbox]]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        FakeOutbox.create(connection)
    tracker = ModelTracker()
    tracker.track(Project)
    tracker.track(Step)
    exports = [
        f"{model}_{phase}_{step}"
        for model in ("project", "step")
        for phase in ("before", "after")
        for step in ("validation", "save", "create", "update", "destroy")
    ]
    recorder, outbox = Recorder(), FakeOutbox()
    with handler("projects", recorder, exports=exports) as plugin:
        tracker.bind(bus_for(tracker, [plugin], tmp_path), outbox)
        yield engine, recorder, outbox
    tracker.close()
    engine.dispose()


def test_context_defaults_and_onupdate_values_are_in_the_before_events(world: Any) -> None:
    engine, recorder, _ = world
    with Session(engine) as session:
        project = Project(name="Garden")
        session.add(project)
        session.commit()
        project.name = "Yard"
        session.commit()
    created = next(e for e in recorder.seen if e["type"] == "project.before_create")
    assert created["data"]["record"] == {
        "id": None,
        "name": "Garden",
        "slug": "garden",
        "revised": 1,
    }
    updated = next(e for e in recorder.seen if e["type"] == "project.before_update")
    assert updated["data"]["record"]["revised"] == 2
    assert updated["data"]["changes"] == {
        "name": {"from": "Garden", "to": "Yard"},
        "revised": {"from": 1, "to": 2},
    }


def test_a_delete_orphan_cascade_has_after_events_and_a_warning(
    world: Any, caplog: pytest.LogCaptureFixture
) -> None:
    engine, recorder, outbox = world
    with Session(engine) as session:
        project = Project(name="Garden", steps=[Step(text="dig"), Step(text="plant")])
        session.add(project)
        session.commit()
        recorder.seen.clear()
        with caplog.at_level(logging.WARNING, "hostwire.tracking"):
            project.steps.remove(project.steps[0])  # an orphan, found by the flush
            session.commit()
    assert "step.before_destroy" not in recorder.types
    destroyed = [r for r in outbox.rows(engine) if r["type"] == "step.after_destroy"]
    assert [d["envelope"]["data"]["record"]["text"] for d in destroyed] == ["dig"]
    assert "written by the flush itself" in caplog.text
