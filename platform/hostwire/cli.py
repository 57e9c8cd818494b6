"""The ``hostwire`` command line (Contract 5)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import inspect
import json
import logging
import os
import re
import shlex
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from hostwire import _logformat, _project
from hostwire._app import Hostwire, factory_arguments
from hostwire._config import HostwireConfig, load_config
from hostwire._contract import http_hook_exports, lifecycle_exports
from hostwire._errors import ConfigError, HostwireError, PluginLoadError, UsageError
from hostwire._events import STATES, Outbox, handled_events, is_url
from hostwire._gateway import Gateway, load_gateway_config
from hostwire._hostapi import HostApi, OpenAPIDocument, load_openapi
from hostwire._pdk import LANGUAGES, generate, language, scaffold
from hostwire._pluginset import near_misses
from hostwire._runtime import (
    HOST_FUNCTION,
    KERNEL_MODULE,
    USER_MODULE,
    HostFunction,
    Limits,
    NotWebAssembly,
    Plugin,
    inspect_module,
    provider,
    read_path,
    sha256_hex,
    unprovided,
    unprovided_hint,
)
from hostwire._targets import HttpTarget, run_app

# Apps register a factory ``(db_path) -> ASGI app`` here; hostwire imports none.
APPS_GROUP = "hostwire.apps"
_APP_HELP = (
    "the ASGI app: module:attribute (an app object, or a factory function called with the "
    "db_path/db/database and config arguments it takes), or an installed app's name; "
    "default lightcontrol"
)


# Folders build tools put a module in; the project is the first folder above them.
_BUILD_FOLDERS = frozenset(
    {
        "build",
        "release",
        "debug",
        "target",
        "dist",
        "out",
        "wasm32-unknown-unknown",
        "wasm32-wasip1",
    }
)


def _read_plugin(path: str) -> tuple[str, bytes]:
    file = Path(path)
    # <name>/plugin.wat, <name>/build/plugin.wasm and cargo's
    # <name>/target/wasm32-unknown-unknown/release/plugin.wasm are named after <name>.
    name = file.stem
    if name == "plugin":
        folder = file.resolve().parent
        while folder.name in _BUILD_FOLDERS and folder.parent != folder:
            folder = folder.parent
        name = folder.name
    return name, read_path(name, file)


def _config_pairs(pairs: Sequence[str]) -> dict[str, str]:
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--config expects KEY=VALUE, got {pair!r}.")
        config[key] = value
    return config


def _app_factory(name: str) -> Callable[..., Any]:
    found = entry_points(group=APPS_GROUP, name=name)
    if not found:
        names = ", ".join(sorted(ep.name for ep in entry_points(group=APPS_GROUP))) or "none"
        raise UsageError(
            f"--app {name}: no installed app has that name (installed: {names}); "
            "give module:attribute for your own app (e.g. --app myapp.main:app)."
        )
    factory: Callable[..., Any] = next(iter(found)).load()
    return factory


def _import_app(spec: str) -> Any:
    """``module:attribute`` (dotted attributes allowed); the working folder is on the path."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"--app {spec}: write module:attribute, e.g. --app myapp.main:app.")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # as uvicorn does: the app is in the project
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UsageError(
                f'--app {spec}: no module named "{module_name}" (run from the folder that holds '
                "it, or install it)."
            ) from exc
        raise
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError as exc:
            raise UsageError(f'--app {spec}: module "{module_name}" has no "{attribute}".') from exc
    return found


def _build_app(spec: str, *, db: str | None, config: HostwireConfig | None) -> Any:
    """The ASGI app ``--app`` names, with the database and the plug-ins given.

    An installed name or a function is a factory, called with the keyword
    arguments it accepts of ``db_path``/``db``/``database`` and ``config``; an
    app object is used as it is. An app that wires hostwire itself
    (``app.state.hostwire``) takes no ``--config``; one that does not gets a
    ``Hostwire`` with it.
    """
    found = _import_app(spec) if ":" in spec else _app_factory(spec)
    if inspect.isfunction(found) or inspect.ismethod(found):
        offered = {"db_path": db, "db": db, "database": db, "config": config}
        arguments = factory_arguments(found, **offered)
        app = found(**arguments)
        taken = "config" in arguments
    else:
        app, taken = found, False
    if config is None or taken:
        return app
    state = getattr(app, "state", None)
    if getattr(state, "hostwire", None) is not None:
        raise UsageError(
            f"--app {spec} sets up hostwire itself (its own configuration): drop --config, "
            "or make the app a factory that takes config=."
        )
    return Hostwire(app, config=config, database=db)


