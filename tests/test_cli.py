"""The command line, run as a user would: `python -m hostwire ...`."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

import wat
from conftest import ROOT
from hostwire import Outbox, new_envelope


def hostwire(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hostwire", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture
def hostile_wat(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.wat"
    path.write_text(_without_host_calls())
    return path


def _without_host_calls() -> str:
    # The CLI has no host functions yet, so drop the exports that need one.
    lines = wat.HOSTILE.splitlines()
    kept: list[str] = []
    skipping = False
    for line in lines:
        if '"extism:host/user"' in line:
            continue
        if '(func (export "call_host' in line:
            skipping = True
        elif skipping and line.strip().startswith("(func"):
            skipping = False
        if not skipping:
            kept.append(line)
    return "\n".join(kept)


def test_call_count_vowels(count_vowels_wasm: Path) -> None:
    result = hostwire("plugin", "call", str(count_vowels_wasm), "count_vowels", "--input", "Hello")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"count": 2, "total": 5, "vowels": "aeiouAEIOU"}
    assert "counted vowels: 2" in result.stderr  # the plug-in's log line


def test_call_with_config(count_vowels_wasm: Path) -> None:
    result = hostwire(
        "plugin",
        "call",
        str(count_vowels_wasm),
        "count_vowels",
        "--input",
        "Hello",
        "--config",
        "vowels=lH",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["count"] == 3


def test_call_wat_file_and_input_file(hostile_wat: Path, tmp_path: Path) -> None:
    data = tmp_path / "in.json"
    data.write_text('{"from": "a file"}')
    result = hostwire("plugin", "call", str(hostile_wat), "echo", "--input-file", str(data))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"from": "a file"}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(
            ["infinite_loop", "--timeout-ms", "100"], 3, "timed out after 100 ms", id="timeout"
        ),
        pytest.param(["memory_grow_bomb", "--memory-mib", "4"], 3, "more than 4 MiB", id="oom"),
        pytest.param(["unreachable_trap"], 3, "`unreachable` instruction executed", id="trap"),
        pytest.param(["nope"], 3, 'no export "nope"', id="no-such-export"),
        pytest.param(
            ["echo", "--memory-mib", "1"], 64, "memory_mib must be at least 2", id="limit"
        ),
    ],
)
def test_call_failures_are_one_line(
    hostile_wat: Path, args: list[str], code: int, message: str
) -> None:
    result = hostwire("plugin", "call", str(hostile_wat), *args)
    assert result.returncode == code
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("hostwire: error: ")
    assert "Traceback" not in result.stderr


def test_missing_file() -> None:
    result = hostwire("plugin", "call", "nowhere/plugin.wasm", "run")
    assert result.returncode == 3
    assert "does not exist" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(0, id="before-the-command"),
        pytest.param(1, id="after-plugin"),
        pytest.param(-1, id="at-the-end"),
    ],
)
def test_debug_anywhere_shows_the_traceback_and_keeps_the_exit_code(
    hostile_wat: Path, where: int
) -> None:
    args = ["plugin", "call", str(hostile_wat), "unreachable_trap"]
    args.insert(where if where >= 0 else len(args), "--debug")
    result = hostwire(*args)
    assert result.returncode == 3, result.stderr
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("hostwire: error: ")


def _serve(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return hostwire("serve", "--config", str(config), "--db", str(config.parent / "x.db"), *extra)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        pytest.param(
            "path: missing.wasm",
            r'plugin "a" \(plugins\[0\]\): path: file .* does not exist',
            id="missing-plugin-file",
        ),
        pytest.param(
            "path: a.wat\n    sha256: '" + "0" * 64 + "'",
            r'plugin "a" \(plugins\[0\]\): path: .*a.wat has sha256',
            id="wrong-hash",
        ),
        pytest.param(
            "path: a.wat\n    grants: [paint]",
            r'Plug-in "a" grants "paint", which is not an operation',
            id="unknown-grant",
        ),
        pytest.param("path: a.wat\n    limts: {}", r"limts: unknown key", id="unknown-key"),
    ],
)
@pytest.mark.parametrize(
    "debug", [pytest.param([], id="plain"), pytest.param(["--debug"], id="debug")]
)
def test_serve_configuration_errors_exit_2_naming_the_file(
    hostile_wat: Path, entry: str, message: str, debug: list[str]
) -> None:
    hostile_wat.rename(hostile_wat.with_name("a.wat"))
    config = hostile_wat.parent / "hostwire.yaml"
    config.write_text(f"plugins:\n  - name: a\n    {entry}\n")
    result = _serve(config, *debug)
    assert result.returncode == 2, result.stderr
    last = result.stderr.splitlines()[-1]
    assert re.match(rf"hostwire: error: {re.escape(str(config))}: .*{message}", last), last
    assert ("Traceback" in result.stderr) == bool(debug)


def test_serve_with_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = _serve(tmp_path / "nope.yaml", "--debug")
    assert result.returncode == 2
    assert f"{tmp_path / 'nope.yaml'}: no such configuration file." in result.stderr


def test_inspect_lists_exports_imports_and_events(count_vowels_wasm: Path) -> None:
    result = hostwire("plugin", "inspect", str(count_vowels_wasm), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"name": "count_vowels", "kind": "func", "signature": "() -> (i32)"} in report["exports"]
    assert "config_get" in report["kernel_functions"]
    assert report["host_functions"] == []
    assert report["wasi"] is False


def test_inspect_text_output(tmp_path: Path) -> None:
    path = tmp_path / "events.wat"
    path.write_text(
        '(module (import "extism:host/user" "get_states" (func (param i64) (result i64)))'
        ' (func (export "light_before_save") (result i32) i32.const 0)'
        ' (func (export "http_pre_hook") (result i32) i32.const 0))'
    )
    result = hostwire("plugin", "inspect", str(path))
    assert result.returncode == 0, result.stderr
    assert "host functions it calls   get_states" in result.stdout
    assert "lifecycle events handled  light_before_save" in result.stdout
    assert "HTTP hooks                http_pre_hook" in result.stdout


def test_inspect_garbage(tmp_path: Path) -> None:
    path = tmp_path / "junk.wasm"
    path.write_bytes(b"\0asm\x01\0\0\0\xff\xff")
    result = hostwire("plugin", "inspect", str(path))
    assert result.returncode == 3
    assert "not a valid WebAssembly module" in result.stderr


CYCLE = "sample_plugins/cycle_color/build/plugin.wasm"
LIGHTS = "openapi/light.yaml"


def test_call_runs_a_plugin_against_a_throwaway_lightcontrol() -> None:
    grants = ["--grant", "getStates", "--grant", "setLightColor"]
    first = hostwire("plugin", "call", CYCLE, "run", "--spec", LIGHTS, *grants)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"from": "white", "to": "red", "status": 200}
    # Each run starts from a fresh store: no state leaks between calls.
    again = hostwire(
        "plugin", "call", CYCLE, "run", "--spec", LIGHTS, *grants, "--config", "order=blue"
    )
    assert json.loads(again.stdout) == {"from": "white", "to": "blue", "status": 200}
    assert again.stderr == ""


def test_call_outside_the_grants_fails_with_the_reason() -> None:
    result = hostwire("plugin", "call", CYCLE, "run", "--spec", LIGHTS, "--grant", "getStates")
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert "403" in line
    assert 'not granted operation "setLightColor"' in line


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(
            ["--spec", LIGHTS, "--grant", "paint"],
            2,
            'grants "paint", which is not an operation',
            id="unknown-grant",
        ),
        pytest.param(
            ["--grant", "getStates"], 64, "--grant and --url need --spec", id="grant-without-spec"
        ),
        pytest.param(
            [], 64, "calls host functions (get_states, set_light_color): give --spec", id="no-spec"
        ),
        pytest.param(
            ["--spec", "nope.yaml"], 2, "nope.yaml: no such OpenAPI document", id="missing-spec"
        ),
    ],
)
def test_call_usage_errors_are_one_line(args: list[str], code: int, message: str) -> None:
    result = hostwire("plugin", "call", CYCLE, "run", *args)
    assert result.returncode == code
    (line,) = result.stderr.strip().splitlines()
    assert message in line


def test_call_over_http_reports_an_unreachable_app() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = hostwire(
        "plugin",
        "call",
        CYCLE,
        "run",
        "--spec",
        LIGHTS,
        "--grant",
        "*",
        "--url",
        f"http://127.0.0.1:{port}",
        "--token",
        "t",
    )
    assert result.returncode == 3
    assert "status 502: upstream_unreachable" in result.stderr


def test_inspect_with_spec_lists_operations_and_grants() -> None:
    result = hostwire("plugin", "inspect", CYCLE, "--spec", LIGHTS, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["host_functions"] == ["get_states", "set_light_color"]
    assert report["operations"] == [
        {
            "function": "get_states",
            "operation": "GET /states",
            "grant": "getStates",
            "summary": "Get the on/off status and colour of the default light.",
        },
        {
            "function": "set_light_color",
            "operation": "POST /light_color",
            "grant": "setLightColor",
            "summary": "Change the colour of the default light.",
        },
    ]
    assert report["grants_needed"] == ["getStates", "setLightColor"]
    text = hostwire("plugin", "inspect", CYCLE, "--spec", LIGHTS).stdout
    assert "grants it needs           getStates setLightColor" in text


LAGO = "tests/documents/lago/openapi.yaml"


def test_inspect_with_spec_lists_every_webhook_the_plugin_handles(tmp_path: Path) -> None:
    path = tmp_path / "billing.wat"
    path.write_text(
        "(module"
        + "".join(
            f' (func (export "{name}") (result i32) i32.const 0)'
            for name in ("invoice_created", "feature_created", "light_after_update", "count")
        )
        + ")"
    )
    result = hostwire("plugin", "inspect", str(path), "--spec", LAGO, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["events"] == [
        {"export": "feature_created", "webhook": "feature.created"},
        {"export": "invoice_created", "webhook": "invoice_created"},
    ]
    text = hostwire("plugin", "inspect", str(path), "--spec", LAGO).stdout
    assert "events handled            feature_created (feature.created), invoice_created\n" in text
    # Without a document, only the names of lifecycle events say what is an event.
    bare = json.loads(hostwire("plugin", "inspect", str(path), "--json").stdout)
    assert bare["events"] == [{"export": "light_after_update", "webhook": "light.after_update"}]
    assert bare["lifecycle_events"] == ["light_after_update"]


def test_events_list_and_replay(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    outbox = Outbox(db)
    envelope = new_envelope("light", "after_update", {"id": "default"}, None, {})
    with outbox.engine.begin() as conn:
        Outbox.add(
            conn, envelope, subject="light/default", targets=[("follow", "light_after_update")]
        )
        conn.exec_driver_sql(
            "UPDATE hostwire_deliveries SET state = 'dead', attempts = 8, last_error = 'boom'"
        )
    outbox.close()
    listed = hostwire("events", "list", "--db", str(db))
    assert listed.returncode == 0, listed.stderr
    assert envelope["id"] in listed.stdout
    assert "dead" in listed.stdout
    assert "boom" in listed.stdout
    replayed = hostwire("events", "replay", envelope["id"], "--db", str(db))
    assert replayed.returncode == 0
    assert replayed.stdout.startswith("1 deliveries queued again")
    (delivery,) = json.loads(hostwire("events", "list", "--db", str(db), "--json").stdout)
    assert (delivery["state"], delivery["attempts"]) == ("pending", 0)
    unknown = hostwire("events", "replay", "evt_nope", "--db", str(db))
    assert unknown.returncode == 64
    assert 'No event has the id "evt_nope"' in unknown.stderr
    missing = hostwire("events", "list", "--db", str(tmp_path / "none.db"))
    assert (missing.returncode, missing.stderr.strip()) == (
        64,
        f"hostwire: error: {tmp_path / 'none.db'}: no such database "
        "(give the app's --db file or database URL).",
    )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_events_commands_take_a_database_url(database_url: str) -> None:
    outbox = Outbox(database_url)
    envelope = new_envelope("light", "after_update", {"id": "default"}, None, {})
    with outbox.engine.begin() as conn:
        Outbox.add(
            conn, envelope, subject="light/default", targets=[("follow", "light_after_update")]
        )
        conn.execute(text("UPDATE hostwire_deliveries SET state = 'dead', last_error = 'boom'"))
    outbox.close()
    (dead,) = json.loads(hostwire("events", "list", "--db", database_url, "--json").stdout)
    assert (dead["event_id"], dead["state"], dead["last_error"]) == (envelope["id"], "dead", "boom")
    replayed = hostwire("events", "replay", envelope["id"], "--db", database_url)
    assert replayed.stdout.startswith("1 deliveries queued again")
    (pending,) = json.loads(hostwire("events", "list", "--db", database_url, "--json").stdout)
    assert pending["state"] == "pending"
    unknown = hostwire("events", "list", "--db", "nosuch://db")
    assert (unknown.returncode, unknown.stderr.count("\n")) == (64, 1)
    assert "is not a database URL SQLAlchemy knows" in unknown.stderr
