# TEMPORARY STUB (not committed): replaced by helper B's tracking.py
from typing import Any


class ModelTracker:
    names: list[str] = []

    def track(self, model: Any, *, name: Any = None, schema: Any = None) -> None: ...
    def bind(self, bus: Any, outbox: Any) -> None: ...
    def unbind(self) -> None: ...
    def webhooks(self, document: Any) -> dict[str, Any]:
        return {}
