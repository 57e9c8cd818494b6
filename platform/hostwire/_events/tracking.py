"""Lifecycle events (Contract 2) of an app's SQLAlchemy models: ``ModelTracker``.

``tracker.track(Task, name="task")`` makes every insert, update and delete of
``Task`` objects flushed by a ``Session`` or ``AsyncSession`` run the steps:

- create:  before_validation, (validation), after_validation, before_save,
           before_create, (write), after_create, after_save
- update:  the same with before_update and after_update
- destroy: before_destroy, (delete), after_destroy

Before-events run in the Session's ``before_flush``, before any SQL of that
flush, through ``EventBus.before``: plug-ins in order may go on, replace the
record (validated again and written back onto the object) or reject the
change. A rejection, a failing ``fail_closed`` handler or an invalid record
aborts the flush like a database error would: the exception comes out of
``flush()``/``commit()`` and the transaction is rolled back, so nothing is
written and no after-event is recorded. After-events, ``after_validation``
first, are added to the outbox on the flush's own connection (mapper
``after_insert``/``after_update``/``after_delete``), so they commit or roll
back with the rows; the outbox is woken after the commit.

A record holds every mapped column as JSON (see ``records``). Column
defaults computed in Python (scalars and callables) are applied onto a new
object before its before-events, so plug-ins see the value that is written;
values the database or the flush makes (an autoincrement id, server
defaults, SQL expressions, foreign keys a relationship sets) may be null in
the before-events of a create, and the record of each after-event is the row
as stored, read back on the flush's connection.
``after_validation`` carries the record as validated, with those values
filled in. ``previous`` holds the committed values before the change (from
attribute history, else read from the row); ``changes`` the fields that
differ, as ``{"field": {"from": old, "to": new}}``.

Records are validated against the model's record schema: the component
named by ``schema=``, else one named like the class, else one derived from
the columns (``webhooks``); new rows against the draft schema, whose
database-filled columns may be null. An invalid record is refused before
any event (so every envelope matches its webhook) with ``RecordInvalid``.

Plug-in calls never block an event loop: with an ``AsyncSession`` the flush
runs in SQLAlchemy's greenlet on the loop's thread, so the before-events go
to one of hostwire's worker threads and the greenlet waits for them through
SQLAlchemy's greenlet bridge, holding no pooled connection meanwhile. With a ``Session`` on
a worker thread (a ``def`` route) they run on that thread through
``run_blocking``, which lends AnyIO's default pool a thread meanwhile.

A change of a record from inside the before-events of a change of the same
record (a plug-in updating it through the app, in process) raises
``RecordReentrant`` at once: waiting would deadlock on the row.

Not reported, because SQLAlchemy's ORM events do not see them: bulk
statements (``session.execute(update(Task))``, ``delete(Task)``,
``insert(Task)``, also with lists of parameters), ``bulk_save_objects`` and
the other ``bulk_*`` methods, Core statements on a ``Connection``, raw SQL,
rows removed by the database's own ``ON DELETE CASCADE``. ORM bulk
statements on a tracked model log a warning once per kind (or raise
``UntrackedChange`` with ``strict=True``). Rows the ORM writes during the
flush itself (delete-orphan cascades, foreign keys a relationship changes)
get their after-events but had no before-events; a warning says so once.
Until ``bind`` is called, writes go through without events and a warning is
logged once per model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import sqlalchemy as sa
import sqlalchemy.util
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import InstanceState, Mapper, ORMExecuteState, Session, object_session

from hostwire._contract import EVENT_TYPE, event_export
from hostwire._errors import RecordInvalid, RecordReentrant, SpecError, UntrackedChange
from hostwire._events.bus import EventBus
from hostwire._events.outbox import Outbox
from hostwire._events.records import RecordShape
from hostwire._events.webhooks import (
    ModelSchemas,
    document_spec,
    model_schemas,
    model_webhooks,
    standalone_document,
    with_schemas,
)
from hostwire._hostapi import compile_schema, snake_case
from hostwire._runtime import log_safe, run_blocking, to_thread

log = logging.getLogger("hostwire.tracking")
# SQLAlchemy's greenlet bridge: waits for an awaitable from sync code that runs
# inside an AsyncSession's greenlet (``await_`` since 2.1, ``await_only`` before).
_await: Callable[[Awaitable[Any]], Any] = (
    getattr(sqlalchemy.util, "await_", None) or sqlalchemy.util.await_only
)
T = TypeVar("T")
Action = Literal["create", "update", "destroy"]

# Records whose change is under way further up this chain of calls; it travels
# with the context into worker threads and in-process requests.
CHANGING: ContextVar[frozenset[str]] = ContextVar("hostwire_changing", default=frozenset())

BEFORE_STEPS: dict[Action, tuple[str, ...]] = {
    "create": ("before_validation", "before_save", "before_create"),
    "update": ("before_validation", "before_save", "before_update"),
    "destroy": ("before_destroy",),
}
AFTER_STEPS: dict[Action, tuple[str, ...]] = {
    "create": ("after_validation", "after_create", "after_save"),
    "update": ("after_validation", "after_update", "after_save"),
    "destroy": ("after_destroy",),
}


class EventSink(Protocol):
    """Where after-events go: the outbox, written in the caller's transaction."""

    def add(
        self,
        connection: Connection,
        envelope: dict[str, Any],
        *,
        subject: str,
        targets: Iterable[tuple[str, str]],
    ) -> None: ...

    def notify(self) -> None: ...


