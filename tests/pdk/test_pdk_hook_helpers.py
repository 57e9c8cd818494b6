"""Base64 decoding and case-insensitive header lookup in the C and AssemblyScript PDKs.

Each language builds the same plug-in from openapi/light.yaml: an
http_pre_hook that answers "/echo" with the decoded request body reversed and
the X-Api-Key header (looked up in another case) as "x-key"; an http_post_hook
that does the same with the app's response; and an export "unbase64" that
decodes its string input, failing with the PDK's reason when it is not base64.
"""

from __future__ import annotations

import base64
import logging
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from c_build import build
from conftest import ROOT
from hostwire import PluginError
from hostwire._pdk.generate import generate
from hostwire.testing import PluginHarness

LIGHT_SPEC = ROOT / "openapi" / "light.yaml"
ASC = ROOT / "node_modules" / ".bin" / "asc"

C_PLUGIN = r"""
#include "hostwire.h"

/* The bytes of s, last first. */
static hw_str reversed(hw_str s) {
    char *out = (char *)hw_alloc(s.len + 1);
    for (size_t i = 0; i < s.len; i++) out[i] = s.ptr[s.len - 1 - i];
    return (hw_str){out, s.len};
}

static int pre_hook(const HttpPreHookInput *input, HttpPreHookOutput *output) {
    if (!hw_str_eq_c(input->request->path, "/echo")) return 0;
    hw_str body = hw_request_body(input->request);
    if (body.ptr == NULL) return hw_fail("bad body: %s", hw_error());
    hw_str key = hw_request_header(input->request, "X-Api-Key");
    hw_json *headers = hw_json_object();
    hw_json_set(headers, "x-key", hw_json_string(key.ptr != NULL ? key : HW_STR("none")));
    hw_json_set(headers, "x-absent",
                hw_json_string(hw_request_header(input->request, "X-Absent").ptr == NULL
                                   ? HW_STR("yes") : HW_STR("no")));
    hw_respond(output, 200, headers, reversed(body));
    return 0;
}
HW_ON_HTTP_PRE_HOOK(pre_hook)

static int post_hook(const HttpPostHookInput *input, HttpPostHookOutput *output) {
    hw_str body = hw_response_body(input->response);
    if (body.ptr == NULL) return hw_fail("bad body: %s", hw_error());
    hw_str type = hw_response_header(input->response, "CONTENT-TYPE");
    output->response = hw_new(HttpResponse);
    output->response->status_code = input->response->status_code;
    output->response->headers = hw_json_object();
    hw_json_set(output->response->headers, "x-type",
                hw_json_string(type.ptr != NULL ? type : HW_STR("none")));
    hw_str text = reversed(body);
    output->response->body = hw_base64(text.ptr, text.len);
    return 0;
}
HW_ON_HTTP_POST_HOOK(post_hook)

HW_EXPORT(unbase64) {
    const hw_json *text = hw_json_parse(hw_input());
    if (text == NULL || text->kind != HW_JSON_STRING) return hw_fail("give a string");
    hw_str bytes = hw_unbase64(text->string);
    if (bytes.ptr == NULL) return hw_fail("%s", hw_error());
    hw_json *answer = hw_json_object();
    hw_json_set(answer, "base64", hw_json_string(hw_base64(bytes.ptr, bytes.len)));
    hw_output_json(answer);
    return 0;
}

HW_EXPORT(lookup) {
    const hw_json *input = hw_json_parse(hw_input());
    if (input == NULL) return hw_fail("give JSON");
    hw_str name = hw_json_get(input, "name")->string;
    hw_str value = hw_header(hw_json_get(input, "headers"), name.ptr);
    hw_output_json(value.ptr != NULL ? hw_json_string(value) : hw_json_null());
    return 0;
}
"""

