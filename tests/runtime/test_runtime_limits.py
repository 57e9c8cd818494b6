"""What a hostile plug-in can no longer do: oversize host inputs and outputs, bogus
output_set, endless host calls, bad JSON answers, plug-in HTTP redirects off the allow-list."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import wat
from conftest import ROOT, compile_wat
from hostwire import (
    CallContext,
    HostCallLimitError,
    HostFunction,
    HostFunctionError,
    Limits,
    Plugin,
    PluginMemoryError,
    PluginOutputError,
    PluginTimeoutError,
    load_config,
)
from hostwire._runtime.strictjson import JsonProblem, loads_strict


@pytest.fixture(scope="module")
def breaker_wasm() -> bytes:
    return compile_wat(wat.CONTRACT_BREAKER)


def _plugin(wasm: bytes, handler=None, **limits: int) -> Plugin:
    handler = handler or (lambda context, data: data)
    return Plugin(
        "breaker",
        wasm,
        limits=Limits(**limits),
        host_functions=[HostFunction("host_echo", handler)],
        allowed_hosts=["127.0.0.1"],
    )


# -- 1. host-function input and plug-in output are bounded before copying -------

_RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, tracemalloc
    sys.path.insert(0, sys.argv[1])
    import wat
    from conftest import compile_wat
    from hostwire import HostFunction, Limits, Plugin, PluginOutputError

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    seen = []
    def handler(context, data):
        seen.append(len(data))
        return b'{"status": 200, "headers": {}, "body": null}'

    plugin = Plugin("big", compile_wat(wat.CONTRACT_BREAKER),
                    limits=Limits(memory_mib=256, max_instances=8, timeout_ms=30000),
                    host_functions=[HostFunction("host_echo", handler)])
    answers = []
    def call(export):
        try:
            answers.append(json.loads(plugin.call(export))["status"])
        except PluginOutputError as exc:
            answers.append(type(exc).__name__)
    def wave(export):
        threads = [threading.Thread(target=call, args=(export,)) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
    for export in ("huge_host_input", "huge_output"):
        wave(export)  # the pool grown as the waves grow it, not the payload, is the baseline
    start = rss()
    tracemalloc.start()
    for _ in range(8):
        wave("huge_host_input")
        wave("huge_output")
    python_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({"start": start, "end": rss(), "python_peak": python_peak,
                      "seen": seen, "answers": sorted(set(map(str, answers)))}))
    """
)


def test_fifty_megabyte_host_inputs_and_outputs_are_refused_without_being_copied() -> None:
    """8 waves of 8 concurrent calls, each handing the host a 50 MiB block as a
    host-function input and as output: RSS ends within 10% of its start, and
    Python never holds more than a few KiB of it (it used to copy each one)."""
    done = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(ROOT / "tests")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    figures = json.loads(done.stdout)
    assert figures["seen"] == []  # the handler never got the input
    assert figures["answers"] == ["413", "PluginOutputError"]
    assert figures["end"] <= figures["start"] * 1.1, figures
    assert figures["python_peak"] < 1024 * 1024, figures


def test_oversize_host_input_gets_a_413_answer_and_the_plugin_goes_on(
    breaker_wasm: bytes,
) -> None:
    wasm = compile_wat(wat.caller("host_echo"))
    calls: list[bytes] = []

    def record(context: CallContext, data: bytes) -> bytes:
        calls.append(data)
        return b"handled"

    with _plugin(wasm, record, max_host_input_bytes=100) as plugin:
        answer = json.loads(plugin.call("call_host_echo", b"x" * 101))
        assert plugin.call("call_host_echo", b"x" * 100) == b"handled"
    assert answer["status"] == 413
    assert answer["headers"] == {}
    error = answer["body"]["error"]
    assert error["code"] == "payload_too_large"
    assert "101 bytes, over the plug-in's limit of 100 (max_host_input_bytes)" in error["message"]
    assert calls == [b"x" * 100]


def test_max_host_input_bytes_is_a_config_limit(tmp_path: Path) -> None:
    path = tmp_path / "hostwire.yaml"
    path.write_text(
        "plugins:\n  - name: p\n    path: p.wasm\n    limits: {max_host_input_bytes: 4096}\n"
    )
    assert load_config(path).plugins[0].limits.to_limits().max_host_input_bytes == 4096
    assert Limits().max_host_input_bytes == 256 * 1024
    with pytest.raises(ValueError, match="max_host_input_bytes must be at least 1"):
        Limits(max_host_input_bytes=0)


# -- 2. a bogus output_set is an output error, never "no output" ----------------


