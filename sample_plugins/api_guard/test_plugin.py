"""The api_guard sample plug-in (Rust, an http_pre_hook), run with the harness."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hostwire.testing import PluginHarness

WASM = Path(__file__).parent / "build" / "plugin.wasm"
SPEC = Path(__file__).parents[2] / "openapi" / "light.yaml"
KEYS = "alice:s3cret-a, s3cret-bare, bob:s3cret-b"
CONTEXT = {"trace": "t-1"}


@pytest.fixture(scope="module")
def wasm() -> Path:
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: run the tests with `make test`, which builds it.")
    return WASM


@contextmanager
def fresh_guard(wasm: Path, **config: object) -> Iterator[PluginHarness]:
    """A plug-in of its own, for tests that count requests."""
    with PluginHarness(wasm, spec=SPEC, config={"api_keys": KEYS, **config}) as harness:
        yield harness


@pytest.fixture(scope="module")
def guard(wasm: Path) -> Iterator[Callable[..., PluginHarness]]:
    """The plug-in with a config, shared by the tests that use it without a rate limit."""
    loaded: dict[str, PluginHarness] = {}

    def load(**config: object) -> PluginHarness:
        settings = {k: v for k, v in {"api_keys": KEYS, **config}.items() if v is not None}
        key = json.dumps(settings, sort_keys=True)
        if key not in loaded:
            loaded[key] = PluginHarness(wasm, spec=SPEC, config=settings)
        return loaded[key]

    yield load
    for harness in loaded.values():
        harness.close()


def pre(
    harness: PluginHarness, path: str = "/lights", headers: dict[str, str] | None = None
) -> Any:
    request = {"method": "GET", "path": path, "headers": headers or {}, "query": {}, "body": ""}
    return harness.call("http_pre_hook", {"context": CONTEXT, "request": request})


def refusal(answer: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    """The short-circuit response: status, headers and the decoded JSON body."""
    assert answer["has_response"] is True
    assert answer["context"] == CONTEXT
    response = answer["response"]
    return (
        response["status_code"],
        response["headers"],
        json.loads(base64.b64decode(response["body"])),
    )


def test_a_known_key_passes_and_names_itself_in_the_context(
    guard: Callable[..., PluginHarness],
) -> None:
    harness = guard()
    answer = pre(harness, headers={"X-API-Key": "s3cret-a"})
    assert answer == {"context": {"trace": "t-1", "guard": "ok", "guard_key": "alice"}}
    assert "s3cret" not in json.dumps(answer)


def test_a_key_without_a_name_is_named_by_its_place(guard: Callable[..., PluginHarness]) -> None:
    harness = guard()
    answer = pre(harness, headers={"x-api-key": " s3cret-bare "})
    assert answer["context"]["guard_key"] == "key2"


@pytest.mark.parametrize(
    ("config", "header"),
    [
        pytest.param({}, "X-API-Key", id="as-configured"),
        pytest.param({}, "x-api-key", id="lower-case"),
        pytest.param({}, "X-API-KEY", id="upper-case"),
        pytest.param({"header": "X-Token"}, "x-token", id="custom-header-lower"),
        pytest.param({"header": "x-token"}, "X-Token", id="custom-config-lower"),
    ],
)
def test_the_header_name_matches_in_any_casing(
    guard: Callable[..., PluginHarness], config: dict[str, str], header: str
) -> None:
    harness = guard(**config)
    answer = pre(harness, headers={"accept": "*/*", header: "s3cret-b"})
    assert answer["context"]["guard_key"] == "bob"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        pytest.param({}, "Missing API key: send one in the X-API-Key header.", id="none"),
        pytest.param({"x-api-key": "  "}, "Missing API key", id="blank"),
        pytest.param({"authorization": "s3cret-a"}, "Missing API key", id="other-header"),
        pytest.param(
            {"x-api-key": "s3cret-c"}, "Unknown API key in the X-API-Key header.", id="unknown"
        ),
        pytest.param({"x-api-key": "alice"}, "Unknown API key", id="a-name-is-not-a-key"),
        pytest.param({"x-api-key": "s3cret-a, s3cret-b"}, "Unknown API key", id="repeated"),
    ],
)
def test_without_a_known_key_the_request_is_answered_401(
    guard: Callable[..., PluginHarness], headers: dict[str, str], message: str
) -> None:
    harness = guard()
    status, response_headers, body = refusal(pre(harness, headers=headers))
    assert status == 401
    assert response_headers == {"content-type": "application/json", "www-authenticate": "ApiKey"}
    assert body["error"]["code"] == "unauthorized"
    assert body["error"]["message"].startswith(message)


@pytest.mark.parametrize(
    "path",
    [
        "/openapi.json",
        "/openapi.yaml",
        "/.well-known/ai-plugin.json",
        "/logo.png",
        "/legal",
        "/legal/terms",
    ],
)
def test_public_paths_need_no_key(guard: Callable[..., PluginHarness], path: str) -> None:
    harness = guard()
    assert pre(harness, path) == {"context": CONTEXT}


@pytest.mark.parametrize(
    "path",
    ["/lights", "/legalese", "/.well-known", "/legal/../lights", "/legal/./x", "//legal", "/"],
)
def test_other_paths_need_a_key(guard: Callable[..., PluginHarness], path: str) -> None:
    harness = guard()
    status, _, _ = refusal(pre(harness, path))
    assert status == 401


def test_public_prefixes_can_be_configured(guard: Callable[..., PluginHarness]) -> None:
    harness = guard(public_prefixes="/status, /docs/")
    assert pre(harness, "/status") == {"context": CONTEXT}
    assert pre(harness, "/docs/index.html") == {"context": CONTEXT}
    assert refusal(pre(harness, "/openapi.json"))[0] == 401
    harness = guard(public_prefixes="none")
    assert refusal(pre(harness, "/openapi.json"))[0] == 401
    assert refusal(pre(harness, "/legal"))[0] == 401


def test_an_empty_setting_means_the_default(guard: Callable[..., PluginHarness]) -> None:
    # Extism hands an empty config value to the plug-in as unset.
    harness = guard(header="", public_prefixes="", rate_limit="")
    assert pre(harness, "/legal") == {"context": CONTEXT}
    answers = [pre(harness, headers={"X-API-Key": "s3cret-a"}) for _ in range(5)]
    assert all(a["context"]["guard"] == "ok" for a in answers)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        pytest.param({"api_keys": None}, 'config "api_keys" is not set', id="no-keys"),
        pytest.param({"api_keys": " , "}, 'config "api_keys" is not set', id="empty-keys"),
        pytest.param(
            {"api_keys": "alice:"}, 'entry 1 ("alice") needs a name and a key', id="no-secret"
        ),
        pytest.param({"api_keys": ":x"}, "entry 1", id="no-name"),
        pytest.param({"header": "X Key"}, 'config "header" must be a header name', id="space"),
        pytest.param(
            {"rate_limit": "lots"},
            'config "rate_limit" must be a whole number of 0 or more, not "lots"',
            id="rate-limit",
        ),
        pytest.param({"rate_limit": -1}, 'config "rate_limit" must be', id="negative"),
        pytest.param({"window_s": 0}, 'config "window_s" must be at least 1', id="window-0"),
        pytest.param(
            {"public_prefixes": "legal"},
            'config "public_prefixes": "legal" does not start with /',
            id="prefix",
        ),
    ],
)
def test_a_bad_config_fails_the_hook_clearly(
    guard: Callable[..., PluginHarness], config: dict[str, object], reason: str
) -> None:
    answer = pre(guard(**config), headers={"x-api-key": "s3cret-a"})
    assert set(answer) == {"context", "error"}
    assert answer["context"] == CONTEXT
    assert answer["error"].startswith("api_guard: ")
    assert reason in answer["error"]


def test_over_the_rate_limit_the_request_is_answered_429(wasm: Path) -> None:
    with fresh_guard(wasm, rate_limit=3, window_s=60) as harness:
        for _ in range(3):
            assert pre(harness, headers={"x-api-key": "s3cret-a"})["context"]["guard"] == "ok"
        status, headers, body = refusal(pre(harness, headers={"x-api-key": "s3cret-a"}))
        assert status == 429
        assert headers["content-type"] == "application/json"
        assert 1 <= int(headers["retry-after"]) <= 60
        assert body["error"]["code"] == "rate_limited"
        assert body["error"]["message"].startswith(
            'Too many requests for API key "alice": at most 3 per 60 s; retry in '
        )
        # Refused requests do not count, and each key has its own window.
        assert refusal(pre(harness, headers={"x-api-key": "s3cret-a"}))[0] == 429
        assert pre(harness, headers={"x-api-key": "s3cret-b"})["context"]["guard_key"] == "bob"
        # A missing key is still a 401, not a 429.
        assert refusal(pre(harness))[0] == 401


def test_the_window_frees_after_window_s(wasm: Path) -> None:
    with fresh_guard(wasm, rate_limit=1, window_s=1) as harness:
        assert pre(harness, headers={"x-api-key": "s3cret-b"})["context"]["guard"] == "ok"
        status, headers, _ = refusal(pre(harness, headers={"x-api-key": "s3cret-b"}))
        assert (status, headers["retry-after"]) == (429, "1")
        time.sleep(1.1)
        assert pre(harness, headers={"x-api-key": "s3cret-b"})["context"]["guard"] == "ok"


def test_without_a_rate_limit_every_request_with_a_key_passes(
    guard: Callable[..., PluginHarness],
) -> None:
    harness = guard()
    answers = [pre(harness, headers={"x-api-key": "s3cret-a"}) for _ in range(50)]
    assert all(a == {"context": {**CONTEXT, "guard": "ok", "guard_key": "alice"}} for a in answers)


def test_the_count_lives_in_the_instance(wasm: Path) -> None:
    """Counters are per plug-in instance: a fresh plug-in starts from zero."""
    for _ in range(2):
        with fresh_guard(wasm, rate_limit=1) as harness:
            assert pre(harness, headers={"x-api-key": "s3cret-a"})["context"]["guard"] == "ok"
            assert refusal(pre(harness, headers={"x-api-key": "s3cret-a"}))[0] == 429
