"""The configured plug-ins of an app, loaded against its host functions."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from hostwire._config import HostwireConfig
from hostwire._contract import EVENT_EXPORT, HTTP_HOOKS, LIFECYCLE_STEPS, PHASES, http_hook_exports
from hostwire._events import RateLimit, Subscriber, handled_events
from hostwire._hostapi import ALL_OPERATIONS, HostApi, OpenAPIDocument
from hostwire._runtime import USER_MODULE, Plugin

log = logging.getLogger("hostwire.plugins")

# How alike (difflib's ratio) an export must be to an event or hook to be taken for a
# misspelling of it: one or two characters off in names of 10 and more.
NEAR_MISS_CUTOFF = 0.85
# Exports toolchains add by themselves (WASI's entry points, the component ABI's
# allocator); names starting with "_" (AssemblyScript's __new, wasm-ld's __heap_base) too.
RUNTIME_EXPORTS = frozenset({"memory", "cabi_realloc", "_start", "_initialize"})


def _lifecycle_names(export: str) -> set[str]:
    """Every lifecycle export of the models the name could start with (``light_...``)."""
    names = set()
    for at, char in enumerate(export):
        if char == "_" and at:
            model = export[:at]
            names |= {f"{model}_{p}_{s}" for p in PHASES for s in LIFECYCLE_STEPS}
    return names


def near_misses(exports: Iterable[str], spec: OpenAPIDocument | None) -> list[tuple[str, str]]:
    """``(export, real name)`` for each export that is no event or hook but is spelled
    almost like one the plug-in does not export (``light_after_updat``,
    ``light_after_update``): the handler would never be called."""
    exported = set(exports)
    real = set(HTTP_HOOKS) | ({w.export for w in spec.webhooks.values()} if spec else set())
    found = []
    for name in sorted(exported):
        if name in real or name in RUNTIME_EXPORTS or name.startswith("_"):
            continue
        if EVENT_EXPORT.match(name):
            continue  # a lifecycle event of some model: a real name
        candidates = sorted((real | _lifecycle_names(name)) - exported)
        match = difflib.get_close_matches(name.lower(), candidates, n=1, cutoff=NEAR_MISS_CUTOFF)
        if match:
            found.append((name, match[0]))
    return found


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
                self._describe(plugin, entry.grants)
        except BaseException:
            self.close()
            raise

    @classmethod
    def spec_path(cls, config: HostwireConfig, default: Path) -> Path:
        """The OpenAPI document the configuration names, or ``default``."""
        return config.base_dir / config.openapi if config.openapi else default

    def _describe(self, plugin: Plugin, grants: Iterable[str]) -> None:
        # Events: its exports of the document's webhooks (lifecycle names without one).
        spec = self.api.spec if self.api is not None else None
        granted = self.api.resolve_grants(grants) if self.api is not None else frozenset()
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
        for export, real in near_misses(plugin.exports, spec):
            log.warning(
                'plug-in "%s" exports "%s", which no event or HTTP hook%s calls: did you mean %s?',
                plugin.name,
                export,
                f" of {spec.source}" if spec is not None else "",
                real,
            )
        unused = self._unused_grants(grants, calls)
        if unused:
            log.warning(
                'plug-in "%s" is granted %s but imports no host function for %s, so %s '
                "can never be used (an old build, or a grant that is not needed?).",
                plugin.name,
                ", ".join(unused),
                "it" if len(unused) == 1 else "them",
                "the grant" if len(unused) == 1 else "those grants",
            )

    def _unused_grants(self, grants: Iterable[str], calls: list[str]) -> list[str]:
        """Grants naming an operation whose host function the module does not import.

        The PDKs import one host function per operation, so the imports say
        exactly what a plug-in can call. ``*`` grants whatever it imports.
        """
        if self.api is None:
            return []
        unused = []
        for grant in grants:
            op = self.api.spec.operation(grant) if grant != ALL_OPERATIONS else None
            if op is not None and op.name not in calls:
                unused.append(grant)
        return unused

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
