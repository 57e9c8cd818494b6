"""What the admin routes need of the object that hosts the plug-ins.

``Hostwire`` provides it; so can any host that keeps plug-ins (the gateway).
A protocol, so ``_admin`` does not import ``_app``, which installs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from hostwire._events import Outbox
from hostwire._runtime import Plugin

if TYPE_CHECKING:  # console.py serves an AdminHost: only the type comes back here
    from hostwire._admin.console import ConsolePage


class AdminHost(Protocol):
    @property
    def admin_token(self) -> str | None:
        """The admin token; None turns the admin routes off."""

    @property
    def outbox(self) -> Outbox | None:
        """Where after-events wait for delivery (None: no events)."""

    def loaded_plugins(self) -> Iterable[Plugin]:
        """The plug-ins serving now (their current versions)."""

    def plugin_states(self) -> list[dict[str, Any]]:
        """Every configured plug-in, loaded or not, as JSON-able data."""

    def plugin_state(self, name: str) -> dict[str, Any] | None:
        """``plugin_states()``'s entry for plug-in ``name`` (None: no such plug-in)."""

    def replace_plugin(self, name: str, module: bytes, *, sha256: str | None = None) -> None:
        """Serve ``module`` as plug-in ``name`` (checked first; ``ConfigError`` refuses it)."""

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Start or stop serving plug-in ``name``."""

    def reload_config(self) -> None:
        """Read the configuration file again and serve what it says."""

    @property
    def console_pages(self) -> Sequence[ConsolePage]:
        """The console pages the app added (``Hostwire.console_page``)."""