@pytest.mark.parametrize(
    ("export", "reason"),
    [
        pytest.param("output_huge_offset", "no block of its memory starts", id="huge-offset"),
        pytest.param(
            "output_past_memory", "runs past the end of the 16-byte block", id="past-memory"
        ),
        pytest.param(
            "output_past_block", "runs past the end of the 16-byte block", id="past-block"
        ),
        pytest.param("output_unallocated", "no block of its memory starts", id="unallocated"),
        pytest.param("output_negative", "no block of its memory starts", id="negative"),
    ],
)
def test_bogus_output_set_is_an_output_error(breaker_wasm: bytes, export: str, reason: str) -> None:
    with _plugin(breaker_wasm) as plugin:
        with pytest.raises(PluginOutputError, match=reason) as caught:
            plugin.call(export)
        assert f'Plug-in "breaker" export "{export}" called output_set(' in str(caught.value)
        assert plugin.call("output_nothing") == b""  # no output_set at all is still no output


def test_bogus_output_set_fails_plugin_call_on_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "breaker.wat"
    path.write_text(wat.caller().replace("(memory", _BOGUS_EXPORT + "\n  (memory"))
    done = subprocess.run(
        [sys.executable, "-m", "hostwire", "plugin", "call", str(path), "bogus"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 3, done
    assert "no block of its memory starts at that offset" in done.stderr


_BOGUS_EXPORT = """  (func (export "bogus") (result i32)
    (call $output_set (i64.const 60000) (i64.const 5)) (i32.const 0))"""


@pytest.mark.parametrize("export", ["late_output", "late_http"])
def test_a_valid_block_after_the_deadline_is_a_timeout_not_a_bad_output(export: str) -> None:
    # Past timeout_ms, Extism stops every call into the plug-in's kernel, and its
    # C API then answers 0: the block at a valid offset seems to have no length.
    request = b'{"url": "http://127.0.0.1:9/", "method": "GET"}'
    with Plugin("late", compile_wat(wat.LATE), limits=Limits(timeout_ms=20)) as plugin:
        with pytest.raises(PluginTimeoutError, match="limit timeout_ms") as caught:
            plugin.call(export, request)
        assert f'Plug-in "late" export "{export}"' in str(caught.value)


# -- 3. the first refused host call ends the plug-in call -----------------------


def test_host_call_limit_stops_the_guest_at_the_first_refused_call(
    breaker_wasm: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    contexts: list[CallContext] = []

    def count(context: CallContext, data: bytes) -> bytes:
        contexts.append(context)
        return b"{}"

    with (
        caplog.at_level(logging.DEBUG),
        _plugin(breaker_wasm, count, max_host_calls=10, timeout_ms=5000) as plugin,
    ):
        with pytest.raises(HostCallLimitError) as caught:
            plugin.call("host_calls_forever")
        assert plugin.call("output_nothing") == b""  # drains the plug-in's log
    assert not [r for r in caplog.records if "ran on after a refused" in r.getMessage()]
    assert "more than 10 host-function calls (limit max_host_calls)" in str(caught.value)
    assert caught.value.function == "host_echo"
    assert len(contexts) == 10
    # The guest made exactly one more call, the refused one, and then stopped.
    assert contexts[0].host_calls == 11
    assert contexts[0].error is caught.value


def test_a_stopped_call_never_disturbs_a_concurrent_call_of_the_same_plugin(
    breaker_wasm: bytes,
) -> None:
    """Extism's cancel would interrupt every running instance of the plug-in."""
    first_failed = threading.Event()

    def handler(context: CallContext, data: bytes) -> bytes:
        if context.extra.get("wait"):
            assert first_failed.wait(30)
        return b"survived"

    wasm = compile_wat(wat.HOSTILE)
    with Plugin(
        "pair",
        wasm,
        limits=Limits(max_host_calls=3, timeout_ms=20000),
        host_functions=[HostFunction("host_echo", handler)],
    ) as plugin:
        result: list[object] = []
        waiting = threading.Thread(
            target=lambda: result.append(plugin.call("call_host", b"x", wait=True))
        )
        waiting.start()
        with pytest.raises(HostCallLimitError):
            plugin.call("call_host_forever", b"x")
        first_failed.set()
        waiting.join(30)
    assert result == [b"survived"]


def test_a_result_that_does_not_fit_is_a_memory_error(breaker_wasm: bytes) -> None:
    wasm = compile_wat(wat.caller("host_echo"))
    with (
        _plugin(wasm, lambda c, d: b"x" * (3 * 1024 * 1024), memory_mib=2) as plugin,
        pytest.raises(PluginMemoryError, match="no room for the 3145728-byte result"),
    ):
        plugin.call("call_host_echo", b"{}")


# -- 4. plug-in JSON answers: strict UTF-8, bounded nesting ----------------------


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        pytest.param(b'{"a": "\xff\xfe"}', "not UTF-8 (byte 0xff at offset 7", id="not-utf8"),
        pytest.param(b"\xff\xfe{\x00}\x00", "not UTF-8", id="utf16-bom"),
        pytest.param(b"[" * 100_000, "nested too deeply", id="100000-deep"),
        pytest.param(b"[" * 200 + b"]" * 200, "nested too deeply (over 128 levels)", id="200-deep"),
        pytest.param(b'{"a": NaN}', "not JSON: NaN is not a JSON number", id="nan"),
        pytest.param(b"{not json", "not JSON: Expecting property name", id="garbage"),
    ],
)
def test_call_json_refuses_bad_json_answers_clearly(
    hostile_wasm: bytes, output: bytes, reason: str
) -> None:
    answer = HostFunction("host_echo", lambda context, data: output)
    with (
        Plugin("json", hostile_wasm, host_functions=[answer]) as plugin,
        pytest.raises(PluginOutputError, match="returned invalid JSON: it is") as caught,
    ):
        plugin.call_json("call_host", {"x": 1})
    message = str(caught.value)
    assert reason in message
    assert "utf-16" not in message
    assert "\n" not in message


def test_loads_strict_accepts_what_json_allows() -> None:
    deep = b"[" * 128 + b"]" * 128
    assert loads_strict(deep) is not None
    assert loads_strict('{"é": [1, 2.5, null]}'.encode()) == {"é": [1, 2.5, None]}
    with pytest.raises(JsonProblem, match="nested too deeply"):
        loads_strict(b"[" + deep + b"]")


# -- 5. plug-in HTTP: redirects stay within allowed_hosts -----------------------


class _Server:
    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                status, headers, body = routes.get(self.path, (404, {}, b"not here"))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value.format(b=server.peer))
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.peer = ""
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[_Server, _Server]]:
    b = _Server({"/secret": (200, {}, b"the secret of B")})
    a = _Server(
        {
            "/hello": (200, {"x-from": "A"}, b"hello from A"),
            "/to-b": (302, {"location": "{b}/secret"}, b"moved"),
            "/to-a": (302, {"location": "/hello"}, b""),
            "/big": (200, {}, b"x" * 1000),
        }
    )
    # B is addressed as "localhost": another host name for the same loopback address.
    a.peer = f"http://localhost:{b.port}"
    yield a, b
    a.close()
    b.close()


