"""The plug-in runtime: pooling, limits, hostile plug-ins, host functions, logs."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

import wat
from conftest import compile_wat, echo_host_function
from hostwire import (
    CallContext,
    HostCallLimitError,
    HostFunction,
    HostFunctionError,
    Limits,
    Plugin,
    PluginBusyError,
    PluginCallError,
    PluginError,
    PluginExportError,
    PluginInputError,
    PluginLoadError,
    PluginMemoryError,
    PluginOutputError,
    PluginTimeoutError,
    PluginTrapError,
)


def test_echo_round_trip(hostile: Plugin) -> None:
    assert hostile.call("echo", b"hello") == b"hello"
    assert hostile.call("echo", "text is sent as UTF-8: é") == "text is sent as UTF-8: é".encode()


def test_call_json(hostile: Plugin) -> None:
    assert hostile.call_json("echo", {"a": [1, 2]}) == {"a": [1, 2]}


def test_call_json_invalid_output_is_an_output_error(hostile_wasm: bytes) -> None:
    garbage = HostFunction("host_echo", lambda context, data: b"{not json")
    with Plugin("garbage", hostile_wasm, host_functions=[garbage]) as plugin:
        with pytest.raises(
            PluginOutputError, match='"garbage" export "call_host" returned invalid'
        ):
            plugin.call_json("call_host", {"x": 1})
        assert plugin.call_json("echo", {"still": "works"}) == {"still": "works"}


def test_eight_threads_each_get_their_own_outputs(hostile: Plugin) -> None:
    calls_per_thread = 1000
    wrong: list[tuple[bytes, bytes]] = []
    errors: list[BaseException] = []

    def worker(thread: int) -> None:
        try:
            for i in range(calls_per_thread):
                data = f"thread {thread} call {i} ".encode() * (1 + i % 5)
                output = hostile.call("echo", data)
                if output != data:
                    wrong.append((data, output))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert not wrong
    assert all(not thread.is_alive() for thread in threads)


HOSTILE_CASES = [
    pytest.param("infinite_loop", PluginTimeoutError, "timed out after 250 ms", id="loop"),
    pytest.param("memory_grow_bomb", PluginMemoryError, "more than 8 MiB", id="memory.grow-bomb"),
    pytest.param("alloc_bomb", PluginMemoryError, "more than 8 MiB", id="kernel-alloc-bomb"),
    pytest.param(
        "unreachable_trap", PluginTrapError, "`unreachable` instruction executed", id="unreachable"
    ),
    pytest.param(
        "out_of_bounds", PluginTrapError, "out of bounds memory access", id="out-of-bounds"
    ),
    pytest.param(
        "infinite_recursion", PluginTrapError, "call stack exhausted", id="infinite-recursion"
    ),
    pytest.param("big_output", PluginOutputError, "over its limit of 1048576", id="big-output"),
    pytest.param(
        "http", HostFunctionError, "HTTP request to http://127.0.0.1:9/ is not allowed", id="http"
    ),
]


@pytest.mark.parametrize(("export", "error", "reason"), HOSTILE_CASES)
def test_hostile_plugin_fails_clearly_and_the_next_call_works(
    hostile: Plugin, export: str, error: type[PluginError], reason: str
) -> None:
    started = time.monotonic()
    with pytest.raises(error) as caught:
        hostile.call(export, b"x")
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert reason in message
    assert f'Plug-in "hostile" export "{export}"' in message
    assert caught.value.plugin == "hostile"
    assert caught.value.export == export
    assert "\n" not in message
    # Within its limit: the timeout case stops near 250 ms, the others at once.
    assert elapsed < 5
    assert hostile.call("echo", b"next call") == b"next call"


def test_host_function_exception_fails_the_call_with_the_original_cause(
    hostile_wasm: bytes,
) -> None:
    def broken(context: CallContext, data: bytes) -> bytes:
        raise KeyError("no such light")

    with Plugin("raiser", hostile_wasm, host_functions=[HostFunction("host_echo", broken)]) as p:
        with pytest.raises(HostFunctionError) as caught:
            p.call("call_host", b"x")
        assert isinstance(caught.value.__cause__, KeyError)
        assert caught.value.function == "host_echo"
        assert 'host function "host_echo" raised KeyError' in str(caught.value)
        assert p.call("echo", b"next") == b"next"


def test_host_function_sees_its_call_context(hostile_wasm: bytes) -> None:
    seen: list[tuple[str, str, object]] = []

    def record(context: CallContext, data: bytes) -> bytes:
        seen.append((context.plugin, context.export, context.extra.get("caller")))
        return data.upper()

    with Plugin("ctx", hostile_wasm, host_functions=[HostFunction("host_echo", record)]) as p:
        assert p.call("call_host", b"abc", caller="test") == b"ABC"
    assert seen == [("ctx", "call_host", "test")]


def test_host_call_limit(hostile_wasm: bytes) -> None:
    with Plugin(
        "chatty",
        hostile_wasm,
        limits=Limits(max_host_calls=5),
        host_functions=[echo_host_function()],
    ) as plugin:
        with pytest.raises(HostCallLimitError, match="more than 5 host-function calls"):
            plugin.call("call_host_forever", b"x")
        assert plugin.call("call_host", b"one call") == b"one call"


def test_input_over_the_limit_is_refused_before_running(hostile_wasm: bytes) -> None:
    with Plugin(
        "small",
        hostile_wasm,
        limits=Limits(max_input_bytes=10),
        host_functions=[echo_host_function()],
    ) as plugin:
        with pytest.raises(PluginInputError, match="11 bytes, over its limit of 10"):
            plugin.call("echo", b"x" * 11)
        assert plugin.call("echo", b"x" * 10) == b"x" * 10


def test_export_reported_error(hostile: Plugin) -> None:
    with pytest.raises(PluginCallError, match=r"failed: the plug-in refuses this input$"):
        hostile.call("fail")
    assert hostile.call("echo", b"ok") == b"ok"


def test_missing_export_names_the_ones_that_exist(hostile: Plugin) -> None:
    with pytest.raises(PluginExportError, match=r'no export "nope" \(exports: .*echo'):
        hostile.call("nope")


def test_config_reaches_the_plugin(hostile: Plugin) -> None:
    assert hostile.call("config") == b"hi there"


def test_non_string_config_is_passed_as_json(hostile_wasm: bytes) -> None:
    with Plugin(
        "cfg", hostile_wasm, config={"greeting": {"a": 1}}, host_functions=[echo_host_function()]
    ) as plugin:
        assert plugin.call("config") == b'{"a": 1}'


def test_plugin_logs_go_to_python_logging(
    hostile: Plugin, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="hostwire.plugin.hostile"):
        hostile.call("log", b"careful now")
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert ("hostwire.plugin.hostile", logging.INFO, "hello from the plug-in") in records
    assert ("hostwire.plugin.hostile", logging.WARNING, "careful now") in records


def test_unknown_host_function_import_fails_at_load(hostile_wasm: bytes) -> None:
    with pytest.raises(
        PluginLoadError, match=r'imports host function "host_echo".*available: none'
    ):
        Plugin("needy", hostile_wasm)


def test_invalid_module_fails_at_load() -> None:
    with pytest.raises(PluginLoadError, match="not a valid WebAssembly module"):
        Plugin("junk", b"\0asm\x07\0\0\0garbage")


def test_host_functions_are_never_registered_process_wide(hostile_wasm: bytes) -> None:
    import extism

    before = len(extism.extism.HOST_FN_REGISTRY)
    with Plugin("p", hostile_wasm, host_functions=[echo_host_function()]) as plugin:
        plugin.call("call_host", b"x")
    assert len(extism.extism.HOST_FN_REGISTRY) == before


def test_wasi_plugin_sees_no_environment_and_no_directories() -> None:
    with Plugin("wasi", compile_wat(wat.WASI_PROBE)) as plugin:
        assert plugin.info.uses_wasi
        assert plugin.call("probe") == b"00"


def test_reentrant_call_takes_another_instance(hostile_wasm: bytes) -> None:
    holder: list[Plugin] = []

    def reenter(context: CallContext, data: bytes) -> bytes:
        return holder[0].call("echo", b"inner:" + data)

    with Plugin("re", hostile_wasm, host_functions=[HostFunction("host_echo", reenter)]) as p:
        holder.append(p)
        assert p.call("call_host", b"x") == b"inner:x"


def test_busy_plugin_refuses_rather_than_deadlocks(hostile_wasm: bytes) -> None:
    holder: list[Plugin] = []

    def reenter(context: CallContext, data: bytes) -> bytes:
        return holder[0].call("call_host", data)

    with Plugin(
        "busy",
        hostile_wasm,
        limits=Limits(max_instances=3),
        host_functions=[HostFunction("host_echo", reenter)],
    ) as p:
        holder.append(p)
        with pytest.raises(HostFunctionError) as caught:
            p.call("call_host", b"x")
        chain: list[BaseException] = []
        link: BaseException | None = caught.value
        while link is not None:
            chain.append(link)
            link = link.__cause__
        busy = [e for e in chain if isinstance(e, PluginBusyError)]
        assert busy, [f"{type(e).__name__}: {e}" for e in chain]
        inner = busy[0]
        assert "limit max_instances" in str(inner)
        assert p.call("echo", b"ok") == b"ok"


def test_close_is_idempotent_and_final(hostile_wasm: bytes) -> None:
    plugin = Plugin("closing", hostile_wasm, host_functions=[echo_host_function()])
    plugin.close()
    plugin.close()
    with pytest.raises(PluginError, match="is closed"):
        plugin.call("echo", b"x")


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="memory_mib must be at least 2"):
        Limits(memory_mib=1)
    with pytest.raises(ValueError, match="timeout_ms must be at least 1"):
        Limits(timeout_ms=0)
    assert Limits(memory_mib=16).max_pages == 256


def test_wasi_plugin_sees_a_directory_only_when_granted(tmp_path: Path) -> None:
    with Plugin(
        "wasi", compile_wat(wat.WASI_PROBE), allowed_paths={str(tmp_path): "/data"}
    ) as plugin:
        assert plugin.call("probe") == b"01"


def test_host_function_failures_never_disturb_later_calls() -> None:
    """A failed host call once cancelled the instance through Extism's shared
    epoch; a late cancel then interrupted a later call (about 1 in 5,000)."""

    def flaky(context: CallContext, data: bytes) -> bytes:
        if data == b"bad":
            raise RuntimeError("boom")
        return b"ok"

    wasm = compile_wat(wat.caller("flaky"))
    with Plugin("p", wasm, host_functions=[HostFunction("flaky", flaky)]) as plugin:
        for _ in range(5000):
            with pytest.raises(HostFunctionError):
                plugin.call("call_flaky", b"bad")
            assert plugin.call("call_flaky", b"good") == b"ok"