@dataclass(eq=False)
class _Model:
    cls: type[Any]
    name: str
    schema: str | dict[str, Any] | None
    immutable: frozenset[str]
    shape: RecordShape
    strict: Any = None  # compiled record schema, once bound
    draft: Any = None  # compiled draft schema (new rows)
    # Where those schemas are in the bus's own document, when they are the same
    # schemas there (the bus then trusts this check of a record: ``record_passed``).
    strict_uri: str | None = None
    draft_uri: str | None = None


@dataclass(eq=False)
class _Change:
    """One object's change in one flush: what its events see."""

    model: _Model
    action: Action
    obj: Any
    key: str | None
    record: dict[str, Any] = field(default_factory=dict)
    previous: dict[str, Any] | None = None
    validated: dict[str, Any] | None = None
    final: dict[str, Any] | None = None


@dataclass(eq=False)
class _Flush:
    """A session's current flush, as its before-events left it."""

    pending: dict[InstanceState[Any], _Change] = field(default_factory=dict)
    error: Exception | None = None


def diff(previous: dict[str, Any] | None, record: dict[str, Any]) -> dict[str, Any]:
    """``{"field": {"from": old, "to": new}}`` for the fields that differ."""
    before = previous or {}
    return {
        key: {"from": before.get(key), "to": value}
        for key, value in record.items()
        if before.get(key) != value
    }