def _fetch(plugin: Plugin, export: str, url: str) -> bytes:
    return plugin.call(export, json.dumps({"url": url, "method": "GET", "headers": {}}))


def test_plugin_http_does_not_follow_a_redirect_off_the_allow_list(
    breaker_wasm: bytes, servers: tuple[_Server, _Server]
) -> None:
    a, b = servers
    with _plugin(breaker_wasm) as plugin:
        url = f"http://127.0.0.1:{a.port}/to-b"
        assert _fetch(plugin, "fetch_status", url) == b"302"
        headers = json.loads(_fetch(plugin, "fetch_headers", url))
        assert _fetch(plugin, "fetch_body", url) == b"moved"
        # Asked to go to B itself, the plug-in is refused.
        with pytest.raises(HostFunctionError, match=r"localhost:\d+/secret is not allowed"):
            _fetch(plugin, "fetch_body", f"http://localhost:{b.port}/secret")
    assert headers["location"] == f"http://localhost:{b.port}/secret"
    assert b.requests == []
    assert a.requests == ["/to-b"] * 3


def test_plugin_http_follows_redirects_within_the_allow_list(
    breaker_wasm: bytes, servers: tuple[_Server, _Server]
) -> None:
    a, b = servers
    with _plugin(breaker_wasm) as plugin:
        assert _fetch(plugin, "fetch_body", f"http://127.0.0.1:{a.port}/hello") == b"hello from A"
        assert _fetch(plugin, "fetch_body", f"http://127.0.0.1:{a.port}/to-a") == b"hello from A"
        headers = json.loads(_fetch(plugin, "fetch_headers", f"http://127.0.0.1:{a.port}/hello"))
    assert headers["x-from"] == "A"
    assert a.requests == ["/hello", "/to-a", "/hello", "/hello"]
    with Plugin(
        "both",
        breaker_wasm,
        host_functions=[HostFunction("host_echo", lambda c, d: d)],
        allowed_hosts=["127.0.0.1", "localhost"],
    ) as plugin:
        # With B allowed too, the same redirect reaches it.
        assert _fetch(plugin, "fetch_body", f"http://127.0.0.1:{a.port}/to-b") == b"the secret of B"
    assert b.requests == ["/secret"]


def test_plugin_http_response_is_bounded(
    breaker_wasm: bytes, servers: tuple[_Server, _Server]
) -> None:
    a, _ = servers
    with (
        _plugin(breaker_wasm, max_input_bytes=200) as plugin,
        pytest.raises(HostFunctionError, match=r"is over 200 bytes \(limit max_input_bytes\)"),
    ):
        _fetch(plugin, "fetch_body", f"http://127.0.0.1:{a.port}/big")
