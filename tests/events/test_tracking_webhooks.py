"""Tracked models' events as OpenAPI 3.1 webhooks: the document hostwire adds
them to is valid, the PDK generators give typed handlers for them, and a C
plug-in built on that PDK handles real records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from c_build import build
from hostwire import EventBus, EventRejected, Limits, Plugin, SpecError, Subscriber, load_openapi
from hostwire._events import ModelTracker
from hostwire.cli import main
from tracking_support import Base, Task

BASE = {"openapi": "3.1.0", "info": {"title": "tasks", "version": "1"}, "paths": {}}
STEPS = [
    f"{phase}_{step}"
    for phase in ("before", "after")
    for step in ("validation", "create", "save", "update", "destroy")
]


class Other(DeclarativeBase):
    pass


class Note(Other):
    """A model whose id the app makes: its records need no draft."""

    __tablename__ = "notes"

    key: Mapped[str] = mapped_column(sa.String(12), primary_key=True)
    text: Mapped[str | None]


@pytest.fixture
def tracker() -> Iterator[ModelTracker]:
    tracker = ModelTracker()
    tracker.track(Task)
    yield tracker
    tracker.close()


def write(document: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_every_step_of_every_model_is_a_webhook_of_a_valid_document(
    tracker: ModelTracker, tmp_path: Path
) -> None:
    tracker.track(Note)
    document = tracker.document(BASE)
    assert sorted(tracker.webhooks(BASE)) == sorted(
        [f"task.{s}" for s in STEPS] + [f"note.{s}" for s in STEPS]
    )
    spec = load_openapi(write(document, tmp_path / "tasks.json"))  # validates it
    schemas = document["components"]["schemas"]
    # Task's database fills id and origin: before-events carry a draft where they may be null.
    assert sorted(schemas) == [
        "Note",
        "NoteBeforeEvent",
        "NoteBeforeEventResult",
        "NoteEvent",
        "Task",
        "TaskBeforeEvent",
        "TaskBeforeEventResult",
        "TaskDraft",
        "TaskEvent",
    ]
    assert schemas["Task"]["properties"]["id"] == {"type": "integer"}
    assert schemas["TaskDraft"]["properties"]["id"] == {"type": ["integer", "null"]}
    assert schemas["Task"]["properties"]["title"] == {"type": "string", "maxLength": 50}
    assert schemas["Task"]["properties"]["status"] == {"type": "string", "enum": ["OPEN", "DONE"]}
    assert schemas["Note"]["properties"]["text"] == {"type": ["string", "null"]}
    save = document["webhooks"]["task.before_save"]["post"]
    assert save["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TaskBeforeEvent"
    }
    assert spec.webhooks["task.after_save"].body is not None
    # Adding them again changes nothing.
    assert tracker.document(document) == document


def test_the_apps_own_component_is_the_record_schema(tracker: ModelTracker) -> None:
    app_task = {
        "type": "object",
        "required": ["id", "title"],
        "properties": {"id": {"type": "integer"}, "title": {"type": "string"}},
    }
    document = {**BASE, "components": {"schemas": {"Task": app_task, "TaskOut": app_task}}}
    added = tracker.components(document)
    assert "Task" not in added
    assert added["TaskDraft"]["properties"]["id"] == {"type": ["integer", "null"]}
    assert added["TaskDraft"]["required"] == ["id", "title"]
    named = ModelTracker()
    try:
        named.track(Task, schema="TaskOut")
        draft = named.components(document)["TaskDraft"]
        assert draft["description"].startswith("A task as before-events of a create see it")
        named.track(Note, schema="Missing")
        with pytest.raises(SpecError, match="has no components/schemas/Missing"):
            named.components(document)
    finally:
        named.close()


def test_a_clashing_component_gets_another_name_and_openapi_30_is_refused(
    tracker: ModelTracker, tmp_path: Path
) -> None:
    clash = {**BASE, "components": {"schemas": {"TaskEvent": {"type": "string"}}}}
    document = tracker.document(clash)
    assert document["components"]["schemas"]["TaskEvent"] == {"type": "string"}  # the app's
    ref = document["webhooks"]["task.after_save"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]["$ref"]
    assert ref != "#/components/schemas/TaskEvent"
    assert ref.removeprefix("#/components/schemas/") in document["components"]["schemas"]
    load_openapi(write(document, tmp_path / "clash.json"))  # still a valid document
    with pytest.raises(SpecError, match=r"Webhooks need OpenAPI 3\.1"):
        tracker.webhooks({**BASE, "openapi": "3.0.3"})


@pytest.mark.parametrize(
    ("lang", "file", "needles"),
    [
        pytest.param("c", "hw_exports.h", ["HW_ON_TASK_BEFORE_SAVE", "TaskBeforeEvent"], id="c"),
        pytest.param(
            "assemblyscript", "events.ts", ["onTaskBeforeSave", "TaskBeforeEventResult"], id="as"
        ),
        pytest.param("rust", "src/events.rs", ["task_before_save", "TaskBeforeEvent"], id="rust"),
    ],
)
def test_pdk_generate_gives_typed_handlers_for_the_tracked_events(
    tracker: ModelTracker, tmp_path: Path, lang: str, file: str, needles: list[str]
) -> None:
    spec = write(tracker.document(BASE), tmp_path / "tasks.json")
    out = tmp_path / "pdk"
    assert main(["pdk", "generate", "--spec", str(spec), "--lang", lang, "--out", str(out)]) == 0
    text = (out / file).read_text(encoding="utf-8")
    for needle in needles:
        assert needle in text
    for step in STEPS:
        assert f"task_{step}" in text


PLUGIN_C = """#include "hostwire.h"

static int on_save(const TaskBeforeEvent *event, TaskBeforeEventResult *result) {
    TaskDraft *record = event->data->record;
    if (hw_str_eq_c(record->title, "nope")) {
        result->reject = hw_new(TaskBeforeEventResultReject);
        result->reject->reason = HW_STR("no nope tasks");
        return 0;
    }
    record->title = hw_format("[%S]", record->title);
    record->done = true;
    result->record = record;
    return 0;
}
HW_ON_TASK_BEFORE_SAVE(on_save)
"""


def test_a_c_plugin_on_the_generated_pdk_replaces_and_rejects_records(
    tracker: ModelTracker, tmp_path: Path
) -> None:
    spec = write(tracker.document(BASE), tmp_path / "tasks.json")
    pdk = tmp_path / "pdk"
    assert main(["pdk", "generate", "--spec", str(spec), "--lang", "c", "--out", str(pdk)]) == 0
    wasm = build(pdk, PLUGIN_C, tmp_path / "plugin.wasm")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(engine)
    with Plugin("tidy", wasm.read_bytes(), limits=Limits(timeout_ms=5000)) as plugin:
        tracker.bind(EventBus([Subscriber(plugin)], spec=load_openapi(spec)), None)
        with Session(engine) as session:
            session.add(Task(title="write tests"))
            session.commit()
            session.add(Task(title="nope"))
            with pytest.raises(EventRejected, match="no nope tasks"):
                session.commit()
    with engine.connect() as connection:
        assert connection.execute(sa.select(Task.title, Task.done)).all() == [
            ("[write tests]", True)
        ]
    engine.dispose()
