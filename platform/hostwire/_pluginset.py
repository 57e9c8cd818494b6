"""The configured plug-ins of an app, loaded against its host functions."""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from hostwire._config import HostwireConfig, PluginConfig
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


@dataclass(frozen=True, eq=False, slots=True)
class Lineup:
    """One version of the plug-ins serving, in the configuration's order: never
    changed, replaced whole (one reference assignment), so a reader that takes
    it once sees one consistent set for a whole request or event."""

    plugins: tuple[Plugin, ...] = ()
    subscribers: tuple[Subscriber, ...] = ()
    rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)

    def get(self, name: str) -> Plugin | None:
        """The plug-in named ``name`` in this version, if it is enabled."""
        for plugin in self.plugins:
            if plugin.name == name:
                return plugin
        return None


class PluginSet:
    """Every enabled plug-in of a configuration, in the file's order.

    Each plug-in gets the host functions of ``api`` limited to its grants.
    If one plug-in fails to load, the ones already loaded are closed and the
    error is raised: an app never runs with half its plug-ins.
    ``rate_limits`` are the plug-ins' ``rate_limit`` entries, by name.

    What serves is ``lineup``; ``swap`` replaces it (hot reload). A request or
    event that uses plug-ins holds a ``lease()`` on the lineup it started with:
    a plug-in that a swap left out is closed once no lease holds a lineup that
    has it, so calls in flight finish on their version and none starts on a
    closed one.
    """

    def __init__(self, config: HostwireConfig, api: HostApi | None) -> None:
        self.config = config
        self.api = api
        self.lineup = Lineup()
        self._lock = threading.Lock()
        self._leases: dict[Lineup, int] = {}
        loaded: list[Plugin] = []
        try:
            for entry in config.enabled_plugins:
                loaded.append(self.load(entry))
        except BaseException:
            for plugin in loaded:
                plugin.close()
            raise
        self.lineup = self.lineup_of(config, {p.name: p for p in loaded})

    def load(
        self, entry: PluginConfig, wasm: bytes | None = None, *, base_dir: Path | None = None
    ) -> Plugin:
        """Load one plug-in of the configuration (its file, or ``wasm`` instead) with
        every load-time check; nothing of the set changes. ``ConfigError`` when it
        cannot serve as configured. ``base_dir``: the configuration's, by default."""
        functions = self.api.host_functions(entry.name, entry.grants) if self.api else []
        folder = self.config.base_dir if base_dir is None else base_dir
        plugin = entry.load(folder, functions, wasm=wasm)
        if entry.rate_limit is not None and HTTP_HOOKS[0] not in plugin.exports:
            plugin.close()
            raise entry.error(
                f"rate_limit counts the requests that reach its {HTTP_HOOKS[0]}, "
                "but the plug-in does not export one."
            )
        self._describe(plugin, entry.grants)
        return plugin

    @staticmethod
    def lineup_of(config: HostwireConfig, plugins: Mapping[str, Plugin]) -> Lineup:
        """The lineup of ``plugins`` (by name) in ``config``'s order, with their policies."""
        entries = [e for e in config.plugins if e.name in plugins]
        return Lineup(
            tuple(plugins[e.name] for e in entries),
            tuple(Subscriber(plugins[e.name], e.on_error) for e in entries),
            {e.name: e.rate_limit.to_rate_limit() for e in entries if e.rate_limit is not None},
        )

    @property
    def plugins(self) -> tuple[Plugin, ...]:
        """The plug-ins serving now."""
        return self.lineup.plugins

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        """The plug-ins serving now, with their ``on_error`` (the same tuple until a swap)."""
        return self.lineup.subscribers

    @property
    def rate_limits(self) -> Mapping[str, RateLimit]:
        return self.lineup.rate_limits

    @contextmanager
    def lease(self) -> Iterator[Lineup]:
        """The lineup serving now, kept open until the block ends (see the class)."""
        with self._lock:
            lineup = self.lineup
            self._leases[lineup] = self._leases.get(lineup, 0) + 1
        try:
            yield lineup
        finally:
            self._release(lineup)

    def swap(self, lineup: Lineup, config: HostwireConfig | None = None) -> Lineup:
        """Serve ``lineup`` from now on (and ``config``'s entries); return the old one.

        Plug-ins of the old lineup that the new one lacks are closed now if no
        lease holds them, else when the last one ends.
        """
        with self._lock:
            old, self.lineup = self.lineup, lineup
            if config is not None:
                self.config = config
            unused = [] if old in self._leases else self._unused(old)
        for plugin in unused:
            plugin.close()
        return old

    def leased(self) -> int:
        """How many leases are open (on any lineup)."""
        with self._lock:
            return sum(self._leases.values())

    def _release(self, lineup: Lineup) -> None:
        with self._lock:
            left = self._leases[lineup] - 1
            if left:
                self._leases[lineup] = left
                return
            del self._leases[lineup]
            unused = [] if lineup is self.lineup else self._unused(lineup)
        for plugin in unused:
            plugin.close()

    def _unused(self, lineup: Lineup) -> list[Plugin]:
        # Under _lock: the plug-ins of ``lineup`` no live lineup (serving or leased) has.
        live = {id(p) for held in (self.lineup, *self._leases) for p in held.plugins}
        return [p for p in lineup.plugins if id(p) not in live]

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
            extra={"plugin": plugin.name, "outcome": "loaded"},
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
        """Close every plug-in, serving or leased. Idempotent."""
        with self._lock:
            lineups = [self.lineup, *self._leases]
            self.lineup = Lineup()
        closing = {id(p): p for held in lineups for p in held.plugins}
        for plugin in closing.values():
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