AS_PLUGIN = r"""
import {
  HttpPostHookInput,
  HttpPostHookOutput,
  HttpPreHookInput,
  HttpPreHookOutput,
  HttpResponse,
  JsonValue,
  base64,
  fail,
  fromBase64,
  header,
  inputString,
  lastJsonError,
  onHttpPostHook,
  onHttpPreHook,
  outputString,
  requestBody,
  requestHeader,
  respond,
  responseBody,
  responseHeader,
} from "../pdk/index";

// The bytes of b, last first.
function reversed(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) out[i] = b[b.length - 1 - i];
  return out;
}

function preHook(input: HttpPreHookInput): HttpPreHookOutput {
  const output = new HttpPreHookOutput();
  output.context = input.context;
  if (input.request.path != "/echo") return output;
  const body = requestBody(input.request);
  if (body === null) {
    fail("bad body: " + lastJsonError());
    return output;
  }
  const key = requestHeader(input.request, "X-Api-Key");
  const headers = JsonValue.newObject();
  headers.setString("x-key", key !== null ? key : "none");
  headers.setString("x-absent", requestHeader(input.request, "X-Absent") === null ? "yes" : "no");
  return respond(input.context, 200, headers, reversed(body));
}

export function http_pre_hook(): i32 {
  return onHttpPreHook(preHook);
}

function postHook(input: HttpPostHookInput): HttpPostHookOutput {
  const output = new HttpPostHookOutput();
  output.context = input.context;
  const body = responseBody(input.response);
  if (body === null) {
    fail("bad body: " + lastJsonError());
    return output;
  }
  const type = responseHeader(input.response, "CONTENT-TYPE");
  const response = new HttpResponse();
  response.statusCode = input.response.statusCode;
  response.headers = JsonValue.newObject().setString("x-type", type !== null ? type : "none");
  response.body = base64(reversed(body));
  output.response = response;
  return output;
}

export function http_post_hook(): i32 {
  return onHttpPostHook(postHook);
}

export function unbase64(): i32 {
  const text = JsonValue.parse(inputString());
  if (text === null || !text.isString) return fail("give a string");
  const bytes = fromBase64(text.asString());
  if (bytes === null) return fail(lastJsonError());
  outputString(JsonValue.newObject().setString("base64", base64(bytes)).toJson());
  return 0;
}

export function lookup(): i32 {
  const input = JsonValue.parse(inputString());
  if (input === null) return fail("give JSON");
  const value = header(input.get("headers")!, input.getString("name")!);
  outputString(value !== null ? JsonValue.ofString(value).toJson() : "null");
  return 0;
}
"""


AS_README_IMPORTS = """import {
  HttpPreHookInput,
  HttpPreHookOutput,
  fail,
  lastJsonError,
  logInfo,
  onHttpPreHook,
  requestBody,
  requestHeader,
  respond,
} from "../pdk/index";

"""


def _build_c(folder: Path) -> Path:
    generate(LIGHT_SPEC, "c", folder / "pdk")
    return build(folder / "pdk", C_PLUGIN, folder / "plugin.wasm")


