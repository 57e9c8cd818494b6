"""A to-do service: FastAPI routes over SQLAlchemy models, with plug-ins.

Everything hostwire needs is the two lines in ``create_app`` marked
"hostwire": one ``Hostwire`` object, and ``track(Task)`` so that every write
of a task runs the plug-ins' ``task_before_*`` handlers and delivers their
``task_after_*`` events. The routes are plain ``def`` functions on a sync
``Session``: hostwire runs the plug-ins without starving FastAPI's thread pool,
even when a plug-in calls back into these routes.

    hostwire serve --app tasks.app:create_app --config plugins.yaml --db sqlite:///tasks.db
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import DateTime, String, create_engine, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

import hostwire


class Base(DeclarativeBase):
    pass


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    done: Mapped[bool] = mapped_column(default=False)
    priority: Mapped[int] = mapped_column(default=3)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TaskIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    priority: int = Field(3, ge=1, le=5)


class TaskPatch(BaseModel):
    title: str | None = Field(None, min_length=1, max_length=200)
    done: bool | None = None
    priority: int | None = Field(None, ge=1, le=5)


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    done: bool
    priority: int
    created_at: datetime


def engine_for(database: str) -> Engine:
    """The app's engine; an in-memory SQLite one is shared by every thread."""
    if database in ("sqlite://", "sqlite:///:memory:"):
        return create_engine(
            database, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    if "://" not in database:  # a plain file path
        database = f"sqlite:///{database}"
    if database.startswith("postgresql://"):  # psycopg 3, not SQLAlchemy's default psycopg2
        database = "postgresql+psycopg://" + database.removeprefix("postgresql://")
    return create_engine(database)


def session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as db:
        yield db


Db = Annotated[Session, Depends(session)]


def create_app(
    database: str = "sqlite:///tasks.db",
    config: hostwire.HostwireConfig | str | Path | None = None,
) -> FastAPI:
    """The tasks service on ``database``; with ``config``, its plug-ins too."""
    engine = engine_for(database)
    Base.metadata.create_all(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(title="tasks", version="1.0.0", lifespan=lifespan)
    app.state.sessions = sessionmaker(engine, expire_on_commit=False)

    @app.post("/tasks", operation_id="createTask", status_code=201)
    def create_task(body: TaskIn, db: Db) -> TaskOut:
        task = Task(title=body.title, priority=body.priority)
        db.add(task)
        db.commit()  # the plug-ins' before-handlers run here; a veto raises
        return TaskOut.model_validate(task)

    @app.get("/tasks", operation_id="listTasks")
    def list_tasks(db: Db, done: bool | None = None) -> list[TaskOut]:
        query = select(Task).order_by(Task.id)
        if done is not None:
            query = query.where(Task.done == done)
        return [TaskOut.model_validate(t) for t in db.scalars(query)]

    @app.get("/tasks/{task_id}", operation_id="getTask")
    def get_task(task_id: int, db: Db) -> TaskOut:
        return TaskOut.model_validate(_task(db, task_id))

    @app.patch("/tasks/{task_id}", operation_id="updateTask")
    def update_task(task_id: int, body: TaskPatch, db: Db) -> TaskOut:
        task = _task(db, task_id)
        for field, value in body.model_dump(exclude_unset=True).items():
            setattr(task, field, value)
        db.commit()
        return TaskOut.model_validate(task)

    @app.delete("/tasks/{task_id}", operation_id="deleteTask", status_code=204)
    def delete_task(task_id: int, db: Db) -> Response:
        db.delete(_task(db, task_id))
        db.commit()
        return Response(status_code=204)

    hw = hostwire.Hostwire(app, config=config, database=engine)  # hostwire
    hw.track(Task, name="task", schema="TaskOut")  # hostwire
    return app


def _task(db: Session, task_id: int) -> Task:
    task = db.get(Task, task_id)
    if task is None:
        raise HTTPException(404, f"No task has the id {task_id}.")
    return task
