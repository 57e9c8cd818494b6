"""Hot reload of a running app's plug-ins: a new module for one, enabling or
disabling one, the whole configuration read again, and ``watch: true`` files.

Whatever changes is loaded and checked in full first, with the same code and
checks as at start (``PluginSet.load``); a module or configuration that fails
is refused with its one-line ``ConfigError`` and nothing changes. Then one
assignment puts the new ``Lineup`` in place: requests and before-events that
started hold a lease on the lineup they started with and finish on it, new
ones get the new one, and a plug-in no lineup in use has any more is closed
when the last lease ends. The outbox lane of a changed plug-in is stopped
(its deliveries in flight finish on the old version, what it had claimed goes
back to pending) and started again on the new version, which takes over every
pending delivery: at least once, never to a plug-in that is not loaded yet.
A disabled plug-in's lane stops; its pending deliveries wait for it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import watchfiles

from hostwire._config import HostwireConfig, PluginConfig
from hostwire._errors import ConfigError
from hostwire._events import Outbox
from hostwire._pluginset import Lineup, PluginSet
from hostwire._runtime import Plugin, log_safe

log = logging.getLogger("hostwire.reload")

# A change is taken once the file has been quiet this long (a compiler or a copy
# writes it in several steps), and changes are grouped over at most WATCH_MAX_MS.
WATCH_QUIET_MS = 300
WATCH_MAX_MS = 3000
# How often the watcher looks again for watched files when there are none.
WATCH_IDLE_S = 1.0


@dataclass(frozen=True, slots=True)
class Version:
    """How many times a plug-in was loaded (1 at start) and when it last was."""

    number: int
    loaded_at: float

    def state(self) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(self.loaded_at, UTC).isoformat(timespec="milliseconds")
        return {"version": self.number, "loaded_at": stamp.replace("+00:00", "Z")}


def plugin_states(
    config: HostwireConfig, loaded: Iterable[Plugin], reloads: Reloads | None
) -> list[dict[str, Any]]:
    """Every plug-in ``config`` names, loaded or not, as JSON-able data for operators.

    ``version`` counts the loads of the plug-in (1 at start, one more for each
    reload or enable) and ``loaded_at`` says when the last was (None: never loaded).
    """
    serving = {p.name: p for p in loaded}
    states = []
    for entry in config.plugins:
        plugin = serving.get(entry.name)
        version = reloads.version(entry.name) if reloads is not None else None
        state: dict[str, Any] = {
            "name": entry.name,
            "state": "enabled" if plugin is not None else "disabled",
            "source": entry.path or entry.url,
            "grants": list(entry.grants),
            "limits": entry.limits.model_dump(),
            "sha256": plugin.sha256 if plugin is not None else entry.sha256,
            "exports": sorted(plugin.exports) if plugin is not None else [],
            "stats": plugin.stats.snapshot() if plugin is not None else None,
            "watch": entry.watch,
            **(version.state() if version else {"version": 0, "loaded_at": None}),
        }
        states.append(state)
    return states


class Reloads:
    """The hot reloads of one ``PluginSet``, one at a time.

    ``outbox`` is where after-events wait (None: no events); ``delivered`` the
    exports it delivers; ``delivering()`` says whether its lanes run now;
    ``swapped(lineup)`` is told of every new lineup, once it serves.
    """

    def __init__(
        self,
        plugins: PluginSet,
        *,
        outbox: Outbox | None,
        delivered: frozenset[str],
        delivering: Callable[[], bool],
        swapped: Callable[[Lineup], None],
    ) -> None:
        self.plugins = plugins
        self.outbox = outbox
        self.delivered = delivered
        self._delivering = delivering
        self._swapped = swapped
        self._lock = threading.Lock()
        now = time.time()
        self._versions = {p.name: Version(1, now) for p in plugins.plugins}
        # Modules given by replace() (they outlive a disable), and the counters of
        # disabled plug-ins (a plug-in enabled again goes on counting).
        self._modules: dict[str, bytes] = {}
        self._stats: dict[str, Any] = {}  # PluginStats
        # Set whenever the watched files may have changed (or at shutdown).
        self.rewatch = threading.Event()
        self._watcher: Watcher | None = None  # the thread running watch(), while it runs

    # -- what operators ask ------------------------------------------------------

    def version(self, name: str) -> Version | None:
        return self._versions.get(name)

    def replace(self, name: str, module: bytes, sha256: str | None = None) -> None:
        """Serve ``module`` as plug-in ``name`` (see the module docstring)."""
        with self._lock:
            entry = self._entry(name)
            if sha256 is not None:
                actual = hashlib.sha256(module).hexdigest()
                if actual != sha256.lower():
                    raise entry.error(
                        f"the module's sha256 is {actual}, not the {sha256} it was sent "
                        "with; it was refused and the serving version is unchanged."
                    )
            self._replace(entry, module)
            self._modules[name] = module

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Start (load) or stop serving plug-in ``name``; nothing when it already is so."""
        with self._lock:
            entry = self._entry(name)
            if (self.plugins.lineup.get(name) is not None) == enabled:
                return
            if enabled:
                plugin = self.plugins.load(entry, self._modules.get(name))
                self._apply(self.plugins.config, {name: plugin})
            else:
                self._apply(self.plugins.config, {name: None})

    def reload_config(self, config: HostwireConfig) -> None:
        """Serve ``config`` (the configuration file read again): every enabled plug-in
        is loaded again from its file, the others stop. Modules given by
        ``replace()`` are dropped: the file says what serves."""
        with self._lock:
            current = self.plugins.config
            for key in ("openapi", "events"):
                if getattr(config, key) != getattr(current, key):
                    raise ConfigError(
                        f"the configuration's {key} changed: that takes a restart; nothing "
                        "was reloaded."
                    )
            loaded: dict[str, Plugin | None] = {}
            try:
                for entry in config.enabled_plugins:
                    loaded[entry.name] = self.plugins.load(entry, base_dir=config.base_dir)
            except BaseException:
                for plugin in loaded.values():
                    if plugin is not None:
                        plugin.close()
                raise
            for plugin in self.plugins.plugins:
                loaded.setdefault(plugin.name, None)
            self._modules.clear()
            self._apply(config, loaded)
            self.rewatch.set()

    def reload_file(self, name: str) -> bool:
        """Load plug-in ``name`` again from its file (``watch: true``) if the file's
        module differs from the one serving; True when it was reloaded. A file that
        fails to load logs one warning and the serving version stays."""
        with self._lock:
            entry = next((e for e in self.plugins.config.plugins if e.name == name), None)
            serving = self.plugins.lineup.get(name)
            if entry is None or serving is None or not entry.watch:
                return False
            try:
                module = entry.read(self.plugins.config.base_dir)
                if hashlib.sha256(module).hexdigest() == serving.sha256:
                    return False
                self._replace(entry, module)
            except ConfigError as exc:
                log.warning(
                    "%s; the plug-in keeps serving its version %d.",
                    log_safe(str(exc).rstrip(".")),
                    self._versions[name].number,
                    extra={"plugin": name, "outcome": "reload_refused"},
                )
                return False
            self._modules.pop(name, None)
        log.info(
            'reloaded plug-in "%s" from %s',
            name,
            entry.path,
            extra={"plugin": name, "outcome": "reloaded"},
        )
        return True

    # -- watching files ----------------------------------------------------------

    def start_watching(self) -> None:
        """Reload ``watch: true`` plug-ins when their files change, from a thread of
        its own (the app's startup starts it). Idempotent."""
        if self._watcher is None:
            self._watcher = Watcher(self)
            self._watcher.start()

    def stop_watching(self) -> None:
        """Stop that thread (it joins it: off the event loop). Idempotent."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    def watched(self) -> dict[Path, str]:
        """The files of the ``watch: true`` plug-ins, and whose they are."""
        config = self.plugins.config
        return {
            (config.base_dir / e.path).resolve(): e.name
            for e in config.plugins
            if e.watch and e.path
        }

    def watch(self, stopping: threading.Event) -> None:
        """Reload watched plug-ins when their files change, until ``stopping`` is set
        (set ``rewatch`` with it). Blocks: the ``Watcher`` thread runs it."""
        while not stopping.is_set():
            self.rewatch.clear()
            files = self.watched()
            for name in files.values():  # changed while nothing watched them?
                self.reload_file(name)
            folders = sorted({str(f.parent) for f in files if f.parent.is_dir()})
            if not folders:
                self.rewatch.wait(WATCH_IDLE_S)
                continue
            for changes in watchfiles.watch(
                *folders,
                watch_filter=_only(files),
                debounce=WATCH_MAX_MS,
                step=WATCH_QUIET_MS,
                stop_event=self.rewatch,
                recursive=False,
                raise_interrupt=False,
            ):
                for name in sorted({files[Path(p)] for _, p in changes if Path(p) in files}):
                    self.reload_file(name)

    # -- internals ---------------------------------------------------------------

    def _entry(self, name: str) -> PluginConfig:
        config = self.plugins.config
        for entry in config.plugins:
            if entry.name == name:
                if not entry.is_wasm:
                    raise entry.error("it has no path or url (a Bifrost built-in?): no module.")
                return entry
        names = ", ".join(e.name for e in config.plugins) or "none"
        raise ConfigError(f'no plug-in is named "{name}" (plug-ins: {names}).')

    def _replace(self, entry: PluginConfig, module: bytes) -> None:
        # Checked and compiled in full before anything changes.
        plugin = self.plugins.load(entry, module)
        if self.plugins.lineup.get(entry.name) is None:
            plugin.close()  # disabled: kept for when it is enabled
            return
        self._apply(self.plugins.config, {entry.name: plugin})

    def _apply(self, config: HostwireConfig, changes: Mapping[str, Plugin | None]) -> None:
        """Serve ``changes`` (None: stop serving that plug-in), then move the lanes."""
        # The old lineup stays leased until its lanes have stopped, so no delivery
        # starts on a closed plug-in.
        with self.plugins.lease() as old:
            serving = {p.name: p for p in old.plugins}
            now = time.time()
            for name, plugin in changes.items():
                before = serving.pop(name, None)
                if before is not None and plugin is None:
                    self._stats[name] = before.stats
                if plugin is not None:
                    stats = before.stats if before is not None else self._stats.pop(name, None)
                    if stats is not None:
                        plugin.stats = stats
                    serving[name] = plugin
                    known = self._versions.get(name)
                    self._versions[name] = Version(known.number + 1 if known else 1, now)
            lineup = PluginSet.lineup_of(config, serving)
            self.plugins.swap(lineup, config)
            self._swapped(lineup)
            if self.outbox is not None and self._delivering():
                for name, plugin in changes.items():
                    self.outbox.stop_lane(name)
                    if plugin is not None and self.delivered & plugin.exports:
                        self.outbox.start_lane(plugin)


def _only(files: Mapping[Path, str]) -> Callable[[watchfiles.Change, str], bool]:
    return lambda _change, path: Path(path) in files


class Watcher(threading.Thread):
    """The thread that runs ``Reloads.watch`` from the app's startup to its shutdown."""

    def __init__(self, reloads: Reloads) -> None:
        super().__init__(name="hostwire-watch", daemon=True)
        self.reloads = reloads
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            self.reloads.watch(self.stopping)
        except Exception:  # a bug must not pass silently; the plug-ins keep serving
            log.exception("watching the plug-ins' files failed; they are no longer watched")

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stopping.set()
        self.reloads.rewatch.set()
        if self.is_alive():
            self.join(timeout_s)
