"""Plug-in configuration files (Contract 4)."""

from __future__ import annotations

import json
import logging
import re
import tracemalloc
from pathlib import Path

import pytest

import wat
from hostwire import ConfigError, HostFunction, load_config, parse_config
from hostwire._hooks import hook_input


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_config_loads_and_runs(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "hostile.wat").write_text(wat.HOSTILE)
    path = write(
        tmp_path,
        "hostwire.yaml",
        """
openapi: openapi/light.yaml
plugins:
  - name: night-mode
    path: plugins/hostile.wat
    config: {greeting: "22:00"}
    grants: [getStates, setLightColor]
    limits: {timeout_ms: 250, memory_mib: 16}
  - name: switched-off
    path: plugins/missing.wasm
    enabled: false
""",
    )
    config = load_config(path)
    assert config.openapi == "openapi/light.yaml"
    assert [p.name for p in config.enabled_plugins] == ["night-mode"]
    spec = config.enabled_plugins[0]
    assert spec.grants == ["getStates", "setLightColor"]
    assert spec.limits.to_limits().timeout_ms == 250
    echo = HostFunction("host_echo", lambda context, data: data)
    with spec.load(config.base_dir, [echo]) as plugin:
        assert plugin.call("config") == b"22:00"
        assert plugin.limits.max_pages == 256


def test_bifrost_config_json_loads_as_is(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "hostile.wat").write_text(wat.HOSTILE)
    bifrost = {
        "$schema": "https://www.getbifrost.ai/schema",
        "client": {"drop_excess_requests": False},
        "providers": {"openai": {"keys": []}},
        "config_store": {"enabled": False},
        "plugins": [
            {"enabled": True, "name": "semantic_cache", "config": {"ttl": "5m"}},
            {
                "enabled": True,
                "name": "my-wasm",
                "path": "hostile.wat",
                "config": {"greeting": "from bifrost"},
                "version": 2,
                "placement": "pre_builtin",
                "order": 1,
            },
            {"enabled": False, "name": "disabled", "path": "nope.wasm"},
        ],
    }
    path = write(tmp_path, "config.json", json.dumps(bifrost))
    config = load_config(path)
    with caplog.at_level(logging.WARNING, logger="hostwire.config"):
        enabled = config.enabled_plugins
    assert [p.name for p in enabled] == ["my-wasm"]
    assert 'Skipping plug-in "semantic_cache"' in caplog.text
    echo = HostFunction("host_echo", lambda context, data: data)
    with enabled[0].load(config.base_dir, [echo]) as plugin:
        assert plugin.call("config") == b"from bifrost"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "plugins:\n  - name: a\n    path: a.wasm\n    limits: {timeout_ms: 0}\n",
            r'hostwire.yaml: plugin "a" \(plugins\[0\]\): limits.timeout_ms: '
            r"Input should be greater than or equal to 1",
            id="bad-limit",
        ),
        pytest.param(
            "plugins:\n  - name: a\n    path: a.wasm\n    limts: {}\n",
            r'plugin "a" \(plugins\[0\]\): limts: unknown key \(did you mean "limits"\?\)',
            id="typo",
        ),
        pytest.param(
            "plugins:\n  - name: a\n    url: https://example.invalid/a.wasm\n",
            r'plugin "a" \(plugins\[0\]\): a url plug-in needs sha256',
            id="url-without-sha256",
        ),
        pytest.param(
            "plugins:\n  - name: a\n    url: https://example.invalid/a.wasm\n    sha256: xyz\n",
            r'plugin "a" \(plugins\[0\]\): sha256: String should match pattern',
            id="bad-sha256",
        ),
        pytest.param(
            "plugins:\n  - name: a\n    path: a.wasm\n  - name: a\n    path: b.wasm\n",
            r'hostwire.yaml: two plug-ins are named "a"',
            id="duplicate-names",
        ),
        pytest.param(
            "plugins:\n  - path: a.wasm\n",
            r"plugins\[0\]: name: Field required",
            id="missing-name",
        ),
        pytest.param(
            "plugins: [\n",
            r"hostwire.yaml: invalid YAML at line 2, column 1",
            id="malformed-yaml",
        ),
        pytest.param("- just a list\n", r"the top level must be a mapping", id="not-a-mapping"),
    ],
)
def test_invalid_configs_name_file_plugin_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, "hostwire.yaml", text)
    with pytest.raises(ConfigError, match=expected) as caught:
        load_config(path)
    assert "\n" not in str(caught.value)


