"""No silent failures (issue 16): mistakes that used to fail quietly, or far from
their cause, are named where they are made.

- exports spelled almost like an event or hook, and grants no import can use,
  are warnings when the plug-in loads;
- a file that is not WebAssembly says what it looks like, and imports the host
  cannot provide (AssemblyScript's ``env.abort``) fail the load saying what to do;
- a delivery that can never succeed (no handler, not granted) is dead at once.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

import wat
from conftest import ROOT, compile_wat
from event_plugins import LIGHT, Recorder, handler, states, wait_for, write_event
from hostwire import HostApi, HttpTarget, Outbox, Plugin, PluginLoadError, PluginSet
from hostwire._config import parse_config
from hostwire._hostapi import load_openapi
from hostwire._pluginset import near_misses
from hostwire._runtime import inspect_module
from hostwire._runtime.imports import EXTISM_KERNEL

LIGHTS = ROOT / "openapi" / "light.yaml"
FOLLOW = ROOT / "sample_plugins" / "follow" / "build" / "plugin.wasm"
CYCLE = ROOT / "sample_plugins" / "cycle_color" / "build" / "plugin.wasm"
LIBC = Path("/usr/lib/x86_64-linux-gnu/libc.so.6")
ASC = ROOT / "node_modules" / ".bin" / "asc"


def exporting(*names: str) -> str:
    functions = "".join(f' (func (export "{n}") (result i32) i32.const 0)' for n in names)
    return f'(module (memory (export "memory") 1){functions})'


def load(tmp_path: Path, caplog: pytest.LogCaptureFixture, **plugin: object) -> list[str]:
    """Load one plug-in as an app does (against light.yaml); its WARNING lines."""
    raw = {"openapi": str(LIGHTS), "plugins": [{"name": "p", **plugin}]}
    config = parse_config(raw, path=tmp_path / "hostwire.yaml")
    api = HostApi(LIGHTS, HttpTarget("http://127.0.0.1:9"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hostwire.plugins"), PluginSet(config, api):
        pass
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- near-miss exports ---------------------------------------------------------


def test_an_export_spelled_almost_like_an_event_or_hook_is_a_warning_naming_the_real_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "p.wat").write_text(
        exporting(
            "light_after_updat", "http_prehook", "light_before_save", "count_vowels", "_start"
        )
    )
    warnings = load(tmp_path, caplog, path="p.wat")
    spec = f"{LIGHTS}"
    assert warnings == [
        f'plug-in "p" exports "http_prehook", which no event or HTTP hook of {spec} calls: '
        "did you mean http_pre_hook?",
        f'plug-in "p" exports "light_after_updat", which no event or HTTP hook of {spec} calls: '
        "did you mean light_after_update?",
    ]


def test_near_misses_leave_real_names_helpers_and_toolchain_exports_alone() -> None:
    spec = load_openapi(LIGHTS)
    # A helper beside the real handler is not taken for a misspelling of it.
    assert near_misses({"light_after_update", "light_after_updates", "greet"}, spec) == []
    assert near_misses({"__new", "__heap_base", "cabi_realloc", "_initialize"}, spec) == []
    # Without a document, lifecycle names of any model count, and hooks.
    assert near_misses({"task_after_crate", "http_post_hok"}, None) == [
        ("http_post_hok", "http_post_hook"),
        ("task_after_crate", "task_after_create"),
    ]


def test_the_sample_plugins_have_no_near_misses() -> None:
    spec = load_openapi(LIGHTS)
    for wasm in sorted(ROOT.glob("sample_plugins/*/build/plugin.wasm")):
        exports = inspect_module(wasm.read_bytes()).function_exports
        assert near_misses(exports, spec) == [], wasm


def test_inspect_with_spec_shows_near_misses(tmp_path: Path) -> None:
    path = tmp_path / "typo.wat"
    path.write_text(exporting("light_after_updat", "run"))
    result = hostwire("plugin", "inspect", str(path), "--spec", str(LIGHTS), "--json")
    assert result.returncode == 0, result.stderr
    misses = json.loads(result.stdout)["near_misses"]
    assert misses == [{"export": "light_after_updat", "did_you_mean": "light_after_update"}]
    text = hostwire("plugin", "inspect", str(path), "--spec", str(LIGHTS)).stdout
    assert (
        "near miss                 light_after_updat: no event or hook calls it; "
        "did you mean light_after_update?\n"
    ) in text


def test_the_gateway_warns_the_same_at_load(tmp_path: Path) -> None:
    (tmp_path / "p.wat").write_text(exporting("invoice_creatd"))
    lago = ROOT / "tests" / "documents" / "lago" / "openapi.yaml"
    (tmp_path / "gateway.yaml").write_text(
        f"openapi: {lago}\n"
        "app: {base_url: 'http://127.0.0.1:9/api/v1'}\n"
        "webhooks: {secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, event_type: /webhook_type,"
        " subject: ['/{object_type}/lago_id']}\n"
        "plugins: [{name: typo, path: p.wat, grants: [findCustomer]}]\n"
    )
    done = hostwire("gateway", "--check", "--config", str(tmp_path / "gateway.yaml"))
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if ": WARNING: " in line]
    assert warnings == [
        f'hostwire.plugins: WARNING: plug-in "typo" exports "invoice_creatd", which no event or '
        f"HTTP hook of {lago} calls: did you mean invoice_created?",
        'hostwire.plugins: WARNING: plug-in "typo" is granted findCustomer but imports no host '
        "function for it, so the grant can never be used (an old build, or a grant that is not "
        "needed?).",
    ]


# -- grants no import can use ----------------------------------------------------


def test_a_grant_no_import_can_use_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # cycle_color imports get_states and set_light_color (one host function per operation).
    grants = ["getStates", "setLightColor", "updateLight"]
    warnings = load(tmp_path, caplog, path=str(CYCLE), grants=grants)
    assert warnings == [
        'plug-in "p" is granted updateLight but imports no host function for it, so the grant '
        "can never be used (an old build, or a grant that is not needed?)."
    ]
    assert load(tmp_path, caplog, path=str(CYCLE), grants=grants[:2]) == []
    assert load(tmp_path, caplog, path=str(CYCLE), grants=["*"]) == []


# -- files that are not WebAssembly --------------------------------------------------


def _pe(dll: bool) -> bytes:
    header = bytearray(0x80)
    header[:2] = b"MZ"
    struct.pack_into("<I", header, 0x3C, 0x40)
    header[0x40:0x44] = b"PE\0\0"
    struct.pack_into("<H16xH", header, 0x44, 0x8664, 0x2022 if dll else 0x0022)
    return bytes(header)


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("plugin.wasm", compile_wat(exporting("run")))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "looks"),
    [
        pytest.param(b"", "the file is empty (0 bytes)", id="empty"),
        pytest.param(
            b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>",
            "this looks like an HTML page; did a download get an error page",
            id="html",
        ),
        pytest.param(b'{"message": "Not Found"}', "this looks like JSON text", id="json"),
        pytest.param(_zip(), "this looks like a zip archive", id="zip"),
        pytest.param(
            gzip.compress(compile_wat(exporting("run"))),
            "this looks like gzip-compressed data",
            id="gzip",
        ),
        pytest.param(
            b"\xcf\xfa\xed\xfe" + bytes(28), "this looks like a Mach-O binary", id="macho"
        ),
        pytest.param(_pe(dll=True), "this looks like a Windows DLL (PE) for x86-64", id="dll"),
        pytest.param(
            _pe(dll=False), "this looks like a Windows executable (PE) for x86-64", id="exe"
        ),
        pytest.param(
            b"int main(void) { return 0; }\n",
            "this looks like a text file (it starts 'int main(void) { return 0; }')",
            id="text",
        ),
        pytest.param(
            b"\0asm\x0d\0\x01\0", "this is a WebAssembly component (wasm32-wasip2", id="component"
        ),
    ],
)
def test_a_file_that_is_not_webassembly_says_what_it_looks_like(data: bytes, looks: str) -> None:
    with pytest.raises(PluginLoadError) as caught:
        Plugin("p", data)
    message = str(caught.value)
    assert message.startswith(f'Plug-in "p" is not WebAssembly: {looks}')
    assert "\n" not in message


@pytest.mark.skipif(not LIBC.exists(), reason="no glibc at the Debian path")
def test_a_native_shared_library_says_build_for_wasm32(tmp_path: Path) -> None:
    path = tmp_path / "libplugin.so"
    shutil.copy(LIBC, path)
    result = hostwire("plugin", "inspect", str(path))
    assert result.returncode == 3
    assert result.stderr.strip() == (
        f"hostwire: error: {path} is not WebAssembly: this looks like an ELF shared library "
        "for x86-64; build for wasm32 (--target wasm32-unknown-unknown or wasm32-wasip1)."
    )


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_native_builds_are_told_apart(tmp_path: Path) -> None:
    source = tmp_path / "plugin.c"
    source.write_text("int run(void) { return 0; }\nint main(void) { return run(); }\n")
    builds = {
        "a.so": (["-shared", "-fPIC"], "an ELF shared library"),
        "a.o": (["-c"], "an ELF object file (.o)"),
        "a.out": ([], "an ELF executable"),  # position-independent on Debian: ET_DYN too
    }
    for name, (flags, looks) in builds.items():
        out = tmp_path / name
        subprocess.run(["cc", *flags, "-o", str(out), str(source)], check=True, timeout=60)
        with pytest.raises(
            PluginLoadError, match=f"is not WebAssembly: this looks like {re.escape(looks)}"
        ):
            Plugin("p", out.read_bytes())


def test_webassembly_text_after_a_comment_loads_from_a_wasm_file(tmp_path: Path) -> None:
    path = tmp_path / "plugin.wasm"
    path.write_text(";; written by hand\n" + exporting("run"))
    raw = {"plugins": [{"name": "p", "path": str(path)}]}
    with parse_config(raw, path=tmp_path / "h.yaml").plugins[0].load(tmp_path) as plugin:
        assert plugin.call("run") == b""


# -- imports the host cannot provide ----------------------------------------------


@pytest.fixture(scope="module")
def assemblyscript_without_abort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not ASC.exists():
        pytest.skip("AssemblyScript is not installed (make plugins runs npm ci)")
    folder = tmp_path_factory.mktemp("as")
    (folder / "index.ts").write_text(
        "export function run(): i32 {\n  const a = new Array<i32>(2);\n  return a[3];\n}\n"
    )
    out = folder / "plugin.wasm"
    subprocess.run(
        [str(ASC), str(folder / "index.ts"), "-O3", "--runtime", "incremental", "-o", str(out)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    return out


def test_assemblyscript_without_use_abort_is_told_to_build_with_it(
    assemblyscript_without_abort: Path,
) -> None:
    with pytest.raises(PluginLoadError) as caught:
        Plugin("as", assemblyscript_without_abort.read_bytes())
    assert str(caught.value) == (
        'Plug-in "as" imports env.abort, which the host cannot provide: env.abort comes from '
        "AssemblyScript's runtime: build AssemblyScript with `--use abort=...` naming a "
        "function of the plug-in (hostwire's PDK has plugin/abortPlugin)."
    )


def test_inspect_marks_every_import_and_what_provides_it(
    assemblyscript_without_abort: Path, tmp_path: Path
) -> None:
    result = hostwire("plugin", "inspect", str(assemblyscript_without_abort), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {(i["module"], i["name"]): i["provided_by"] for i in report["imports"]} == {
        ("env", "abort"): None
    }
    assert report["unprovided_imports"] == ["env.abort"]
    text = hostwire("plugin", "inspect", str(assemblyscript_without_abort)).stdout
    assert "env::abort (i32, i32, i32, i32) -> ()  NOT PROVIDED by this host" in text
    assert "not provided              env.abort, so it cannot load: env.abort comes from" in text
    # A real plug-in: every import provided, and by whom.
    report = json.loads(
        hostwire("plugin", "inspect", str(CYCLE), "--spec", str(LIGHTS), "--json").stdout
    )
    providers = {i["name"]: i["provided_by"] for i in report["imports"]}
    assert providers["alloc"] == "Extism kernel"
    assert providers["output_set"] == "hostwire kernel"
    assert providers["get_states"] == "host function"
    assert report["unprovided_imports"] == []
    text = hostwire("plugin", "inspect", str(CYCLE)).stdout
    assert "host function (give --spec to check it)" in text


@pytest.mark.parametrize(
    ("imports", "message"),
    [
        pytest.param(
            ('"env" "memcpy" (func (param i32 i32 i32) (result i32))',),
            'imports env.memcpy, which the host cannot provide: the host has no "env" module: '
            "those are symbols the build left undefined",
            id="undefined-symbol",
        ),
        pytest.param(
            ('"wasi_unstable" "fd_write" (func (param i32 i32 i32 i32) (result i32))',),
            "imports wasi_unstable.fd_write, which the host cannot provide: the host links WASI "
            "as wasi_snapshot_preview1 only: build for wasm32-wasip1.",
            id="old-wasi",
        ),
        pytest.param(
            (
                '"env" "abort" (func (param i32 i32 i32 i32))',
                '"env" "seed" (func (result f64))',
            ),
            "imports env.abort, env.seed, which the host cannot provide: env.abort, env.seed "
            "come from AssemblyScript's runtime: build AssemblyScript with `--use abort=...` "
            "and `--use seed=...`",
            id="assemblyscript-seed",
        ),
        pytest.param(
            ('"env" "memory" (memory 1)',),
            "imports env.memory, which the host cannot provide",
            id="imported-memory",
        ),
    ],
)
def test_imports_the_host_cannot_provide_fail_the_load_listing_them(
    imports: tuple[str, ...], message: str
) -> None:
    text = "(module " + " ".join(f"(import {i})" for i in imports) + ")"
    with pytest.raises(PluginLoadError, match='^Plug-in "p" ' + re.escape(message)):
        Plugin("p", compile_wat(text))


def test_every_kernel_function_listed_as_provided_links() -> None:
    # The table of TOOLCHAINS.md: if the list named one Extism lacks, loading would fail.
    signatures = {
        "(i64) -> i64": "(param i64) (result i64)",
        "(i64)": "(param i64)",
        "(i64) -> i32": "(param i64) (result i32)",
        "(i64, i32)": "(param i64 i32)",
        "(i64, i64)": "(param i64 i64)",
        "() -> i64": "(result i64)",
        "() -> i32": "(result i32)",
        "(i64, i64) -> i64": "(param i64 i64) (result i64)",
        "()": "",
    }
    kinds = {
        "(i64) -> i64": "alloc length length_unsafe load_u64 input_load_u64 config_get var_get",
        "(i64)": "free error_set log_info log_warn log_error log_debug log_trace",
        "(i64) -> i32": "load_u8 input_load_u8",
        "(i64, i32)": "store_u8",
        "(i64, i64)": "store_u64 input_set output_set var_set",
        "() -> i64": "input_length input_offset output_length output_offset error_get "
        "memory_bytes http_headers",
        "() -> i32": "http_status_code get_log_level",
        "(i64, i64) -> i64": "http_request",
        "()": "reset",
    }
    names = {name: signatures[kind] for kind, listed in kinds.items() for name in listed.split()}
    assert set(names) == EXTISM_KERNEL
    text = "(module " + "".join(
        f'(import "extism:host/env" "{n}" (func {sig}))' for n, sig in sorted(names.items())
    )
    with Plugin("kernel", compile_wat(text + exporting("run")[len("(module") :])) as plugin:
        assert plugin.call("run") == b""


# -- deliveries that can never succeed ---------------------------------------------


@pytest.fixture
def app_calls() -> list[httpx.Request]:
    return []


def follow(calls: list[httpx.Request], grants: list[str]) -> Plugin:
    """The sample follow plug-in (AssemblyScript), its host calls answered by a fake app."""

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={**LIGHT, "id": "lamp"})

    api = HostApi(LIGHTS, HttpTarget("http://app.test", transport=httpx.MockTransport(answer)))
    return Plugin(
        "follow",
        FOLLOW.read_bytes(),
        config={"target": "lamp"},
        host_functions=api.host_functions("follow", grants),
    )


def fast_outbox(path: Path) -> Outbox:
    return Outbox(path, max_attempts=5, backoff_s=0.01, max_backoff_s=0.05, poll_s=0.05)


def test_a_delivery_refused_as_not_granted_is_dead_at_once_and_replays_once_granted(
    tmp_path: Path, app_calls: list[httpx.Request]
) -> None:
    box = fast_outbox(tmp_path / "app.db")
    with follow(app_calls, []) as refused:
        event = write_event(box, "light/default", [("follow", "light_after_update")])
        box.start([refused])
        wait_for(lambda: states(box, "follow") == ["dead"], "the dead letter")
        box.stop()
    (dead,) = box.deliveries(state="dead")
    assert dead["attempts"] == 1  # not retried: the grant is missing until the config changes
    assert "failed with status 403" in dead["last_error"]
    assert dead["last_error"].endswith(
        "it failed after a host call was refused as not granted (updateLight): "
        "grant it, then replay the event"
    )
    assert app_calls == []
    # The grant is added and the app restarted: replaying the event delivers it.
    again = fast_outbox(tmp_path / "app.db")
    try:
        with follow(app_calls, ["updateLight"]) as granted:
            again.start([granted])
            assert again.replay(event) == 1
            wait_for(lambda: states(again, "follow") == ["delivered"], "the replayed delivery")
    finally:
        again.stop()
    assert [(c.method, c.url.path) for c in app_calls] == [("PATCH", "/lights/lamp")]


def test_a_delivery_whose_handler_is_missing_is_dead_at_once(tmp_path: Path) -> None:
    box = fast_outbox(tmp_path / "app.db")
    recorder = Recorder()
    # The event was for light_after_update; the plug-in was replaced by one without it.
    with handler("p", recorder, exports=("light_after_create",)) as replaced:
        event = write_event(box, "light/default", [("p", "light_after_update")])
        box.start([replaced])
        wait_for(lambda: states(box, "p") == ["dead"], "the dead letter")
        box.stop()
    (dead,) = box.deliveries(state="dead")
    assert dead["attempts"] == 1
    assert dead["last_error"] == (
        'Plug-in "p" has no export "light_after_update" (exports: light_after_create); it can '
        "never succeed: replay the event once the plug-in exports it"
    )
    again = fast_outbox(tmp_path / "app.db")
    try:
        with handler("p", recorder, exports=("light_after_update",)) as fixed:
            again.start([fixed])
            assert again.replay(event) == 1
            wait_for(lambda: states(again, "p") == ["delivered"], "the replayed delivery")
    finally:
        again.stop()
    assert recorder.ids() == [event]


def test_a_failure_without_a_refusal_is_still_retried(tmp_path: Path) -> None:
    box = fast_outbox(tmp_path / "app.db")
    recorder = Recorder()
    try:
        with Plugin(
            "t",
            compile_wat(wat.event_handler("light_after_update")),
            config={"trap": "yes"},
            host_functions=[recorder.host_function()],
        ) as trapping:
            write_event(box, "light/default", [("t", "light_after_update")])
            box.start([trapping])
            wait_for(lambda: states(box, "t") == ["dead"], "the dead letter")
    finally:
        box.stop()
    assert box.deliveries(state="dead")[0]["attempts"] == 5


def hostwire(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hostwire", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
