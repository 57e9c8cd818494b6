"""Tracked models' lifecycle events as OpenAPI 3.1 webhooks and component schemas.

For a tracked model ``task`` of class ``Task`` a document gains:

- the record schema: the component given as ``schema="..."``, else a
  component named like the class, else one derived from the columns (added
  as ``Task``, or ``TaskRecord`` when ``Task`` is taken; a JSON schema given
  as ``schema={...}`` is added the same way);
- ``TaskDraft`` when the database or the flush fills columns of a new row
  (an autoincrement id, server defaults, foreign keys a relationship sets):
  the record as before-events of a create see it, those columns nullable;
- ``TaskEvent``, the Standard Webhooks envelope of after-events, and
  ``TaskBeforeEvent`` (the draft record) of before-events when there is a
  draft; ``TaskBeforeEventResult``, what a before-handler answers;
- one webhook per step, ``task.before_validation`` to ``task.after_destroy``,
  shaped like openapi/light.yaml's, so the PDK generators give typed handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from referencing import Registry
from referencing.jsonschema import DRAFT4, DRAFT202012

from hostwire._contract import LIFECYCLE_STEPS, PHASES
from hostwire._errors import SpecError
from hostwire._events.records import RecordShape, nullable
from hostwire._hostapi import OpenAPIDocument

STEPS = tuple(f"{phase}_{step}" for phase in PHASES for step in LIFECYCLE_STEPS)
_REF = "#/components/schemas/"
_DOING = {
    "validation": "validating",
    "create": "creating",
    "save": "saving (create or update)",
    "update": "updating",
    "destroy": "destroying",
}
# A document the tracker validates against when the app has none; never read from disk.
STANDALONE_URI = "file:///hostwire/tracked-models.json"


@dataclass(frozen=True, slots=True)
class ModelSchemas:
    """The component names one tracked model's events use, and those to add."""

    record: str
    draft: str
    event: str
    before_event: str
    result: str
    added: dict[str, Any] = field(default_factory=dict)


def model_schemas(
    document: dict[str, Any], shape: RecordShape, schema: str | dict[str, Any] | None
) -> ModelSchemas:
    """Where ``shape``'s record schema is in ``document``, and the components it lacks."""
    existing = (document.get("components") or {}).get("schemas") or {}
    v30 = str(document.get("openapi", "")).startswith("3.0")
    model, cls = shape.model, shape.mapper.class_.__name__
    wanted: dict[str, Any] = {}
    if isinstance(schema, str):
        if schema not in existing:
            raise SpecError(
                f'Tracked model "{model}" names schema "{schema}", but the OpenAPI document '
                f"has no components/schemas/{schema}."
            )
        record, value = schema, existing[schema]
    elif schema is None and cls in existing:
        record, value = cls, existing[cls]
    else:
        value = schema if schema is not None else shape.schema(v30=v30)
        record = cls if cls not in existing or existing[cls] == value else f"{cls}Record"
        wanted[record] = value
    draft = record
    if shape.generated:
        draft = f"{cls}Draft"
        wanted[draft] = _draft(model, record, _resolve(existing, value), shape, v30=v30)
    # Names only the added webhooks refer to: one the document uses for a schema
    # of its own (its declared webhooks' event, say) gets a number.
    event = _free(existing, f"{cls}Event", _event(model, record, record, after=True), wanted)
    # Before-events have a schema of their own: their type is a before_<step>.
    content = _event(model, draft, record, after=False)
    before_event = _free(existing, f"{cls}BeforeEvent", content, wanted)
    result = _free(existing, f"{cls}BeforeEventResult", _result(draft), wanted)
    added = {}
    for name, content in wanted.items():
        if name not in existing:
            added[name] = content
        elif existing[name] != content:
            raise SpecError(
                f'The OpenAPI document already has a component schema "{name}" unlike the one '
                f'tracked model "{model}" needs; rename that schema or the class {cls}.'
            )
    return ModelSchemas(record, draft, event, before_event, result, added)


def _free(existing: dict[str, Any], name: str, content: Any, wanted: dict[str, Any]) -> str:
    """``name``, or ``name2``, ``name3``...: the first the document lacks or has as ``content``."""
    found, number = name, 1
    while found in existing and existing[found] != content:
        number += 1
        found = f"{name}{number}"
    wanted[found] = content
    return found


def _resolve(existing: dict[str, Any], value: Any) -> Any:
    seen = set()
    while isinstance(value, dict) and str(value.get("$ref", "")).startswith(_REF):
        name = value["$ref"][len(_REF) :]
        if name in seen or name not in existing:
            break
        seen.add(name)
        value = existing[name]
    return value


def _draft(model: str, record: str, value: Any, shape: RecordShape, *, v30: bool) -> dict[str, Any]:
    properties = value.get("properties") if isinstance(value, dict) else None
    if not isinstance(properties, dict):
        raise SpecError(
            f'Schema "{record}" of tracked model "{model}" is not an object schema with '
            f"properties, so hostwire cannot make {', '.join(sorted(shape.generated))} "
            "(filled by the database or the flush) null for new rows; give track() a schema= "
            "that is one."
        )
    return {
        **value,
        "description": (
            f"A {model} as before-events of a create see it: the columns the database or "
            f"the flush fills ({', '.join(sorted(shape.generated))}) may be null until the "
            "row is written."
        ),
        "properties": {
            key: nullable(prop, v30=v30) if key in shape.generated else prop
            for key, prop in properties.items()
        },
    }