def test_malformed_json(tmp_path: Path) -> None:
    path = write(tmp_path, "config.json", '{"plugins": [}')
    with pytest.raises(ConfigError, match=r"config.json: invalid JSON at line 1, column 14"):
        load_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.yaml")


def _billion_laughs() -> str:
    # Nine levels of ten aliases each: 10**9 strings once expanded (over 3 GB as JSON).
    lines = ["plugins:", "  - name: bomb", "    path: bomb.wat", "    config:"]
    lines.append('      l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]')
    for level in range(1, 10):
        aliases = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"      l{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_without_expanding_it(tmp_path: Path) -> None:
    path = write(tmp_path, "hostwire.yaml", _billion_laughs())
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert message.startswith(f"{path}: at line ")
    assert "expands to more than 500000 values once its aliases are expanded" in message
    assert "\n" not in message
    assert peak < 32 * 1024 * 1024


def test_plugin_config_over_1_mib_once_expanded_is_refused(tmp_path: Path) -> None:
    # 64 KiB aliased 20 times: few values, but 1.3 MB of JSON handed to the plug-in.
    blob = "x" * 65536
    uses = ", ".join(["*blob"] * 20)
    text = (
        "plugins:\n  - name: big\n    path: big.wat\n    config:\n"
        f"      blob: &blob {blob}\n      copies: [{uses}]\n"
    )
    path = write(tmp_path, "hostwire.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f'{path}: plugin "big" (plugins[0]): config: copies expands to more than 1 MiB '
        "(1048576 bytes) as JSON (each use of a YAML alias counts)"
    )


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        pytest.param(
            "hostwire.yaml",
            "plugins:\n  - name: a\n    path: a.wat\n    config: &loop {again: *loop}\n",
            "at line 4, column 27: alias *loop refers to a value that contains it "
            "(a recursive alias)",
            id="recursive-alias",
        ),
        pytest.param(
            "hostwire.yaml",
            "plugins: [{name: a, path: a.wat, config: {deep: " + "[" * 10000 + "]" * 10000 + "}}]",
            "at line 1, column 109: values are nested more than 64 levels deep",
            id="deep-yaml",
        ),
        pytest.param(
            "config.json",
            '{"plugins": [{"name": "a", "path": "a.wat", "config": {"deep": '
            + "[" * 10000
            + "]" * 10000
            + "}}]}",
            ": values are nested more than 64 levels deep",
            id="deep-json",
        ),
        pytest.param(
            "config.json",
            '{"plugins": [{"name": "a", "path": "a.wat", "config": {"deep": '
            + "[" * 100
            + "]" * 100
            + "}}]}",
            ": plugins[0].config.deep[0][0][0][0]... is nested more than 64 levels deep.",
            id="json-deeper-than-64",
        ),
    ],
)
def test_recursive_and_deep_values_are_one_line_errors(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    assert expected in message
    assert "\n" not in message


def test_a_file_over_4_mib_is_refused_unread(tmp_path: Path) -> None:
    path = write(tmp_path, "hostwire.yaml", "plugins: []\n" + "#" * (4 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match=r"the file is larger than 4 MiB \(4194304 bytes\)"):
        load_config(path)


def test_a_yaml_date_in_a_plugin_config_must_be_quoted(tmp_path: Path) -> None:
    path = write(
        tmp_path, "hostwire.yaml", "plugins:\n  - {name: a, path: a.wat, config: {d: 2024-01-31}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f'{path}: plugin "a" (plugins[0]): config: d is a date value, which JSON cannot carry; '
        "quote it"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "plugin:\n  - name: a\n    path: a.wat\n",
            'unknown top-level key "plugin" (did you mean "plugins"?).',
            id="plugin-for-plugins",
        ),
        pytest.param(
            "openapi: x.yaml\nplugins: []\nsettings: {}\n",
            'unknown top-level key "settings"; the keys are admin, events, openapi, plugins.',
            id="no-close-key",
        ),
        pytest.param(
            "plugins: []\nevents: {max_attempt: 3}\n",
            'events.max_attempt: unknown key (did you mean "max_attempts"?)',
            id="events-typo",
        ),
        pytest.param(
            "plugins:\n  - name: a\n    url: https://example.invalid/a.wasm\n    sha256: "
            + "1" * 64
            + "\n",
            'plugin "a" (plugins[0]): sha256: must be a string of 64 hex digits, but YAML read '
            'these digits as a number; quote it (sha256: "...")',
            id="sha256-read-as-a-number",
        ),
    ],
)
def test_strict_keys_and_types(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "hostwire.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}")
    assert expected in str(caught.value)


