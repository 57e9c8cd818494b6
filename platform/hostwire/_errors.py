"""The exceptions hostwire raises.

HostwireError
├── UsageError                   the command line was used wrongly (exit 64)
├── ConfigError                  a plug-in configuration file is wrong (exit 2)
│   └── SpecError                an OpenAPI document is missing or invalid
├── StorageError                 the database is full, read-only or unreachable
├── AppStartupError              the app's lifespan failed or did not answer
├── InvalidCall                  a host call breaks its OpenAPI operation (400)
├── DispatchError                a host call could not reach the app (502, 504...)
├── HookFailed                   a fail_closed HTTP hook failed (502)
├── RecordInvalid                a tracked model's record breaks its schema (422)
├── RecordReentrant              a record changed inside its own change (409)
├── UntrackedChange              a bulk statement would skip lifecycle events
└── PluginError                  something went wrong with one plug-in (exit 3)
    ├── PluginLoadError          the module cannot be read, fetched or compiled
    │   └── PluginIntegrityError its sha256 is not the one configured
    ├── PluginInputError         the input is over the plug-in's size limit
    ├── PluginBusyError          too many calls in flight for one plug-in
    ├── PluginExportError        the export does not exist
    ├── PluginCallError          the export ran and reported an error itself
    ├── PluginTimeoutError       the export ran past timeout_ms
    ├── PluginMemoryError        the export needed more than memory_mib
    ├── PluginTrapError          the export trapped (unreachable, bad access...)
    ├── PluginOutputError        the output is over the plug-in's size limit
    ├── HostFunctionError        a host function failed during the call
    │   └── HostCallLimitError   the export made too many host-function calls
    ├── EventRejected            a before-event handler refused the change
    └── EventHandlerError        a before-event handler failed (fail_closed)

Every PluginError carries the plug-in's name and, when known, the export.
`exit_code` is what the command line exits with for that kind of error (1
unless a class says otherwise); the CLI maps exceptions to exit codes only
through it.
"""

from __future__ import annotations


class HostwireError(Exception):
    """Base class of every error hostwire raises on purpose."""

    exit_code = 1


class UsageError(HostwireError):
    """The command line was used wrongly: a bad option, a missing argument."""

    exit_code = 64  # EX_USAGE (sysexits.h): not the configuration error's 2


class ConfigError(HostwireError):
    """A plug-in configuration file is missing, malformed or invalid."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class SpecError(ConfigError):
    """An OpenAPI document cannot be read, is invalid, or cannot become host functions."""


class StorageError(HostwireError):
    """The database cannot be written or read now (full, read-only, I/O error...).

    ``kind`` names the failure (``disk_full``, ``read_only``, ``io_error``...);
    ``retry_after_s`` is a hint for clients. Nothing was changed.
    """

    def __init__(self, message: str, *, kind: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s


class AppStartupError(HostwireError):
    """The app's lifespan startup or shutdown failed or did not answer."""


class InvalidCall(HostwireError):
    """A host call breaks its operation; ``details`` says where and why."""

    def __init__(self, message: str, details: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.details = details


class DispatchError(HostwireError):
    """A host call could not be completed; ``status`` and ``code`` go to the plug-in."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class HookFailed(HostwireError):
    """A fail_closed HTTP hook failed; the client gets 502 naming the plug-in."""

    def __init__(self, plugin: str, export: str, reason: str) -> None:
        super().__init__(f'Plug-in "{plugin}" {export} failed: {reason}')
        self.plugin = plugin
        self.export = export
        self.reason = reason


class RecordInvalid(HostwireError):
    """A record of a tracked model breaks its schema; nothing was written.

    ``model`` is the tracked name (``task``); ``details`` lists the problems
    as ``{"field": "/title", "message": "..."}``.
    """

    def __init__(self, message: str, *, model: str, details: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.model = model
        self.details = details


class RecordReentrant(HostwireError):
    """A record was changed while a change of the same record was under way in the
    same chain of calls (a before-event plug-in changing its own record); it
    fails at once instead of waiting for itself. ``key`` is ``<model>/<id>``."""

    def __init__(self, message: str, *, model: str, key: str) -> None:
        super().__init__(message)
        self.model = model
        self.key = key


class UntrackedChange(HostwireError):
    """A bulk statement on a tracked model would change rows without lifecycle
    events, and the tracker is strict."""

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(message)
        self.model = model


class PluginError(HostwireError):
    """A failure of one plug-in, named with its export when there is one."""

    exit_code = 3
    # Operations a failed call was refused (403 not_granted) before it failed; set by the runtime.
    refused: tuple[str, ...] = ()

    def __init__(self, message: str, *, plugin: str, export: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.export = export


class PluginLoadError(PluginError):
    """The plug-in cannot be read, fetched, verified or compiled."""


class PluginIntegrityError(PluginLoadError):
    """The plug-in's bytes do not have the configured sha256."""

    def __init__(self, message: str, *, plugin: str, expected: str, actual: str) -> None:
        super().__init__(message, plugin=plugin)
        self.expected = expected
        self.actual = actual


class PluginInputError(PluginError):
    """The input given to an export is larger than the plug-in allows."""


class PluginBusyError(PluginError):
    """The plug-in already has as many calls in flight as it may."""


class PluginExportError(PluginError):
    """The plug-in has no export of that name."""


class PluginCallError(PluginError):
    """The export ran to the end and reported an error of its own."""


class PluginTimeoutError(PluginError):
    """The export ran longer than the plug-in's timeout."""


class PluginMemoryError(PluginError):
    """The export tried to use more memory than the plug-in's limit."""


class PluginTrapError(PluginError):
    """The export trapped: unreachable, out-of-bounds access, stack overflow..."""


class PluginOutputError(PluginError):
    """The export's output is larger than the plug-in allows."""


class HostFunctionError(PluginError):
    """A host function called by the export failed; the cause is chained."""

    def __init__(
        self, message: str, *, plugin: str, export: str | None = None, function: str
    ) -> None:
        super().__init__(message, plugin=plugin, export=export)
        self.function = function


class HostCallLimitError(HostFunctionError):
    """The export called host functions more often than the plug-in allows."""


class EventRejected(PluginError):
    """A ``<model>_before_*`` handler answered ``{"reject": {"reason": ...}}``."""

    def __init__(self, message: str, *, plugin: str, export: str, reason: str) -> None:
        super().__init__(message, plugin=plugin, export=export)
        self.reason = reason


class EventHandlerError(PluginError):
    """A before-event handler failed and its plug-in's policy is ``fail_closed``.

    The handler's own error is the ``__cause__``.
    """