@contextmanager
def _host_functions(args: argparse.Namespace, plugin: str) -> Iterator[list[HostFunction]]:
    """The plug-in's host functions: the app in process with a throw-away store, or --url."""
    if args.spec is None:
        yield []
        return
    spec = load_openapi(args.spec)
    if args.token and not args.url:
        raise UsageError("--token is the plug-in's credential for --url; give --url too.")
    if args.url:
        try:
            target = HttpTarget(args.url)
        except ValueError as exc:
            raise UsageError(f"--url: {exc}.") from exc
        api = HostApi(spec, target)
        try:
            yield api.host_functions(plugin, args.grant, token=args.token)
        finally:
            api.close()
        return
    if args.app is None:
        title = str((spec.document.get("info") or {}).get("title", ""))
        if title != "lightcontrol":
            raise UsageError(
                f"--spec {args.spec} describes {title or 'an app'!r}: give --app module:app to "
                "run that app in process, or --url for a running one."
            )
        args.app = "lightcontrol"  # the reference app, whose document this is
    with tempfile.TemporaryDirectory(prefix="hostwire-call-") as scratch:
        app = _build_app(args.app, db=str(Path(scratch) / "throwaway.db"), config=None)
        with run_app(app, path_prefix=spec.base_path) as local:
            yield HostApi(spec, local).host_functions(plugin, args.grant)


def cmd_plugin_call(args: argparse.Namespace) -> int:
    if args.input is not None and args.input_file is not None:
        raise UsageError("give --input or --input-file, not both.")
    data = args.input.encode() if args.input is not None else b""
    if args.input_file is not None:
        try:
            data = Path(args.input_file).read_bytes()
        except OSError as exc:
            raise UsageError(
                f"cannot read --input-file {args.input_file}: {exc.strerror}."
            ) from exc
    name, wasm = _read_plugin(args.file)
    if args.spec is None:
        if args.grant or args.url:
            raise UsageError("--grant and --url need --spec (the OpenAPI document to call).")
        try:
            calls = sorted(i.name for i in inspect_module(wasm).imports_from(USER_MODULE))
        except ValueError:
            calls = []  # not a module: Plugin() below says so in its own words
        if calls:
            raise UsageError(
                f"{args.file} calls host functions ({', '.join(calls)}): give --spec FILE "
                "and --grant OP to run it against the app."
            )
    defaults = Limits()
    try:
        limits = Limits(
            timeout_ms=args.timeout_ms or defaults.timeout_ms,
            memory_mib=args.memory_mib or defaults.memory_mib,
        )
    except ValueError as exc:
        raise UsageError(f"{exc}.") from exc
    if not args.debug:
        # The app's own logs (its access log, its warnings) are not this command's output.
        logging.getLogger().setLevel(logging.ERROR)
        logging.getLogger("hostwire").setLevel(logging.INFO)
    with (
        _host_functions(args, name) as functions,
        Plugin(
            name,
            wasm,
            limits=limits,
            config=_config_pairs(args.config),
            host_functions=functions,
            allowed_hosts=args.allow_host,
        ) as plugin,
    ):
        output = plugin.call(args.function, data)
    sys.stdout.buffer.write(output)
    if output and not output.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    return 0


def _operations(spec_path: str, spec: OpenAPIDocument, imported: list[str]) -> dict[str, Any]:
    operations = []
    for name in imported:
        op = spec.operations.get(name)
        if op is not None:
            operations.append(
                {"function": name, "operation": str(op), "grant": op.grant, "summary": op.summary}
            )
    return {
        "spec": spec_path,
        "operations": operations,
        "grants_needed": sorted(o["grant"] for o in operations),
        "unknown_imports": [n for n in imported if n not in spec.operations],
    }


