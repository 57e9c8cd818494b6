"""Which imports of a module the host can provide, and what to do about the others.

A plug-in's imports are satisfied by Extism's kernel (``extism:host/env``, with
a few functions hostwire provides in its place: ``kernel``), WASI preview 1
(linked with no files, environment or sockets) and the host functions it was
given. Anything else fails to link; ``unprovided`` names those imports and
``unprovided_hint`` says how a build usually gets rid of them (AssemblyScript's
``env.abort`` is the common one).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from hostwire._runtime.kernel import FUNCTIONS
from hostwire._runtime.module import KERNEL_MODULE, Import, ModuleInfo

WASI_PREVIEW1 = "wasi_snapshot_preview1"

# Extism's kernel module and the host functions Extism links beside it (checked
# against extism-sys 1.41: every other name is an unknown import).
EXTISM_KERNEL = frozenset(
    {
        "alloc", "config_get", "error_get", "error_set", "free", "get_log_level",
        "http_headers", "http_request", "http_status_code", "input_length",
        "input_load_u64", "input_load_u8", "input_offset", "input_set", "length",
        "length_unsafe", "load_u64", "load_u8", "log_debug", "log_error", "log_info",
        "log_trace", "log_warn", "memory_bytes", "output_length", "output_offset",
        "output_set", "reset", "store_u64", "store_u8", "var_get", "var_set",
    }
)  # fmt: skip
# The kernel functions hostwire answers itself: output_set through its shim (in wasm).
HOSTWIRE_KERNEL = frozenset(
    {"output_set", *(f.name for f in FUNCTIONS if f.namespace == KERNEL_MODULE)}
)
# Every function of WASI preview 1, as wasmtime links it.
WASI_FUNCTIONS = frozenset(
    {
        "args_get", "args_sizes_get", "clock_res_get", "clock_time_get", "environ_get",
        "environ_sizes_get", "fd_advise", "fd_allocate", "fd_close", "fd_datasync",
        "fd_fdstat_get", "fd_fdstat_set_flags", "fd_fdstat_set_rights", "fd_filestat_get",
        "fd_filestat_set_size", "fd_filestat_set_times", "fd_pread", "fd_prestat_dir_name",
        "fd_prestat_get", "fd_pwrite", "fd_read", "fd_readdir", "fd_renumber", "fd_seek",
        "fd_sync", "fd_tell", "fd_write", "path_create_directory", "path_filestat_get",
        "path_filestat_set_times", "path_link", "path_open", "path_readlink",
        "path_remove_directory", "path_rename", "path_symlink", "path_unlink_file",
        "poll_oneoff", "proc_exit", "proc_raise", "random_get", "sched_yield", "sock_accept",
        "sock_recv", "sock_send", "sock_shutdown",
    }
)  # fmt: skip
# AssemblyScript's runtime imports these from "env" unless the build replaces them.
_ASSEMBLYSCRIPT_ENV = ("abort", "trace", "seed")

HOSTWIRE = "hostwire kernel"
EXTISM = "Extism kernel"
WASI = "WASI (no files, environment or sockets)"
HOST_FUNCTION = "host function"


def provider(imp: Import, host_functions: Collection[tuple[str, str]] | None) -> str | None:
    """Who provides ``imp``: one of the labels above, or None if nothing does.

    ``host_functions`` holds the ``(namespace, name)`` of the host functions the
    plug-in gets; None when they are not known (then every import outside the
    kernel and WASI that is a function counts as a host function).
    """
    if imp.kind != "func":
        return None  # the host exports no memory, table or global to plug-ins
    if imp.module == KERNEL_MODULE:
        if imp.name in HOSTWIRE_KERNEL:
            return HOSTWIRE
        return EXTISM if imp.name in EXTISM_KERNEL else None
    if imp.module == WASI_PREVIEW1:
        return WASI if imp.name in WASI_FUNCTIONS else None
    if host_functions is None:
        return HOST_FUNCTION if imp.module.startswith("extism:host/") else None
    return HOST_FUNCTION if (imp.module, imp.name) in host_functions else None


def unprovided(
    info: ModuleInfo, host_functions: Collection[tuple[str, str]] | None
) -> list[Import]:
    """The imports of ``info`` that nothing the host links provides."""
    return [i for i in info.imports if provider(i, host_functions) is None]


def unprovided_hint(missing: Iterable[Import]) -> str:
    """What to do about ``missing`` imports, in a sentence or two without a final stop."""
    found = list(missing)
    names = {(i.module, i.name) for i in found}
    hints = []
    script = [n for n in _ASSEMBLYSCRIPT_ENV if ("env", n) in names]
    if script:
        listed = ", ".join(f"env.{n}" for n in script)
        uses = " and ".join(f"`--use {n}=...`" for n in script)
        hints.append(
            f"{listed} {'comes' if len(script) == 1 else 'come'} from AssemblyScript's runtime: "
            f"build AssemblyScript with {uses} naming a function of the plug-in"
            + (" (hostwire's PDK has plugin/abortPlugin)" if "abort" in script else "")
        )
    modules = {i.module for i in found}
    if "env" in modules and any(n not in _ASSEMBLYSCRIPT_ENV for m, n in names if m == "env"):
        hints.append(
            'the host has no "env" module: those are symbols the build left undefined '
            "(define them in the plug-in, or link the library that has them)"
        )
    if any(m.startswith("wasi") and m != WASI_PREVIEW1 for m in modules):
        hints.append(f"the host links WASI as {WASI_PREVIEW1} only: build for wasm32-wasip1")
    if any(i.kind != "func" for i in found):
        hints.append(
            "the host gives plug-ins no memory, table or global: the module must define its own"
        )
    return "; ".join(hints) or "nothing on this host provides them"


def describe_imports(missing: Iterable[Import]) -> str:
    """``env.abort, env.seed``: imports as module.name."""
    return ", ".join(f"{i.module}.{i.name}" for i in missing)
