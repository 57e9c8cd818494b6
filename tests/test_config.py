"""Plug-in configuration files (Contract 4)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import wat
from hostwire import ConfigError, HostFunction, load_config


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
            r'plugin "a" \(plugins\[0\]\): limts: Extra inputs are not permitted',
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