def _inspect(path: str, spec: str | None = None) -> dict[str, Any]:
    name, wasm = _read_plugin(path)
    try:
        info = inspect_module(wasm)
    except NotWebAssembly as exc:
        raise PluginLoadError(f"{path} is not WebAssembly: {exc}.", plugin=name) from exc
    except ValueError as exc:
        raise PluginLoadError(
            f"{path} is not a valid WebAssembly module: {exc}", plugin=name
        ) from exc
    functions = info.function_exports
    imported = sorted(i.name for i in info.imports_from(USER_MODULE))
    document = load_openapi(spec) if spec is not None else None
    # With a document its operations are the host functions; without, any user import may be.
    offered = {(USER_MODULE, n) for n in document.operations} if document is not None else None
    missing = unprovided(info, offered)
    report = {
        "file": path,
        "size_bytes": len(wasm),
        "sha256": sha256_hex(Path(path).read_bytes()),
        "wasi": info.uses_wasi,
        "exports": [
            {"name": e.name, "kind": e.kind, "signature": e.signature} for e in info.exports
        ],
        "imports": [
            {
                "module": i.module,
                "name": i.name,
                "kind": i.kind,
                "signature": i.signature,
                "provided_by": provider(i, offered),
            }
            for i in info.imports
        ],
        "unprovided_imports": [f"{i.module}.{i.name}" for i in missing],
        "unprovided_hint": unprovided_hint(missing) if missing else None,
        "near_misses": [
            {"export": e, "did_you_mean": real} for e, real in near_misses(functions, document)
        ],
        "host_functions": sorted(i.name for i in info.imports_from(USER_MODULE)),
        "kernel_functions": sorted(i.name for i in info.imports_from(KERNEL_MODULE)),
        "lifecycle_events": lifecycle_exports(functions),
        "http_hooks": http_hook_exports(functions),
    }
    if spec is not None and document is not None:
        report |= _operations(spec, document, imported)
    # With a document, every export that handles one of its webhooks; else the lifecycle names.
    report["events"] = [
        {"export": export, "webhook": webhook}
        for export, webhook in handled_events(functions, document)
    ]
    return report


def cmd_plugin_inspect(args: argparse.Namespace) -> int:
    report = _inspect(args.file, args.spec)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"plug-in   {report['file']} ({report['size_bytes']} bytes)")
    print(f"sha256    {report['sha256']}")
    wasi = "yes (no files, environment or sockets are given)" if report["wasi"] else "no"
    print(f"WASI      {wasi}")
    print("exports")
    for e in report["exports"]:
        print(f"  {e['kind']:<7} {e['name']}{' ' + e['signature'] if e['signature'] else ''}")
    print("imports (and what provides each)")
    lines = [
        f"{i['kind']:<7} {i['module']}::{i['name']} {i['signature']}" for i in report["imports"]
    ]
    width = max((len(line) for line in lines), default=0)
    for line, i in zip(lines, report["imports"], strict=True):
        print(
            f"  {line:<{width}}  {_provided_text(i['provided_by'], checked='operations' in report)}"
        )
    if report["unprovided_imports"]:
        print(
            f"not provided              {', '.join(report['unprovided_imports'])}, so it "
            f"cannot load: {report['unprovided_hint']}"
        )
    host = report["host_functions"]
    print(f"host functions it calls   {', '.join(host) if host else 'none'}")
    if "operations" in report:
        print(f"events handled            {_events_text(report['events'])}")
    else:
        print(f"lifecycle events handled  {', '.join(report['lifecycle_events']) or 'none'}")
    print(f"HTTP hooks                {', '.join(report['http_hooks']) or 'none'}")
    for miss in report["near_misses"]:
        print(
            f"near miss                 {miss['export']}: no event or hook calls it; "
            f"did you mean {miss['did_you_mean']}?"
        )
    if "operations" in report:
        print(f"operations it calls ({report['spec']})")
        for op in report["operations"]:
            print(f"  {op['function']:<24} {op['operation']:<28} grant {op['grant']}")
        for name in report["unknown_imports"]:
            print(f"  {name:<24} NOT AN OPERATION: the plug-in will not load against this spec")
        print(f"grants it needs           {' '.join(report['grants_needed']) or 'none'}")
    return 0


def _provided_text(provided_by: str | None, *, checked: bool) -> str:
    if provided_by is None:
        return "NOT PROVIDED by this host"
    if provided_by == HOST_FUNCTION and not checked:
        return f"{provided_by} (give --spec to check it)"
    return provided_by


def _events_text(events: list[dict[str, str]]) -> str:
    """``invoice_created, feature_created (feature.created)``: the webhook when it differs."""
    named = [
        e["export"] if e["webhook"] == e["export"] else f"{e['export']} ({e['webhook']})"
        for e in events
    ]
    return ", ".join(named) or "none"