class ModelTracker:
    """Lifecycle events for SQLAlchemy models, through an ``EventBus`` and an outbox.

    ``track`` the models, then ``bind`` the bus (with the plug-ins) and the
    outbox once they are loaded; ``close`` removes the SQLAlchemy listeners.
    ``strict=True`` refuses ORM bulk statements on tracked models
    (``UntrackedChange``) instead of warning about them.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self._models: dict[type[Any], _Model] = {}
        self._by_type: dict[type[Any], _Model | None] = {}
        self._bus: EventBus | None = None
        self._outbox: EventSink | None = None
        self._warned: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()
        self._key = f"hostwire.tracking.{id(self)}"
        self._notify_key = f"{self._key}.notify"
        self._handoff_key = f"{self._key}.handoff"
        self._listeners: list[tuple[Any, str, Callable[..., Any]]] = []
        self._listen(Session, "before_flush", self._before_flush)
        self._listen(Session, "after_flush", self._after_flush)
        self._listen(Session, "after_commit", self._after_commit)
        self._listen(Session, "after_soft_rollback", self._after_rollback)
        self._listen(Session, "do_orm_execute", self._orm_execute)

    # -- setting up ---------------------------------------------------------------

    def track(
        self,
        cls: type[Any],
        *,
        name: str | None = None,
        schema: str | dict[str, Any] | None = None,
        immutable: Iterable[str] = (),
    ) -> None:
        """Raise ``<name>.<phase>_<step>`` events for every change of ``cls`` objects.

        ``name`` defaults to the class name in snake_case; ``schema`` is the
        record schema (a component name of the app's document, or a JSON
        schema); ``immutable`` names fields plug-ins may not change (the
        primary key never may).
        """
        mapper = sa.inspect(cls, raiseerr=False)
        if not isinstance(mapper, Mapper):
            raise TypeError(f"{cls!r} is not a mapped SQLAlchemy class, so it cannot be tracked.")
        name = name or snake_case(cls.__name__)
        if EVENT_TYPE.match(f"{name}.before_save") is None:
            raise ValueError(
                f'Tracked model name "{name}" must be lowercase letters, digits and _, '
                "starting with a letter."
            )
        if cls in self._models:
            raise ValueError(f'{cls.__name__} is already tracked as "{self._models[cls].name}".')
        if any(m.name == name for m in self._models.values()):
            raise ValueError(f'Another class is already tracked as "{name}".')
        shape = RecordShape(mapper, name)
        fixed = frozenset(immutable)
        unknown = sorted(fixed - set(shape.columns))
        if unknown:
            raise ValueError(
                f"{cls.__name__} has no mapped column {', '.join(unknown)}, so it cannot be "
                "immutable."
            )
        model = _Model(cls, name, schema, fixed, shape)
        self._models[cls] = model
        self._by_type.clear()
        for kind in ("insert", "update", "delete"):
            self._listen(cls, f"before_{kind}", self._before_write, propagate=True)
        self._listen(cls, "after_insert", self._after_insert, propagate=True)
        self._listen(cls, "after_update", self._after_update, propagate=True)
        self._listen(cls, "after_delete", self._after_delete, propagate=True)
        if self._bus is not None:
            self._compile(self._bus)

    @property
    def models(self) -> dict[str, type[Any]]:
        """Tracked classes by model name."""
        return {m.name: m.cls for m in self._models.values()}

    def bind(self, bus: EventBus, outbox: EventSink | None) -> None:
        """Start raising events: before-events through ``bus``, after-events into ``outbox``.

        Record schemas are looked up in ``bus.spec`` (the app's document) and
        compiled now: a ``schema=`` the document lacks is a ``SpecError`` here.
        """
        self._compile(bus)
        self._bus, self._outbox = bus, outbox

    def unbind(self) -> None:
        """Stop raising events (writes go on, with a warning per model)."""
        self._bus = self._outbox = None

    def close(self) -> None:
        """Remove every SQLAlchemy listener of this tracker. Idempotent."""
        self.unbind()
        listeners, self._listeners = self._listeners, []
        for target, identifier, fn in listeners:
            event.remove(target, identifier, fn)

    def components(self, document: dict[str, Any]) -> dict[str, Any]:
        """The component schemas ``document`` needs for the tracked models' webhooks."""
        return self._schemas(document)[1]

    def webhooks(self, document: dict[str, Any]) -> dict[str, Any]:
        """OpenAPI 3.1 ``webhooks`` entries for every tracked model's events (those
        ``document`` does not declare already); add ``components`` too."""
        if str(document.get("openapi", "")).startswith("3.0"):
            raise SpecError(
                "Webhooks need OpenAPI 3.1, and the document is "
                f"{document.get('openapi')}; the tracked models' events cannot be declared."
            )
        names, _ = self._schemas(document)
        declared = document.get("webhooks") or {}
        hooks: dict[str, Any] = {}
        for model in self._models.values():
            for key, hook in model_webhooks(model.name, names[model.name]).items():
                if key not in declared:
                    hooks[key] = hook
        return hooks

    def document(self, document: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``document`` with the tracked models' components and webhooks added."""
        return with_schemas(document, self.components(document), self.webhooks(document))

    def _schemas(self, document: dict[str, Any]) -> tuple[dict[str, ModelSchemas], dict[str, Any]]:
        names: dict[str, ModelSchemas] = {}
        added: dict[str, Any] = {}
        current = document
        for model in self._models.values():
            found = model_schemas(current, model.shape, model.schema)
            names[model.name] = found
            added.update(found.added)
            current = with_schemas(current, found.added, {})
        return names, added

    def _compile(self, bus: EventBus) -> None:
        base = bus.spec.document if bus.spec is not None else standalone_document()
        names, added = self._schemas(base)
        spec = document_spec(with_schemas(base, added, {}), bus.spec)
        for model in self._models.values():
            found = names[model.name]
            model.strict = compile_schema(spec, spec.component_schema(found.record))
            model.draft = compile_schema(spec, spec.component_schema(found.draft))
            model.strict_uri = _same_in(bus, spec, found.record)
            model.draft_uri = _same_in(bus, spec, found.draft)

    def _listen(self, target: Any, identifier: str, fn: Callable[..., Any], **kw: Any) -> None:
        event.listen(target, identifier, fn, **kw)
        self._listeners.append((target, identifier, fn))

    def _model_for(self, kind: type[Any]) -> _Model | None:
        if kind not in self._by_type:
            self._by_type[kind] = next(
                (self._models[c] for c in kind.__mro__ if c in self._models), None
            )
        return self._by_type[kind]

    def _warn_once(self, key: tuple[str, ...], message: str, *args: object) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning(message, *args)

    # -- before the flush: before-events ---------------------------------------

    def _before_flush(self, session: Session, flush_context: Any, instances: Any) -> None:
        changes = self._collect(session)
        flush = _Flush()
        session.info[self._key] = flush
        if not changes:
            return
        bus = self._bus
        if bus is None:
            for change in changes:
                self._warn_once(
                    ("unbound", change.model.name),
                    "%s objects changed before hostwire started; those changes have no "
                    "lifecycle events.",
                    change.model.cls.__name__,
                )
            return
        try:
            self._check_reentry(changes)
            for change in changes:
                self._prepare(session, change)
            if any(bus.handlers(c.model.name, s) for c in changes for s in BEFORE_STEPS[c.action]):
                self._off_loop(session, changes[0].model, lambda: self._run_before(bus, changes))
            else:
                self._run_before(bus, changes)
            for change in changes:
                self._write_back(change)
        except Exception as exc:
            # Raised again inside the flush (``_before_write``), where SQLAlchemy
            # rolls the transaction back as it does for a database error.
            flush.error = exc
            return
        for change in changes:
            flush.pending[sa.inspect(change.obj)] = change

    def _collect(self, session: Session) -> list[_Change]:
        changes = []
        for obj in session.new:
            model = self._model_for(type(obj))
            if model is not None:
                changes.append(_Change(model, "create", obj, self._new_key(model, obj)))
        for obj in session.dirty:
            model = self._model_for(type(obj))
            if model is not None and session.is_modified(obj, include_collections=False):
                changes.append(_Change(model, "update", obj, self._identity_key(model, obj)))
        for obj in session.deleted:
            model = self._model_for(type(obj))
            if model is not None:
                changes.append(_Change(model, "destroy", obj, self._identity_key(model, obj)))
        return changes

    @staticmethod
    def _identity_key(model: _Model, obj: Any) -> str | None:
        identity = sa.inspect(obj).identity
        return f"{model.name}/{'/'.join(map(str, identity))}" if identity else None

    @staticmethod
    def _new_key(model: _Model, obj: Any) -> str | None:
        values = [sa.inspect(obj).dict.get(key) for key in model.shape.primary]
        if any(v is None for v in values):
            return None  # the database makes it: nothing further up can be changing it
        return f"{model.name}/{'/'.join(map(str, values))}"

    @staticmethod
    def _check_reentry(changes: list[_Change]) -> None:
        changing = CHANGING.get()
        for change in changes:
            if change.key is not None and change.key in changing:
                raise RecordReentrant(
                    f'{change.model.cls.__name__} "{change.key}" cannot change while a change '
                    "of it is under way (a plug-in handling that change tried to change the "
                    "same record); change the record in the handler's answer instead.",
                    model=change.model.name,
                    key=change.key,
                )

    def _prepare(self, session: Session, change: _Change) -> None:
        shape = change.model.shape
        state = sa.inspect(change.obj)
        if change.action == "create":
            _apply_defaults(shape, change.obj, state, "default")
            change.record = shape.record(state.dict)
            return
        previous = _committed(session, shape, state)
        change.previous = shape.record(previous)
        if change.action == "destroy":
            change.record = dict(change.previous)
            return
        _apply_defaults(shape, change.obj, state, "onupdate")
        current = {key: state.dict.get(key, previous.get(key)) for key in shape.columns}
        change.record = shape.record(current)

    def _off_loop(self, session: Session, model: _Model, work: Callable[[], None]) -> None:
        """Run ``work`` (plug-in calls) where it blocks no event loop."""
        if session.get_bind(mapper=sa.inspect(model.cls)).dialect.is_async:
            # An AsyncSession: this is SQLAlchemy's greenlet on the loop's thread.
            # (AdaptedConnection.run_async would do too, but it needs a pooled
            # connection, held for as long as the plug-ins run.)
            _await(to_thread(work))
            return
        if _loop_running_here():
            self._warn_once(
                ("on-loop",),
                "A synchronous Session flushed tracked objects on an event loop's thread, so "
                "plug-ins block the loop and cannot call the app in process; use an "
                "AsyncSession there, or a def route.",
            )
            work()
            return
        run_blocking(work)

    def _run_before(self, bus: EventBus, changes: list[_Change]) -> None:
        keys = {c.key for c in changes if c.key is not None}
        token = CHANGING.set(CHANGING.get() | keys)
        try:
            for change in changes:
                self._before_events(bus, change)
        finally:
            CHANGING.reset(token)

    def _before_events(self, bus: EventBus, change: _Change) -> None:
        model, previous = change.model, change.previous
        if change.action == "destroy":
            bus.before(model.name, "before_destroy", change.record, previous, {})
            return
        create = change.action == "create"
        schema = model.draft if create else model.strict
        # Checked first too: every envelope must match its webhook.
        _check(model, schema, change.record, f"The {model.name} is not valid")
        uri = model.draft_uri if create else model.strict_uri
        if uri is not None:
            bus.record_passed(uri, change.record)
        record = change.record
        for step in BEFORE_STEPS[change.action]:
            replaced = bus.before(model.name, step, record, previous, diff(previous, record))
            if replaced != record:
                where = f"after {model.name}.{step}"
                _check(
                    model, schema, replaced, f"A plug-in made the {model.name} invalid ({where})"
                )
                _same_identity(model, change.record, replaced, step)
            record = replaced
            if step == "before_validation":
                change.validated = dict(record)
        change.final = record

    @staticmethod
    def _write_back(change: _Change) -> None:
        final, shape = change.final, change.model.shape
        if final is None or final == change.record:
            return
        for key, value in final.items():
            if key not in shape.columns or value == change.record.get(key):
                continue
            try:
                setattr(change.obj, key, shape.from_json(key, value))
            except ValueError as exc:
                raise RecordInvalid(
                    f"A plug-in gave {change.model.name} field {key} a value it cannot hold.",
                    model=change.model.name,
                    details=[{"field": f"/{key}", "message": str(exc)}],
                ) from exc

    # -- inside the flush -----------------------------------------------------------

    def _before_write(self, mapper: Mapper[Any], connection: Connection, target: Any) -> None:
        self._raise_pending(object_session(target))

    def _after_flush(self, session: Session, flush_context: Any) -> None:
        self._raise_pending(session)
        session.info.pop(self._key, None)

    def _raise_pending(self, session: Session | None) -> None:
        flush = session.info.get(self._key) if session is not None else None
        if flush is not None and flush.error is not None:
            error, flush.error = flush.error, None
            raise error

    def _after_insert(self, mapper: Mapper[Any], connection: Connection, target: Any) -> None:
        self._after_write("create", mapper, connection, target)

    def _after_update(self, mapper: Mapper[Any], connection: Connection, target: Any) -> None:
        self._after_write("update", mapper, connection, target)

    def _after_delete(self, mapper: Mapper[Any], connection: Connection, target: Any) -> None:
        self._after_write("destroy", mapper, connection, target)

    def _after_write(
        self, action: Action, mapper: Mapper[Any], connection: Connection, target: Any
    ) -> None:
        session = object_session(target)
        bus, model = self._bus, self._model_for(type(target))
        if session is None or bus is None or model is None:
            return
        state = sa.inspect(target)
        flush = session.info.get(self._key)
        change = flush.pending.pop(state, None) if flush is not None else None
        if change is None:
            change = self._unseen(action, model, state)
            if change is None:
                return
        steps = [s for s in AFTER_STEPS[action] if bus.handlers(model.name, s)]
        if not steps:
            return
        outbox = self._outbox
        if outbox is None:
            self._warn_once(
                ("no-outbox", model.name),
                "Plug-ins handle %s after-events, but hostwire has no outbox to deliver them.",
                model.name,
            )
            return
        shape = model.shape
        pk = mapper.primary_key_from_instance(target)
        if action == "destroy":
            stored = change.previous or change.record
        else:
            stored = _stored(connection, mapper, shape, pk)
        subject = f"{model.name}/{'/'.join(map(str, pk))}"
        handoff: list[Any] | None = None
        if isinstance(outbox, Outbox):
            handoff = session.info.setdefault(self._handoff_key, [])
        for step in steps:
            record = stored
            if step == "after_validation":
                validated = change.validated or change.record
                # As validated, with what the database filled in since.
                record = {
                    **validated,
                    **{k: stored[k] for k in shape.generated if validated.get(k) is None},
                }
            envelope = bus.envelope(
                model.name, step, record, change.previous, diff(change.previous, record)
            )
            targets = [
                (h.plugin.name, event_export(model.name, step))
                for h in bus.handlers(model.name, step)
            ]
            if handoff is not None:
                Outbox.add(connection, envelope, subject=subject, targets=targets, handoff=handoff)
            else:
                outbox.add(connection, envelope, subject=subject, targets=targets)
        session.info[self._notify_key] = True

    def _unseen(self, action: Action, model: _Model, state: InstanceState[Any]) -> _Change | None:
        """A row the flush itself wrote (a cascade, a relationship's foreign key)."""
        shape = model.shape
        if action == "update" and not any(
            state.attrs[key].history.has_changes() for key in shape.columns
        ):
            return None  # marked dirty, nothing of its own changed: no UPDATE
        self._warn_once(
            ("unseen", model.name, action),
            "A %s row was written by the flush itself (a cascade or a relationship), "
            "so its %s had after-events but no before-events.",
            model.name,
            action,
        )
        previous = None
        if action != "create":
            committed = {}
            for key in shape.columns:
                history = state.attrs[key].history
                old = history.deleted or history.unchanged or history.added
                committed[key] = old[0] if old else None
            previous = shape.record(committed)
        record = shape.record(state.dict) if action != "destroy" else previous or {}
        return _Change(model, action, state.obj(), None, record, previous)

    # -- after the transaction -------------------------------------------------------

    def _after_commit(self, session: Session) -> None:
        outbox = self._outbox
        handoff = session.info.pop(self._handoff_key, None)
        if session.info.pop(self._notify_key, False) and outbox is not None:
            if handoff and isinstance(outbox, Outbox):
                outbox.committed(handoff)  # the committed deliveries, to the workers in memory
            else:
                outbox.notify()

    def _after_rollback(self, session: Session, previous_transaction: Any) -> None:
        session.info.pop(self._key, None)
        if previous_transaction.parent is None:  # the whole transaction, not a savepoint
            session.info.pop(self._notify_key, None)
            session.info.pop(self._handoff_key, None)
        else:
            # Which deliveries the savepoint undid is unknown: none of this transaction
            # is handed over, the workers read what committed (the notify flag stays).
            session.info[self._handoff_key] = None

    def _orm_execute(self, state: ORMExecuteState) -> None:
        if not (state.is_insert or state.is_update or state.is_delete):
            return
        mapper = state.bind_mapper
        model = self._model_for(mapper.class_) if mapper is not None else None
        if model is None:
            return
        kind = "insert" if state.is_insert else "update" if state.is_update else "delete"
        message = (
            f"session.execute({kind}({model.cls.__name__})) changes {model.name} rows without "
            "lifecycle events: hostwire sees only objects the Session flushes (add, attribute "
            "changes, delete)."
        )
        if self.strict:
            raise UntrackedChange(message, model=model.name)
        self._warn_once(("bulk", model.name, kind), "%s", message)


class _DefaultContext:
    """What a context-sensitive column default may ask for, before the INSERT."""

    def __init__(self, parameters: dict[str, Any], column: sa.Column[Any]) -> None:
        self.current_parameters = parameters
        self.current_column = column

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        return self.current_parameters


def _apply_defaults(
    shape: RecordShape, obj: Any, state: InstanceState[Any], which: Literal["default", "onupdate"]
) -> None:
    """Put the Python-side column defaults (or onupdate values) onto ``obj`` now, so
    the before-events see the values SQLAlchemy would write."""
    for key, column in shape.columns.items():
        # A ColumnDefault (scalar or callable ``arg``), a Sequence, a SQL expression...
        default: Any = column.default if which == "default" else column.onupdate
        if default is None or not (default.is_scalar or default.is_callable):
            continue
        if which == "default" and state.dict.get(key) is not None:
            continue
        if which == "onupdate" and state.attrs[key].history.added:
            continue  # the app set it itself
        if default.is_scalar:
            value = default.arg
        else:
            parameters = {c.key: state.dict[k] for k, c in shape.columns.items() if k in state.dict}
            try:
                value = default.arg(_DefaultContext(parameters, column))
            except Exception as exc:  # it needs the real statement: SQLAlchemy runs it then
                log.debug(
                    "the default of %s.%s runs at the INSERT: %s",
                    shape.model,
                    key,
                    log_safe(repr(exc)),
                )
                continue
        setattr(obj, key, value)


def _committed(session: Session, shape: RecordShape, state: InstanceState[Any]) -> dict[str, Any]:
    """The committed values of a persistent object's columns, by attribute name."""
    values: dict[str, Any] = {}
    unknown = []
    for key in shape.columns:
        history = state.attrs[key].history
        if history.deleted:
            values[key] = history.deleted[0]
        elif history.unchanged:
            values[key] = history.unchanged[0]
        else:
            unknown.append(key)  # not loaded, or set before its old value was
    if unknown and state.identity is not None:
        mapper = state.mapper
        connection = session.connection(bind_arguments={"mapper": mapper})
        columns = [shape.columns[key] for key in unknown]
        where = [c == v for c, v in zip(mapper.primary_key, state.identity, strict=True)]
        query = sa.select(*columns).select_from(mapper.persist_selectable).where(*where)
        row = connection.execute(query).first()
        if row is not None:
            values.update(zip(unknown, row, strict=True))
    return values


def _stored(
    connection: Connection, mapper: Mapper[Any], shape: RecordShape, pk: Iterable[Any]
) -> dict[str, Any]:
    """The row as the database holds it now (server defaults included), as a record."""
    query = _STORED.get(mapper)
    if query is None:
        columns = list(shape.columns.values())
        where = [c == sa.bindparam(f"pk{i}") for i, c in enumerate(mapper.primary_key)]
        query = sa.select(*columns).select_from(mapper.persist_selectable).where(*where)
        _STORED[mapper] = query
    args = {f"pk{i}": v for i, v in enumerate(pk)}
    row = connection.execute(query, args).one()
    return shape.record(dict(zip(shape.columns, row, strict=True)))


# One statement per mapper (built once, compiled once by SQLAlchemy's cache).
_STORED: weakref.WeakKeyDictionary[Mapper[Any], Any] = weakref.WeakKeyDictionary()


def _same_in(bus: EventBus, spec: Any, name: str) -> str | None:
    """The place of component schema ``name`` of ``spec`` when the bus's document has
    the very same schema there, else None."""
    if bus.spec is None:
        return None
    theirs = (bus.spec.document.get("components") or {}).get("schemas") or {}
    node = spec.component_schema(name)
    if name not in theirs or theirs[name] != node.value:
        return None
    uri: str = bus.spec.component_schema(name).uri
    return uri if uri == node.uri else None


def _check(model: _Model, schema: Any, record: dict[str, Any], message: str) -> None:
    problems = schema.problems("record", "", record)
    if problems:
        first = problems[0]
        raise RecordInvalid(
            f"{message}: {first['field']}: {first['message']}.",
            model=model.name,
            details=[{"field": p["field"], "message": p["message"]} for p in problems],
        )


def _same_identity(model: _Model, before: dict[str, Any], after: dict[str, Any], step: str) -> None:
    for key in (*model.shape.primary, *sorted(model.immutable)):
        if key in after and after[key] != before.get(key):
            raise RecordInvalid(
                f"A plug-in changed {model.name} field {key} in {model.name}.{step}; the "
                "primary key and immutable fields cannot change.",
                model=model.name,
                details=[{"field": f"/{key}", "message": "cannot change"}],
            )


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
