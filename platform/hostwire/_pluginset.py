"""The configured plug-ins of an app, loaded against its host functions."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from hostwire._config import HostwireConfig
from hostwire._contract import HTTP_HOOKS, http_hook_exports
from hostwire._events import RateLimit, Subscriber, handled_events
from hostwire._hostapi import HostApi
from hostwire._runtime import USER_MODULE, Plugin

log = logging.getLogger("hostwire.plugins")


class PluginSet:
    """Every enabled plug-in of a configuration, in the file's order.

    Each plug-in gets the host functions of ``api`` limited to its grants.
    If one plug-in fails to load, the ones already loaded are closed and the
    error is raised: an app never runs with half its plug-ins.
    ``rate_limits`` are the plug-ins' ``rate_limit`` entries, by name.
    """

    def __init__(self, config: HostwireConfig, api: HostApi | None) -> None:
        self.config = config
        self.api = api
        self.plugins: list[Plugin] = []
        self.subscribers: list[Subscriber] = []
        self.rate_limits: dict[str, RateLimit] = {}
        try:
            for entry in config.enabled_plugins:
                functions = api.host_functions(entry.name, entry.grants) if api else []
                plugin = entry.load(config.base_dir, functions)
                self.plugins.append(plugin)
                if entry.rate_limit is not None:
                    if HTTP_HOOKS[0] not in plugin.exports:
                        raise entry.error(
                            f"rate_limit counts the requests that reach its {HTTP_HOOKS[0]}, "
                            "but the plug-in does not export one."
                        )
                    self.rate_limits[entry.name] = entry.rate_limit.to_rate_limit()
                self.subscribers.append(Subscriber(plugin, entry.on_error))
                self._describe(plugin, api.resolve_grants(entry.grants) if api else frozenset())
        except BaseException:
            self.close()
            raise

    @classmethod
    def spec_path(cls, config: HostwireConfig, default: Path) -> Path:
        """The OpenAPI document the configuration names, or ``default``."""
        return config.base_dir / config.openapi if config.openapi else default

    def _describe(self, plugin: Plugin, granted: frozenset[str]) -> None:
        # Events: its exports of the document's webhooks (lifecycle names without one).
        spec = self.api.spec if self.api is not None else None
        calls = sorted(i.name for i in plugin.info.imports_from(USER_MODULE))
        log.info(
            'loaded plug-in "%s": events %s; HTTP hooks %s; calls %s',
            plugin.name,
            ", ".join(e for e, _ in handled_events(plugin.exports, spec)) or "none",
            ", ".join(http_hook_exports(plugin.exports)) or "none",
            ", ".join(calls) or "nothing",
        )
        missing = [name for name in calls if name not in granted]
        if missing:
            log.warning(
                'plug-in "%s" imports %s but is not granted %s; those calls will get 403.',
                plugin.name,
                ", ".join(missing),
                "it" if len(missing) == 1 else "them",
            )

    def __iter__(self) -> Iterator[Plugin]:
        return iter(self.plugins)

    def __len__(self) -> int:
        return len(self.plugins)

    def close(self) -> None:
        """Close every plug-in. Idempotent."""
        plugins, self.plugins = self.plugins, []
        self.subscribers = []
        for plugin in plugins:
            plugin.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