def _console_note(admin_token: str | None, where: str) -> str:
    """What the start-up line adds when the admin routes are on."""
    return f"; console at {where}/hostwire/, metrics at {where}/metrics" if admin_token else ""


def _announce(message: str) -> None:
    """What a server command says as it starts: a line of the server's own log with
    ``--log-format json``, else ``hostwire: <message>`` as always."""
    if _logformat.log_format(None) == "json":
        logging.getLogger("hostwire.cli").info("%s", message)
    else:
        print(f"hostwire: {message}", file=sys.stderr)


def _serve(app: Any, *, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn until SIGINT or SIGTERM, then shut it down gracefully."""
    # Imported here: other commands should not pay for importing a server.
    from hostwire._targets.server import CleanExitServer, server_config  # noqa: PLC0415

    # JSON logs: uvicorn's own loggers (the access log too) go to the root's formatter.
    json_logs = _logformat.log_format(None) == "json"
    options: dict[str, Any] = {"log_config": None} if json_logs else {}
    config = server_config(app, host=host, port=port, **options)  # with a header deadline
    CleanExitServer(config).run()


def _serve_workers(args: argparse.Namespace, build: Callable[[], Any], host: str, port: int) -> int:
    """Serve with ``--workers`` processes, each building its app with ``build``."""
    from hostwire._targets.server import WorkerPlan, serve_workers  # noqa: PLC0415

    level = logging.DEBUG if args.debug else logging.INFO
    fmt = _logformat.log_format(None)  # main() has put --log-format in the environment
    plan = WorkerPlan(
        build=build,
        host=host,
        port=port,
        workers=args.workers,
        log_level=level,
        # JSON logs: uvicorn's loggers too go to the worker's root formatter.
        options={"log_config": None} if fmt == "json" else {},
        configure_logs=functools.partial(_logformat.configure_worker, level=level, fmt=fmt),
    )
    return serve_workers(plan)


def _check_workers(args: argparse.Namespace, database: str | None, where: str) -> None:
    """More than one worker needs a database all of them share: PostgreSQL."""
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: give a number of processes, 1 or more.")
    if args.workers == 1:
        return
    backend = None
    if database is not None and is_url(database):
        with contextlib.suppress(ArgumentError):
            backend = make_url(database).get_backend_name()
    if backend != "postgresql":
        given = f"{where} is {database}" if database else f"{where} is not given"
        raise ConfigError(
            f"--workers {args.workers} needs a PostgreSQL database that every worker shares "
            f"({given}; give postgresql://...): SQLite serves one process only."
        )


def _served_app(app: str, db: str | None, config: str | None) -> Any:
    """The app ``hostwire serve`` runs, with its plug-ins (in each worker, with --workers)."""
    plugins = load_config(config) if config else None
    try:
        return _build_app(app, db=db, config=plugins)
    except ConfigError as exc:
        if plugins is None or config is None or exc.path == str(Path(config)):
            raise
        # E.g. a grant or the openapi document it names: say which file to fix.
        raise ConfigError(f"{Path(config)}: {exc}", path=config) from exc


def cmd_serve(args: argparse.Namespace) -> int:
    _check_workers(args, args.db, "--db")
    if args.config:
        load_config(args.config)  # a bad file fails here, before any worker starts
    where = f"http://{args.host}:{args.port}"
    if args.workers > 1:
        _announce(f"serving {args.app} on {where} with {args.workers} workers")
        build = functools.partial(_served_app, args.app, args.db, args.config)
        return _serve_workers(args, build, args.host, args.port)
    app = _served_app(args.app, args.db, args.config)
    hostwire = getattr(getattr(app, "state", None), "hostwire", None)
    token = hostwire.admin_token if isinstance(hostwire, Hostwire) else None
    _announce(f"serving {args.app} on {where}{_console_note(token, where)}")
    _serve(app, host=args.host, port=args.port)
    return 0


def _gateway_app(config: str) -> Any:
    """One worker's gateway (``hostwire gateway --workers``); its lifespan closes it."""
    return Gateway(load_gateway_config(config)).app


def cmd_gateway(args: argparse.Namespace) -> int:
    config = load_gateway_config(args.config)
    _check_workers(args, config.database_url(), f"{args.config}: database")
    host = args.host or config.listen.host
    port = args.port if args.port is not None else config.listen.port
    if args.workers > 1 and not args.check:
        _announce(
            f"gateway for {config.app.base_url} on http://{host}:{port} "
            f"(webhooks at {config.webhooks.path}) with {args.workers} workers"
        )
        return _serve_workers(args, functools.partial(_gateway_app, args.config), host, port)
    if args.check:
        print(f"{args.config}: ok: {Gateway.check(config)}")
        return 0
    gateway = Gateway(config)
    where = f"http://{host}:{port}"
    _announce(
        f"gateway for {config.app.base_url} on {where} "
        f"(webhooks at {config.webhooks.path}){_console_note(gateway.admin_token, where)}"
    )
    try:
        _serve(gateway.app, host=host, port=port)
    finally:
        gateway.close()
    return 0


def _app_document(app_name: str, *, db: str | None = "sqlite://") -> dict[str, Any]:
    """The document ``hostwire openapi --app`` prints: hostwire's, or FastAPI's (by
    default with an in-memory database: reading the document writes nothing)."""
    app = _build_app(app_name, db=db, config=None)
    hostwire = getattr(getattr(app, "state", None), "hostwire", None)
    if isinstance(hostwire, Hostwire):
        return hostwire.openapi()
    if callable(getattr(app, "openapi", None)):
        document: dict[str, Any] = app.openapi()
        return document
    raise UsageError(
        f"--app {app_name} has no document of its own to print (neither hostwire nor "
        "FastAPI's openapi()); its OpenAPI file is the document."
    )


def cmd_openapi(args: argparse.Namespace) -> int:
    document = _app_document(args.app, db=args.db)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
        print(
            f"wrote {args.out} ({len(document.get('paths') or {})} paths, "
            f"{len(document.get('webhooks') or {})} webhooks)",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(text)
    return 0


_NO_SPEC = (
    "No OpenAPI document: pass --spec FILE or URL (an app's /openapi.json), or --app "
    "module:app, or set HOSTWIRE_SPEC."
)


def _default_spec(args: argparse.Namespace) -> str | dict[str, Any]:
    """The document of ``--spec``, ``--app``, ``$HOSTWIRE_SPEC``, the nearest
    ``hostwire.toml``, or the one installed app, in that order: a path, a URL or
    the app's document itself."""
    if args.spec:
        return str(args.spec)
    if args.app:
        return _app_document(args.app)
    if os.environ.get("HOSTWIRE_SPEC"):
        return os.environ["HOSTWIRE_SPEC"]
    with contextlib.suppress(ConfigError):
        return _project.load(_project.find(), languages=LANGUAGES).spec_source
    installed = sorted(ep.name for ep in entry_points(group=APPS_GROUP))
    if len(installed) == 1:
        return _app_document(installed[0])
    raise UsageError(
        _NO_SPEC if not installed else f"{_NO_SPEC} (installed apps: {', '.join(installed)})."
    )


def _spec_document(args: argparse.Namespace, name: str) -> OpenAPIDocument:
    found = _default_spec(args)
    if isinstance(found, dict):
        return load_openapi(found, name=name)
    return load_openapi(found)


def cmd_pdk_generate(args: argparse.Namespace) -> int:
    spec = _spec_document(args, "openapi.json")
    written = generate(spec, args.lang, args.out, user_templates=args.templates)
    print(f"wrote {len(written)} files to {args.out} ({args.lang} PDK for {spec.source})")
    return 0


def _build_command(lang: str, target: Path) -> str:
    """What ``hostwire plugin build`` runs: the command ``plugin new`` used to print,
    without ``make`` or ``npm run`` in between (the same for every language)."""
    if lang == "assemblyscript":
        package = json.loads((target / "package.json").read_text(encoding="utf-8"))
        return str(package["scripts"]["build"])
    if lang == "c":
        return str(language("c").README_BUILD)  # type: ignore[attr-defined]
    return language(lang).BUILD


def cmd_plugin_new(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", args.name):
        raise UsageError(
            f"plug-in name {args.name!r}: use letters, digits, _ and -, starting with a letter."
        )
    target = Path(args.dir) / args.name
    found = _default_spec(args)
    # An app's document is kept in the project, so its tests and builds need no app.
    source = load_openapi(found, name="openapi.json") if isinstance(found, dict) else found
    written = scaffold(source, args.lang, args.name, target)
    if isinstance(found, dict):
        (target / "openapi.json").write_text(
            json.dumps(found, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        spec = "openapi.json"
    else:
        spec = _project.relative_spec(found, target)
    project = _project.Project(
        target.resolve(),
        args.name,
        args.lang,
        spec,
        _build_command(args.lang, target),
        tests=("test_plugin.py",),
    )
    _project.write(project)
    folder = shlex.quote(str(target))
    print(f"created {target} ({len(written) + 1} files); build it with:")
    print(f"  cd {folder} && hostwire plugin build")
    print(f"(it runs `{project.build}`, as hostwire.toml says), or build it when needed")
    print("and run its tests:")
    print(f"  cd {folder} && hostwire plugin test")
    return 0


def _project_at(args: argparse.Namespace) -> _project.Project:
    folder = Path(args.dir) if args.dir else _project.find()
    if args.dir and not (folder / _project.FILE).is_file():
        raise ConfigError(
            f"{folder}: no {_project.FILE} here (hostwire plugin new writes one).",
            path=str(folder),
        )
    return _project.load(folder, languages=LANGUAGES)


def cmd_plugin_build(args: argparse.Namespace) -> int:
    project = _project_at(args)
    module = _project.build(project)
    print(f"built {module} ({module.stat().st_size} bytes)")
    return 0


def cmd_plugin_test(args: argparse.Namespace) -> int:
    extra = [a for a in args.pytest_args if a != "--"]
    if args.dir is not None and args.dir.startswith("-"):  # `plugin test -- -q`: no DIR
        extra, args.dir = [args.dir, *extra], None
    args.pytest_args = extra
    project = _project_at(args)
    if _project.stale(project):
        module = _project.build(project)
        print(f"built {module} ({module.stat().st_size} bytes)", flush=True)
    return _project.test(project, args.pytest_args)


def _outbox(db: str) -> Outbox:
    """The outbox in ``--db``: a database URL, or the path of an SQLite file that exists."""
    if not is_url(db) and not Path(db).is_file():
        raise UsageError(f"{db}: no such database (give the app's --db file or database URL).")
    try:
        return Outbox(db)
    except ValueError as exc:  # a URL SQLAlchemy cannot use, or its driver is missing
        raise UsageError(str(exc)) from None


def cmd_events_list(args: argparse.Namespace) -> int:
    found = _outbox(args.db).deliveries(
        plugin=args.plugin, state=args.state, event_id=args.event, limit=args.limit
    )
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no deliveries")
        return 0
    print(f"{'event':<36} {'type':<20} {'plug-in':<14} {'state':<9} tries  last error")
    for d in found:
        error = (d["last_error"] or "").replace("\n", " ")
        print(
            f"{d['event_id']:<36} {d['type']:<20} {d['plugin']:<14} {d['state']:<9} "
            f"{d['attempts']:>5}  {error[:80]}"
        )
    return 0


def cmd_events_replay(args: argparse.Namespace) -> int:
    outbox = _outbox(args.db)
    if not outbox.deliveries(event_id=args.event_id, limit=1):
        raise UsageError(f'No event has the id "{args.event_id}" in {args.db}.')
    count = outbox.replay(args.event_id, args.plugin)
    print(f"{count} deliveries queued again; a running server delivers them within a second.")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors exiting as ``UsageError`` does (not 2, the config's)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(UsageError.exit_code, f"{self.prog}: error: {message}\n")


_WORKERS_HELP = (
    "worker processes on one port, default 1; more than 1 needs a PostgreSQL database they "
    "share (a worker that exits is started again)"
)
_DEBUG_HELP = "show tracebacks and debug logs (exit codes stay the same)"
# Every command accepts --debug too; SUPPRESS keeps a command from resetting it to False.
_DEBUG = _Parser(add_help=False)
_DEBUG.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hostwire", description="OpenAPI-driven WebAssembly plug-ins on Extism.")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", parents=[_DEBUG], help="run an ASGI app with its plug-ins, with uvicorn"
    )
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="default 8000")
    serve.add_argument("--app", default="lightcontrol", help=_APP_HELP)
    serve.add_argument(
        "--db",
        help="the app's database: a SQLAlchemy URL (sqlite:///app.db, postgresql://...) or a "
        "SQLite file; given to the app's factory and to the outbox (lightcontrol's default: "
        "./lightcontrol.db)",
    )
    serve.add_argument("--config", help="plug-in configuration file (YAML or JSON)")
    serve.add_argument("--workers", type=int, default=1, help=_WORKERS_HELP)
    _add_log_format(serve)
    serve.set_defaults(handler=cmd_serve)

    plugin = commands.add_parser("plugin", parents=[_DEBUG], help="inspect or run one plug-in file")
    plugin_commands = plugin.add_subparsers(dest="plugin_command", required=True, metavar="ACTION")

    call = plugin_commands.add_parser(
        "call", parents=[_DEBUG], help="run one export and print its output"
    )
    call.add_argument("file", help="plug-in file, .wasm or .wat")
    call.add_argument("function", help="name of the export to run")
    call.add_argument("--input", help="input given to the export (text or JSON)")
    call.add_argument("--input-file", help="read the input from this file")
    call.add_argument(
        "--config", action="append", default=[], metavar="KEY=VALUE", help="plug-in config entry"
    )
    call.add_argument("--timeout-ms", type=int, help=f"default {Limits().timeout_ms}")
    call.add_argument("--memory-mib", type=int, help=f"default {Limits().memory_mib}")
    call.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="let the plug-in make HTTP requests to HOST (denied by default)",
    )
    call.add_argument(
        "--spec", help="OpenAPI document whose operations the plug-in may call (host functions)"
    )
    call.add_argument(
        "--grant",
        action="append",
        default=[],
        metavar="OP",
        help="let the plug-in call operation OP (operationId, or * for all); repeatable",
    )
    call.add_argument(
        "--url", help="call the app at this base URL instead of in process with a throw-away store"
    )
    call.add_argument("--token", help="the plug-in's bearer token for --url")
    call.add_argument(
        "--app",
        help="the app --spec describes, run in process with a throw-away database: "
        "module:attribute or an installed app's name (default: lightcontrol, for its own document)",
    )
    call.set_defaults(handler=cmd_plugin_call)

    inspecting = plugin_commands.add_parser(
        "inspect", parents=[_DEBUG], help="list exports, imports and needs"
    )
    inspecting.add_argument("file", help="plug-in file, .wasm or .wat")
    inspecting.add_argument("--json", action="store_true", help="print JSON")
    inspecting.add_argument(
        "--spec",
        help="OpenAPI document: list the operations it calls, the grants it needs and the "
        "webhooks it handles",
    )
    inspecting.set_defaults(handler=cmd_plugin_inspect)

    _add_plugin_new(plugin_commands)
    openapi = commands.add_parser(
        "openapi",
        parents=[_DEBUG],
        help="print an app's OpenAPI document, with its tracked models' webhooks",
    )
    openapi.add_argument("--app", required=True, help="the app: module:attribute or a name")
    openapi.add_argument("--out", help="write it to this file instead of standard output")
    openapi.add_argument(
        "--db", help="the database given to the app's factory (e.g. sqlite:// for none on disk)"
    )
    openapi.set_defaults(handler=cmd_openapi)
    _add_pdk(commands)
    _add_events(commands)
    _add_gateway(commands)
    return parser


def _add_gateway(commands: Any) -> None:
    gateway = commands.add_parser(
        "gateway",
        parents=[_DEBUG],
        help="give an app in any language plug-ins: its signed webhooks in, its API out",
    )
    gateway.add_argument(
        "--config", default="gateway.yaml", help="the gateway's YAML file, default ./gateway.yaml"
    )
    gateway.add_argument("--host", help="listen on this address (default: the file's, 127.0.0.1)")
    gateway.add_argument("--port", type=int, help="listen on this port (default: the file's, 8600)")
    gateway.add_argument(
        "--check",
        action="store_true",
        help="load the file, the document and the plug-ins, say what is there, and exit",
    )
    gateway.add_argument("--workers", type=int, default=1, help=_WORKERS_HELP)
    _add_log_format(gateway)
    gateway.set_defaults(handler=cmd_gateway)


def _add_log_format(command: Any) -> None:
    command.add_argument(
        "--log-format",
        choices=_logformat.FORMATS,
        help=f"text (default) or json: one JSON object per line (env {_logformat.FORMAT_ENV})",
    )


_SPEC_HELP = (
    "the OpenAPI document: a file or an http(s) URL (an app's /openapi.json); default: "
    "--app's, $HOSTWIRE_SPEC, the nearest hostwire.toml's spec, or the installed app's"
)
_SPEC_APP_HELP = "take the document of this app (module:attribute or an installed app's name)"


def _add_plugin_new(plugin_commands: Any) -> None:
    new = plugin_commands.add_parser(
        "new", parents=[_DEBUG], help="start a plug-in project on a generated PDK"
    )
    new.add_argument("name", help="the plug-in's name (also its folder)")
    new.add_argument("--lang", required=True, choices=LANGUAGES)
    new.add_argument("--spec", help=_SPEC_HELP)
    new.add_argument("--app", help=_SPEC_APP_HELP)
    new.add_argument("--dir", default=".", help="where to create it, default .")
    new.set_defaults(handler=cmd_plugin_new)
    building = plugin_commands.add_parser(
        "build", parents=[_DEBUG], help="build a plug-in project's build/plugin.wasm"
    )
    building.add_argument(
        "dir", nargs="?", help="the project (default: the nearest folder with hostwire.toml)"
    )
    building.set_defaults(handler=cmd_plugin_build)
    testing = plugin_commands.add_parser(
        "test", parents=[_DEBUG], help="build a plug-in project if needed, then run its tests"
    )
    testing.add_argument(
        "dir", nargs="?", help="the project (default: the nearest folder with hostwire.toml)"
    )
    testing.add_argument(
        "pytest_args", nargs=argparse.REMAINDER, help="after --: arguments for pytest"
    )
    testing.set_defaults(handler=cmd_plugin_test)


def _add_pdk(commands: Any) -> None:
    pdk = commands.add_parser("pdk", parents=[_DEBUG], help="generate plug-in development kits")
    pdk_commands = pdk.add_subparsers(dest="pdk_command", required=True, metavar="ACTION")
    gen = pdk_commands.add_parser(
        "generate", parents=[_DEBUG], help="a PDK for one language from an OpenAPI file"
    )
    gen.add_argument("--spec", help=_SPEC_HELP)
    gen.add_argument("--app", help=_SPEC_APP_HELP)
    gen.add_argument("--lang", required=True, choices=LANGUAGES)
    gen.add_argument("--out", required=True, help="the folder to write")
    gen.add_argument(
        "--templates", help="a folder of your own templates that override ours file by file"
    )
    gen.set_defaults(handler=cmd_pdk_generate)


def _add_events(commands: Any) -> None:
    events = commands.add_parser(
        "events", parents=[_DEBUG], help="list or replay deliveries of after-events"
    )
    event_commands = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    listing = event_commands.add_parser("list", parents=[_DEBUG], help="deliveries, newest first")
    listing.add_argument("--plugin", help="only this plug-in's deliveries")
    listing.add_argument("--state", choices=STATES, help="only deliveries in this state")
    listing.add_argument("--event", help="only this event's deliveries")
    listing.add_argument("--limit", type=int, default=50, help="default 50")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_events_list)
    replay = event_commands.add_parser(
        "replay", parents=[_DEBUG], help="deliver a dead or delivered event again"
    )
    replay.add_argument("event_id", help="the event's id (evt_...)")
    replay.add_argument("--plugin", help="only to this plug-in")
    replay.set_defaults(handler=cmd_events_replay)
    for sub in (listing, replay):
        sub.add_argument(
            "--db",
            default="lightcontrol.db",
            help="the app's database: a URL (postgresql://...) or an SQLite file, "
            "default ./lightcontrol.db",
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        fmt = _logformat.log_format(getattr(args, "log_format", None))
    except ValueError as exc:
        print(f"hostwire: error: {exc}", file=sys.stderr)
        return UsageError.exit_code
    _logformat.configure(logging.DEBUG if args.debug else logging.INFO, fmt)
    if hasattr(args, "log_format"):
        # The server (and its worker processes) read it from the environment.
        os.environ[_logformat.FORMAT_ENV] = fmt
    try:
        code: int = args.handler(args)
    except HostwireError as exc:
        # The exception's class decides the exit code (see _errors.py), --debug or not.
        if args.debug:
            traceback.print_exc()
        if fmt == "json" and hasattr(args, "log_format"):  # the server's log: one more line
            logging.getLogger("hostwire.cli").error("%s", exc)
        else:
            print(f"hostwire: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