def test_bifrost_sections_are_accepted_without_its_schema_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.json",
        json.dumps({"client": {}, "providers": {}, "governance": {}, "plugins": []}),
    )
    assert load_config(path).plugins == []


def test_a_file_with_bifrosts_schema_ignores_all_its_sections(tmp_path: Path) -> None:
    bifrost = {"$schema": "https://www.getbifrost.ai/schema", "new_section": {}, "plugins": []}
    path = write(tmp_path, "config.json", json.dumps(bifrost))
    assert load_config(path).plugins == []


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param(
            "path: missing.wasm",
            r'plugin "a" \(plugins\[0\]\): path: file .*missing.wasm does not exist\.',
            id="missing-file",
        ),
        pytest.param(
            "path: a.wat\n    sha256: " + "a" * 64,
            r'plugin "a" \(plugins\[0\]\): path: .*a.wat has sha256 [0-9a-f]{64}, but the '
            r"configuration expects a{64}; it was not loaded\.",
            id="wrong-hash",
        ),
    ],
)
def test_unreadable_plugin_files_are_configuration_errors_naming_the_file(
    tmp_path: Path, entry: str, expected: str
) -> None:
    (tmp_path / "a.wat").write_text(wat.HOSTILE)
    path = write(tmp_path, "hostwire.yaml", f"plugins:\n  - name: a\n    {entry}\n")
    config = load_config(path)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: {expected}$") as caught:
        config.plugins[0].load(config.base_dir)
    assert caught.value.exit_code == 2


def test_a_plugin_that_does_not_compile_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "junk.wasm").write_bytes(b"\0asm\x01\0\0\0\xff\xff")
    path = write(tmp_path, "hostwire.yaml", "plugins:\n  - name: junk\n    path: junk.wasm\n")
    config = load_config(path)
    with pytest.raises(ConfigError) as caught:
        config.plugins[0].load(config.base_dir)
    assert str(caught.value).startswith(
        f'{path}: plugin "junk" (plugins[0]): is not a valid WebAssembly module: '
    )


def test_parse_config_refuses_a_config_value_that_contains_itself() -> None:
    loop: dict[str, object] = {}
    loop["again"] = loop
    raw = {"plugins": [{"name": "a", "path": "a.wat", "config": {"loop": loop}}]}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, path=Path("app.yaml"))
    assert str(caught.value) == (
        'app.yaml: plugin "a" (plugins[0]): config: loop.again contains itself (a recursive alias)'
    )


def test_hook_input_says_which_bodies_a_plugins_hooks_read(tmp_path: Path) -> None:
    (tmp_path / "hostile.wat").write_text(wat.HOSTILE)
    path = write(
        tmp_path,
        "hostwire.yaml",
        """
plugins:
  - {name: guard, path: hostile.wat, hook_input: {request_body: false, response_body: false}}
  - {name: redactor, path: hostile.wat, hook_input: {request_body: false}}
  - {name: plain, path: hostile.wat}
""",
    )
    config = load_config(path)
    echo = HostFunction("host_echo", lambda context, data: data)
    read = {}
    for entry in config.enabled_plugins:
        with entry.load(config.base_dir, [echo]) as plugin:
            parts = hook_input(plugin)
            read[entry.name] = (parts.request_body, parts.response_body)
    assert read == {
        "guard": (False, False),
        "redactor": (False, True),
        "plain": (True, True),  # by default a plug-in gets everything
    }


def test_hook_input_keys_are_strict(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "hostwire.yaml",
        "plugins:\n  - {name: a, path: a.wat, hook_input: {headers: true}}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert 'plugin "a" (plugins[0]): hook_input.headers: unknown key' in str(caught.value)