def _event(model: str, record: str, previous: str, *, after: bool) -> dict[str, Any]:
    phase = "after" if after else "before"
    return {
        "type": "object",
        "description": (
            f"{'An' if after else 'A'} {phase}-event of a {model}, in the Standard Webhooks "
            f"shape. Plug-ins receive it in their {model}_{phase}_<step> export."
        ),
        "required": ["id", "type", "timestamp", "data"],
        "additionalProperties": False,
        "properties": {
            "id": {
                "type": "string",
                "pattern": "^evt_",
                "description": "Unique event id; handlers use it as the idempotency key.",
            },
            "type": {
                "type": "string",
                "pattern": f"^{model}[.]{phase}_({'|'.join(LIFECYCLE_STEPS)})$",
                "description": f"The event type, e.g. {model}.{phase}_save.",
            },
            "timestamp": {
                "type": "string",
                "format": "date-time",
                "description": "When the event happened (RFC 3339, UTC).",
            },
            "data": {
                "type": "object",
                "description": "The change.",
                "required": ["record", "previous", "changes"],
                "additionalProperties": False,
                "properties": {
                    "record": {"$ref": _REF + record},
                    "previous": {
                        "description": f"The {model} before the change; null for a create.",
                        "oneOf": [{"$ref": _REF + previous}, {"type": "null"}],
                    },
                    "changes": {
                        "type": "object",
                        "description": (
                            "The fields that differ from previous, as "
                            '{"field": {"from": old, "to": new}}.'
                        ),
                        "additionalProperties": {
                            "type": "object",
                            "description": "One changed field.",
                            "required": ["from", "to"],
                            "properties": {
                                "from": {"description": "The old value (null for a create)."},
                                "to": {"description": "The new value."},
                            },
                        },
                    },
                },
            },
        },
    }


def _result(draft: str) -> dict[str, Any]:
    return {
        "description": (
            'What a before-event handler answers: {} (or nothing) to go on, {"record": {...}} '
            'to replace the record (validated again), or {"reject": {"reason": "..."}} to '
            "refuse the change."
        ),
        "type": "object",
        "maxProperties": 1,
        "additionalProperties": False,
        "properties": {
            "record": {"$ref": _REF + draft},
            "reject": {
                "type": "object",
                "description": "Refuse the change; the API answers 422 with this reason.",
                "required": ["reason"],
                "properties": {
                    "reason": {"type": "string", "minLength": 1, "description": "Why, for people."}
                },
            },
        },
    }


def model_webhooks(model: str, names: ModelSchemas) -> dict[str, Any]:
    """The ten webhooks of ``model``'s lifecycle, ``<model>.<phase>_<step>``."""
    hooks = {}
    for step in STEPS:
        phase, _, kind = step.partition("_")
        export = f"{model}_{step}"
        operation: dict[str, Any] = {
            "operationId": _camel(export),
            "summary": f"{phase.capitalize()} {kind} of a {model}: {_DOING[kind]}.",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "$ref": _REF
                            + (names.before_event if phase == "before" else names.event)
                        }
                    }
                },
            },
        }
        if phase == "before":
            operation["description"] = (
                "Runs synchronously before the write; the handler may go on, replace the "
                f"record or reject the change. Export {export} to receive it."
            )
            operation["responses"] = {
                "200": {
                    "description": "The handler's answer.",
                    "content": {"application/json": {"schema": {"$ref": _REF + names.result}}},
                }
            }
        else:
            operation["description"] = (
                "Delivered after the write commits, at least once, from the durable outbox. "
                f"Export {export} to receive it."
            )
            operation["responses"] = {
                "200": {"description": "Handled; anything else (an error) means retry."}
            }
        hooks[f"{model}.{step}"] = {"post": operation}
    return hooks


def _camel(snake: str) -> str:
    first, *rest = snake.split("_")
    return first + "".join(part.capitalize() for part in rest)


def with_schemas(
    document: dict[str, Any], components: dict[str, Any], webhooks: dict[str, Any]
) -> dict[str, Any]:
    """A copy of ``document`` with ``components`` and ``webhooks`` added (theirs kept)."""
    merged = dict(document)
    parts = dict(merged.get("components") or {})
    parts["schemas"] = {**components, **(parts.get("schemas") or {})}
    merged["components"] = parts
    if webhooks:
        merged["webhooks"] = {**webhooks, **(merged.get("webhooks") or {})}
    return merged


def standalone_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tracked models", "version": "1"},
        "paths": {},
    }


def document_spec(document: dict[str, Any], base: OpenAPIDocument | None) -> OpenAPIDocument:
    """``document`` as an ``OpenAPIDocument`` for checking records: at ``base``'s
    place (its $refs to other files still resolve), or standalone."""
    specification = DRAFT4 if str(document.get("openapi", "")).startswith("3.0") else DRAFT202012
    resource = specification.create_resource(document)
    if base is not None:
        registry = base.registry.with_resource(base.uri, resource)
        return OpenAPIDocument(base.source, document, base.uri, registry)
    registry = Registry[Any]().with_resource(STANDALONE_URI, resource)
    return OpenAPIDocument("tracked models", document, STANDALONE_URI, registry)
