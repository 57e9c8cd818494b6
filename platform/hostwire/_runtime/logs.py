"""Extism's log, routed to Python logging.

Extism has one process-wide log buffer. Plug-in log lines (``log_info``...)
and the runtime's own error reports, which hold the real reason for a trap or
a denied host, only appear there. This module drains that buffer, sends each
plug-in's lines to the logger ``hostwire.plugin.<name>`` and keeps the last
error report of each instance so the runtime can put it in its exception.

Every value a client or a plug-in controls goes into a log line through
``log_safe``: a line break or a bidi override in it cannot forge or disguise
a line.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import extism

from hostwire._text import caused_by

_LINE = re.compile(
    r"^\S+\s+(?P<level>TRACE|DEBUG|INFO|WARN|ERROR)\s+(?P<target>[\w:]+):\s?(?P<message>.*?)"
    r'(?:\s+plugin="(?P<uuid>[0-9a-f-]{36})")?\s*$',
    re.DOTALL,
)
_LEVELS = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
}
_runtime_log = logging.getLogger("hostwire.extism")


def _escape_char(char: str) -> str:
    if char == '"':
        return '\\"'
    if char == "\\" or not char.isprintable():
        return char.encode("unicode_escape").decode("ascii")
    return char


def log_safe(text: object) -> str:
    """``text`` for one log line: backslash, double quote and every character that is
    not printable (controls, line and paragraph separators, bidi and other format
    characters) escaped the way Python writes them (``\\n``, ``\\x00``, ``\\u202e``)."""
    text = str(text)
    if text.isprintable() and "\\" not in text and '"' not in text:
        return text
    return "".join(_escape_char(char) for char in text)


@dataclass
class _Instance:
    logger: logging.Logger
    last_error: str | None = None


@dataclass
class LogRouter:
    """Routes drained Extism log lines to the instance that wrote them."""

    _instances: dict[str, _Instance] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _logger: Any = None

    def start(self) -> None:
        """Install the Extism log callback once per process."""
        with self._lock:
            if self._logger is None:
                level = os.environ.get("HOSTWIRE_EXTISM_LOG", "info")
                self._logger = extism.set_log_custom(self._on_line, level)

    def register(self, uuid: str, plugin_name: str) -> None:
        logger = logging.getLogger(f"hostwire.plugin.{plugin_name}")
        with self._lock:
            self._instances[uuid] = _Instance(logger)

    def unregister(self, uuid: str) -> None:
        with self._lock:
            self._instances.pop(uuid, None)

    def drain(self) -> None:
        """Deliver every buffered line now."""
        if self._logger is not None:
            self._logger.drain()

    def take_error(self, uuid: str) -> str | None:
        """Drain, then return and forget the instance's last error report."""
        self.drain()
        with self._lock:
            instance = self._instances.get(uuid)
            if instance is None:
                return None
            reason, instance.last_error = instance.last_error, None
        return reason

    def _on_line(self, line: str) -> None:
        match = _LINE.match(line)
        if match is None:
            _runtime_log.debug("%s", log_safe(line.rstrip()))
            return
        level = _LEVELS[match["level"]]
        message = match["message"]
        with self._lock:
            instance = self._instances.get(match["uuid"] or "")
        if instance is None:
            _runtime_log.log(level, "%s", log_safe(message.rstrip()))
        elif match["target"] == "extism::pdk":
            instance.logger.log(level, "%s", log_safe(message))
        elif level >= logging.ERROR:
            instance.last_error = caused_by(message) or message.splitlines()[0]
            instance.logger.debug("extism: %s", log_safe(instance.last_error))
        else:
            instance.logger.debug("extism: %s", log_safe(message.rstrip()))


ROUTER = LogRouter()
