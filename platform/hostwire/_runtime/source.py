"""Where plug-in bytes come from: a local file or an http(s) URL pinned by sha256."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx

from hostwire._errors import PluginIntegrityError, PluginLoadError
from hostwire._runtime.module import to_binary

MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
"""A download larger than this is refused."""
DOWNLOAD_TIMEOUT_S = 30.0
"""A download must be complete within this many seconds, however the server trickles."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_sha256(name: str, data: bytes, expected: str | None, where: str) -> None:
    """Refuse ``data`` unless its sha256 is ``expected`` (when one is given)."""
    if expected is None:
        return
    actual = sha256_hex(data)
    if actual != expected.lower():
        raise PluginIntegrityError(
            f'Plug-in "{name}": {where} has sha256 {actual}, but the configuration '
            f"expects {expected.lower()}; it was not loaded.",
            plugin=name,
            expected=expected.lower(),
            actual=actual,
        )


def read_path(name: str, path: Path, sha256: str | None = None) -> bytes:
    """Read a ``.wasm`` or ``.wat`` file, check its hash, return binary wasm."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise PluginLoadError(
            f'Plug-in "{name}": file {path} does not exist.', plugin=name
        ) from exc
    except OSError as exc:
        raise PluginLoadError(
            f'Plug-in "{name}": cannot read {path}: {exc.strerror}.', plugin=name
        ) from exc
    verify_sha256(name, data, sha256, str(path))
    return _binary(name, data, path.name, str(path))


def fetch_url(
    name: str,
    url: str,
    sha256: str | None,
    *,
    client: httpx.Client | None = None,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
) -> bytes:
    """Download a plug-in, refusing it unless it has the configured sha256.

    The whole download must finish within ``timeout_s`` (httpx's own timeouts
    are per read, so a server sending a byte at a time would hold it forever)
    and be at most ``max_bytes``. The hash is checked on the downloaded bytes
    before anything compiles them.
    """
    if not sha256:
        raise PluginLoadError(
            f'Plug-in "{name}" comes from {url} without a sha256; a URL plug-in must be '
            "pinned with sha256 so that what runs is what was reviewed.",
            plugin=name,
        )
    too_slow = PluginLoadError(
        f'Plug-in "{name}": the download of {url} did not finish within {timeout_s:g} s '
        "(download_timeout_s); it was not loaded.",
        plugin=name,
    )
    deadline = time.monotonic() + timeout_s
    own_client = client is None
    # No single wait may outlast the deadline; the clock is checked after every chunk.
    http = client or httpx.Client(timeout=timeout_s, follow_redirects=True)
    try:
        with http.stream("GET", url) as response:
            if response.status_code != httpx.codes.OK:
                raise PluginLoadError(
                    f'Plug-in "{name}": GET {url} answered {response.status_code}.', plugin=name
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise PluginLoadError(
                        f'Plug-in "{name}": {url} is larger than {max_bytes} bytes.',
                        plugin=name,
                    )
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise too_slow
    except httpx.TimeoutException as exc:
        raise too_slow from exc
    except httpx.HTTPError as exc:
        raise PluginLoadError(f'Plug-in "{name}": cannot fetch {url}: {exc}.', plugin=name) from exc
    finally:
        if own_client:
            http.close()
    data = b"".join(chunks)
    verify_sha256(name, data, sha256, url)
    return _binary(name, data, url.rsplit("/", 1)[-1], url)


def _binary(name: str, data: bytes, filename: str, where: str) -> bytes:
    try:
        return to_binary(data, filename)
    except ValueError as exc:
        raise PluginLoadError(
            f'Plug-in "{name}": {where} is not valid WebAssembly text: {exc}', plugin=name
        ) from exc
