"""Loading plug-in bytes from files and from URLs pinned by sha256."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import wat
from hostwire import (
    ConfigError,
    PluginIntegrityError,
    PluginLoadError,
    fetch_url,
    load_config,
    read_path,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, bytes]]:
    """An HTTP server on 127.0.0.1 serving hostile.wat; yields (base URL, bytes)."""
    root = tmp_path_factory.mktemp("www")
    data = wat.HOSTILE.encode()
    (root / "hostile.wat").write_bytes(data)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", data
    server.shutdown()
    server.server_close()


def test_url_with_the_right_hash_loads(served: tuple[str, bytes]) -> None:
    base, data = served
    wasm = fetch_url("remote", f"{base}/hostile.wat", hashlib.sha256(data).hexdigest())
    assert wasm.startswith(b"\0asm")


def test_url_with_a_wrong_hash_is_refused_naming_both(served: tuple[str, bytes]) -> None:
    base, data = served
    wrong = "0" * 64
    with pytest.raises(PluginIntegrityError) as caught:
        fetch_url("remote", f"{base}/hostile.wat", wrong)
    actual = hashlib.sha256(data).hexdigest()
    assert wrong in str(caught.value)
    assert actual in str(caught.value)
    assert (caught.value.expected, caught.value.actual) == (wrong, actual)


def test_url_without_a_hash_is_refused(served: tuple[str, bytes]) -> None:
    base, _ = served
    with pytest.raises(PluginLoadError, match="without a sha256"):
        fetch_url("remote", f"{base}/hostile.wat", None)


def test_url_not_found(served: tuple[str, bytes]) -> None:
    base, _ = served
    with pytest.raises(PluginLoadError, match="answered 404"):
        fetch_url("remote", f"{base}/missing.wasm", "0" * 64)


def test_unreachable_url() -> None:
    with pytest.raises(PluginLoadError, match=r"cannot fetch http://127\.0\.0\.1:9/x\.wasm"):
        fetch_url("remote", "http://127.0.0.1:9/x.wasm", "0" * 64)


def test_path_wat_and_wasm(tmp_path: Path) -> None:
    text = tmp_path / "p.wat"
    text.write_text(wat.HOSTILE)
    wasm = read_path("p", text)
    binary = tmp_path / "p.wasm"
    binary.write_bytes(wasm)
    assert read_path("p", binary) == wasm


def test_path_missing(tmp_path: Path) -> None:
    with pytest.raises(PluginLoadError, match=r"file .*nope.wasm does not exist"):
        read_path("p", tmp_path / "nope.wasm")


def test_path_with_a_wrong_hash(tmp_path: Path) -> None:
    file = tmp_path / "p.wat"
    file.write_text(wat.HOSTILE)
    with pytest.raises(PluginIntegrityError, match="has sha256"):
        read_path("p", file, "a" * 64)


def test_broken_wat_names_line_and_column(tmp_path: Path) -> None:
    file = tmp_path / "broken.wat"
    file.write_text('(module\n  (func (export "f") (result i32) i32.konst 1))')
    with pytest.raises(PluginLoadError, match=r"not valid WebAssembly text: .*\(line 2, column"):
        read_path("broken", file)


@pytest.fixture
def trickling() -> Iterator[str]:
    """A server on 127.0.0.1 that sends a 1 MB plug-in one byte every 20 ms (bounded)."""
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            for _ in range(1000):  # at most 20 s, ended early by the client or the test
                if stop.wait(0.02):
                    return
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slow.wasm"
    stop.set()
    server.shutdown()
    server.server_close()


def test_a_trickling_download_stops_at_its_deadline(trickling: str) -> None:
    with pytest.raises(PluginLoadError) as caught:
        fetch_url("slow", trickling, "0" * 64, timeout_s=0.3)
    assert str(caught.value) == (
        f'Plug-in "slow": the download of {trickling} did not finish within 0.3 s '
        "(download_timeout_s); it was not loaded."
    )


def test_download_timeout_s_in_the_config_bounds_the_download(
    trickling: str, tmp_path: Path
) -> None:
    path = tmp_path / "hostwire.yaml"
    path.write_text(
        f"plugins:\n  - name: slow\n    url: {trickling}\n    sha256: '{'0' * 64}'\n"
        "    download_timeout_s: 0.3\n"
    )
    config = load_config(path)
    with pytest.raises(ConfigError) as caught:
        config.plugins[0].read(config.base_dir)
    assert str(caught.value) == (
        f'{path}: plugin "slow" (plugins[0]): url: the download of {trickling} did not finish '
        "within 0.3 s (download_timeout_s); it was not loaded."
    )


def test_a_download_over_max_bytes_is_refused(served: tuple[str, bytes]) -> None:
    base, _ = served
    with pytest.raises(PluginLoadError, match=r"hostile\.wat is larger than 100 bytes"):
        fetch_url("remote", f"{base}/hostile.wat", "0" * 64, max_bytes=100)
