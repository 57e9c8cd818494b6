"""gateway.yaml: strict keys, ${ENV} for secrets, paths relative to the file; one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.kit import SECRET
from hostwire._errors import ConfigError
from hostwire._gateway import load_gateway_config

MINIMAL: dict[str, Any] = {
    "openapi": "billing.yaml",
    "app": {"base_url": "http://127.0.0.1:3000/api/v1"},
    "webhooks": {"secret": SECRET},
}


def write(tmp_path: Path, raw: Any) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_defaults_and_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_gateway_config(write(tmp_path, MINIMAL))

    assert config.openapi_source() == tmp_path / "billing.yaml"
    assert config.database_url() == f"sqlite:///{tmp_path / 'gateway.db'}"
    assert (config.listen.host, config.listen.port, config.proxy) == ("127.0.0.1", 8600, False)
    assert (config.webhooks.path, config.webhooks.event_type) == ("/webhooks", "/type")


@pytest.mark.parametrize(
    ("database", "url"),
    [
        pytest.param("sqlite:///data/events.db", "sqlite:///{dir}/data/events.db", id="relative"),
        pytest.param("sqlite:////var/x.db", "sqlite:////var/x.db", id="absolute"),
        pytest.param("postgresql://u@db/app", "postgresql://u@db/app", id="postgresql"),
        pytest.param("events.db", "sqlite:///{dir}/events.db", id="file"),
    ],
)
def test_the_database_is_a_url_or_a_file_beside_the_config(
    tmp_path: Path, database: str, url: str
) -> None:
    config = load_gateway_config(write(tmp_path, {**MINIMAL, "database": database}))
    assert config.database_url() == url.format(dir=tmp_path)


def test_environment_variables_fill_in_secrets(tmp_path: Path) -> None:
    raw = {
        **MINIMAL,
        "app": {**MINIMAL["app"], "headers": {"Authorization": "Bearer ${KEY}", "X": "$${KEY}"}},
        "webhooks": {"secret": "${SECRET}"},
    }
    config = load_gateway_config(write(tmp_path, raw), environ={"KEY": "k1", "SECRET": SECRET})
    assert config.app.headers == {"Authorization": "Bearer k1", "X": "${KEY}"}
    assert config.webhooks.secret == SECRET


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(
            {**MINIMAL, "webhook": {}},
            'gateway.yaml: webhook: unknown key (did you mean "webhooks"?).',
            id="unknown-top-level-key",
        ),
        pytest.param(
            {**MINIMAL, "app": {"base_ur": "http://x"}},
            'gateway.yaml: app.base_ur: unknown key (did you mean "base_url"?)',
            id="unknown-nested-key",
        ),
        pytest.param(
            {**MINIMAL, "webhooks": {"secret": "${WEBHOOK_SECRET}"}},
            "gateway.yaml: webhooks.secret: the environment variable WEBHOOK_SECRET is not set.",
            id="missing-env-var",
        ),
        pytest.param(
            {**MINIMAL, "webhooks": {"secret": "whsec_!!"}},
            "gateway.yaml: webhooks.secret: is not a usable Standard Webhooks secret",
            id="bad-secret",
        ),
        pytest.param(
            {k: v for k, v in MINIMAL.items() if k != "webhooks"},
            "gateway.yaml: webhooks: is required.",
            id="missing-section",
        ),
        pytest.param(
            {**MINIMAL, "plugins": [{"name": "p", "path": "p.wasm", "limitz": {}}]},
            'gateway.yaml: plugin "p" (plugins[0]): limitz: unknown key (did you mean "limits"?)',
            id="plugin-key",
        ),
        pytest.param(
            {**MINIMAL, "app": {"base_url": "ftp://x"}},
            "gateway.yaml: app.base_url: must be http(s)://host[:port][/prefix]",
            id="bad-base-url",
        ),
        *(
            pytest.param(
                {**MINIMAL, "webhooks": {"secret": SECRET, "path": path}},
                "gateway.yaml: webhooks.path: must be a path such as /webhooks, outside /api, "
                "/healthz, /metrics and /hostwire",
                id=f"webhooks-at-{path.strip('/').replace('/', '-')}",
            )
            for path in ("/metrics", "/hostwire/in", "/api", "/healthz")
        ),
    ],
)
def test_a_wrong_file_is_one_line_naming_the_key(tmp_path: Path, raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(write(tmp_path, raw), environ={})
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(str(tmp_path / "gateway.yaml").removesuffix("gateway.yaml"))
    assert message in text


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"gateway.yaml: no such gateway configuration file\.$"):
        load_gateway_config(tmp_path / "gateway.yaml")
