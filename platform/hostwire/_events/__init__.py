"""Lifecycle events: the in-process bus and the durable outbox for webhooks.

It owns delivering an app's model events to the plug-ins that export them
(``bus``), the outbox in the app's database that retries deliveries
(``outbox``), the app's database as a SQLAlchemy engine (``database``), the
guard that turns storage failures into ``StorageError`` (``storage``), the
HTTP hooks' rate limits counted in that database (``ratelimit``), and
SQLAlchemy models' lifecycle events (``tracking``: ``ModelTracker``; their
records in ``records``, their webhooks and schemas in ``webhooks``). It
imports ``hostwire._runtime`` and ``hostwire._hostapi`` (the document and its
schemas).
"""

from hostwire._events.bus import (
    Event,
    EventBus,
    Subscribed,
    Subscriber,
    SubscriberSource,
    encode_event,
    event_envelope,
    handled_events,
    new_envelope,
    new_event_id,
)
from hostwire._events.database import is_url, sync_engine
from hostwire._events.outbox import STATES, Outbox
from hostwire._events.ratelimit import (
    OnStorageError,
    RateLimit,
    RateLimiter,
    Refusal,
    check_rate_limit_key,
    limiter_for,
)
from hostwire._events.storage import StorageGuard
from hostwire._events.tracking import CHANGING, EventSink, ModelTracker

__all__ = [
    "CHANGING",
    "STATES",
    "Event",
    "EventBus",
    "EventSink",
    "ModelTracker",
    "OnStorageError",
    "Outbox",
    "RateLimit",
    "RateLimiter",
    "Refusal",
    "StorageGuard",
    "Subscribed",
    "Subscriber",
    "SubscriberSource",
    "check_rate_limit_key",
    "encode_event",
    "event_envelope",
    "handled_events",
    "is_url",
    "limiter_for",
    "new_envelope",
    "new_event_id",
    "sync_engine",
]
