"""``--log-format json``: one JSON object per log line, for the tools operators run.

Each line has ``time`` (RFC 3339, UTC), ``level``, ``logger`` and ``message``,
and, when the record carries them (``extra=``), ``request_id``, ``plugin``,
``export``, ``outcome``, ``event_id`` (an event delivery's), ``operation`` and
``status`` (a failed host call's); ``exc`` is a logged exception as one string. Under
``--workers N`` each line also has ``worker``, the process's number.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

FORMATS = ("text", "json")
FORMAT_ENV = "HOSTWIRE_LOG_FORMAT"
TEXT_FORMAT = "%(name)s: %(levelname)s: %(message)s"
FIELDS = ("request_id", "plugin", "export", "outcome", "event_id", "operation", "status")
# The id of the request being answered: an app's request-id middleware sets it, and
# every line logged while the request runs (plug-in calls in worker threads too) has it.
current_request_id: ContextVar[str | None] = ContextVar("hostwire_request_id", default=None)


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON; ``static`` fields go on every line (a worker's
    number under ``--workers``)."""

    def __init__(self, static: dict[str, object] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **self.static,
        }
        for field in FIELDS:
            value = getattr(record, field, None)
            if value is None and field == "request_id":
                value = current_request_id.get()
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def log_format(given: str | None) -> str:
    """The format asked for: ``given``, else ``HOSTWIRE_LOG_FORMAT``, else text."""
    chosen = given or os.environ.get(FORMAT_ENV) or "text"
    if chosen not in FORMATS:
        raise ValueError(f"{FORMAT_ENV}={chosen!r}: give one of {', '.join(FORMATS)}.")
    return chosen


def configure(level: int, fmt: str) -> None:
    """The root logger's one handler on stderr, in ``fmt`` (text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=fmt == "json")


def configure_worker(number: int, *, level: int, fmt: str) -> None:
    """A ``--workers`` process's logging: its number in each text line, or a
    ``worker`` field in each JSON one (uvicorn's loggers included)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter({"worker": number}))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(name)s: worker {number}: %(levelname)s: %(message)s")
        )
    logging.basicConfig(level=level, handlers=[handler], force=True)