def _build_assemblyscript(folder: Path, source: str = AS_PLUGIN) -> Path:
    """As tests/pdk/test_pdk_assemblyscript.py builds (the scaffold's build script)."""
    if not ASC.exists():
        pytest.fail(f"{ASC} is missing: run `make plugins` (it installs the npm toolchain).")
    generate(LIGHT_SPEC, "assemblyscript", folder / "pdk")
    if not source:  # the hooks example of the PDK's README
        readme = (folder / "pdk" / "README.md").read_text(encoding="utf-8")
        example = re.search(r"```ts\n(function checkKey.*?)```", readme, re.S)
        assert example is not None, "the README has no example of the hook helpers"
        source = AS_README_IMPORTS + example.group(1)
    (folder / "assembly").mkdir()
    (folder / "assembly" / "index.ts").write_text(source, encoding="utf-8")
    abort = "abort=pdk/plugin/abortPlugin"
    command = [str(ASC), "assembly/index.ts", "-O3", "--runtime", "incremental",
               "--use", abort, "--outFile", "build/plugin.wasm"]  # fmt: skip
    result = subprocess.run(
        command, cwd=folder, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"asc failed:\n{result.stderr}"
    assert "WARNING" not in result.stderr, f"asc warned:\n{result.stderr}"
    return folder / "build" / "plugin.wasm"


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "c": _build_c,
    "assemblyscript": _build_assemblyscript,
}
# What each PDK says when text is not base64: (wrong length, wrong character at index).
REASONS = {
    "c": ("not base64: the length is wrong", "not base64: unexpected character at byte {}"),
    "assemblyscript": ("not base64: the length is wrong", "not base64: unexpected character at {}"),
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def plugin(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    language: str = request.param
    return language, BUILDERS[language](tmp_path_factory.mktemp(f"helpers-{language}"))


@pytest.fixture
def harness(plugin: tuple[str, Path]) -> Iterator[PluginHarness]:
    with PluginHarness(plugin[1], spec=LIGHT_SPEC) as h:
        yield h


BODIES = [b"", b"a", b"ab", b"abc", b"abcd", bytes(range(256)), "héllo ✓".encode()]


@pytest.mark.parametrize("body", BODIES)
def test_request_bodies_decode_and_headers_match_whatever_their_case(
    harness: PluginHarness, body: bytes
) -> None:
    result = harness.request("POST", "/echo", headers={"X-API-KEY": "k1"}, body=body)
    assert result.response is not None
    assert result.response.status == 200
    assert result.response.body == body[::-1]
    assert result.response.headers["x-key"] == "k1"
    assert result.response.headers["x-absent"] == "yes"
    plain = harness.request("POST", "/echo", body=body)
    assert plain.response is not None
    assert plain.response.body == body[::-1]
    assert plain.response.headers["x-key"] == "none"
    assert harness.request("GET", "/lights").passed


@pytest.mark.parametrize("body", BODIES)
def test_response_bodies_decode_and_headers_match_whatever_their_case(
    harness: PluginHarness, body: bytes
) -> None:
    request = {"method": "GET", "path": "/x", "headers": {}, "query": {}, "body": ""}
    response = {
        "status_code": 201,
        "headers": {"Content-Type": "text/plain"},
        "body": base64.b64encode(body).decode(),
    }
    answer = harness.call(
        "http_post_hook", {"context": {}, "request": request, "response": response}
    )
    assert answer["response"]["status_code"] == 201
    assert answer["response"]["headers"] == {"x-type": "text/plain"}
    assert base64.b64decode(answer["response"]["body"]) == body[::-1]


def test_a_body_that_is_not_base64_fails_the_hook(
    plugin: tuple[str, Path], harness: PluginHarness
) -> None:
    request = {"method": "POST", "path": "/echo", "headers": {}, "query": {}, "body": "QU*D"}
    with pytest.raises(PluginError, match=re.escape("bad body: not base64")):
        harness.call("http_pre_hook", {"context": {}, "request": request})


@pytest.mark.parametrize(
    ("text", "decoded"),
    [("", b""), ("QQ", b"A"), ("QQ==", b"A"), ("QUI", b"AB"), ("QUI=", b"AB"), ("QUJD", b"ABC"),
     ("/+/+", b"\xff\xef\xfe"), ("AAAA", b"\0\0\0")],
)  # fmt: skip
def test_base64_with_or_without_padding_decodes(
    harness: PluginHarness, text: str, decoded: bytes
) -> None:
    assert base64.b64decode(harness.call("unbase64", text)["base64"]) == decoded


@pytest.mark.parametrize(
    ("text", "length", "at"),
    [("Q", True, 0), ("QUJDR", True, 0), ("QQ===", True, 0), ("QUJD=", True, 0), ("Q===", False, 1),
     ("QU*D", False, 2), ("QU D", False, 2), ("QQ=A", False, 2), ("QUJ\n", False, 3),
     ("QUé", False, 2), ("-_-_", False, 0)],
)  # fmt: skip
def test_text_that_is_not_base64_is_refused_naming_why(
    plugin: tuple[str, Path], harness: PluginHarness, text: str, length: bool, at: int
) -> None:
    wrong_length, wrong_character = REASONS[plugin[0]]
    reason = wrong_length if length else wrong_character.format(at)
    with pytest.raises(PluginError, match=re.escape(reason)):
        harness.call("unbase64", text)


@pytest.mark.parametrize(
    ("headers", "name", "value"),
    [
        ({"x-api-key": "k"}, "X-Api-Key", "k"),
        ({"X-API-KEY": "k"}, "x-api-key", "k"),
        ({"Accept": "a", "accept": "b"}, "ACCEPT", "a"),  # the first match wins
        ({"x-api-key": "k"}, "x-api-ke", None),
        ({"x-api-key": "k"}, "x-api-keys", None),
        ({"x-api-key": 1}, "x-api-key", None),  # not a string
        ({"é": "k"}, "É", None),  # only ASCII folds
        ({}, "x", None),
        ([], "x", None),
    ],
)
def test_header_lookup_ignores_ascii_case_only(
    harness: PluginHarness, headers: object, name: str, value: str | None
) -> None:
    assert harness.call("lookup", {"headers": headers, "name": name}) == value


def test_the_assemblyscript_readme_example_builds_and_checks_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hostwire.plugin")
    wasm = _build_assemblyscript(tmp_path, "")
    with PluginHarness(wasm, spec=LIGHT_SPEC) as h:
        refused = h.request("POST", "/lights", body=b"{}")
        assert refused.response is not None
        assert (refused.response.status, refused.response.body) == (401, b"no key")
        assert h.request("POST", "/lights", headers={"X-API-KEY": "k"}, body=b"{}").passed
        assert "2 bytes for key k" in caplog.text
