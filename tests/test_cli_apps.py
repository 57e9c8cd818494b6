"""The generic command line: ``--app`` names any ASGI app, not only lightcontrol."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostwire.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("app", "message"),
    [
        pytest.param("nosuchmodule_xyz:app", 'no module named "nosuchmodule_xyz"', id="module"),
        pytest.param("tasks.app:nothing", 'module "tasks.app" has no "nothing"', id="attribute"),
        pytest.param("nosuchapp", "no installed app has that name (installed: lightcontrol",
                     id="name"),
        pytest.param("tasks.app:", "write module:attribute", id="empty"),
    ],
)  # fmt: skip
def test_a_wrong_app_is_a_usage_error_saying_what_to_write(
    app: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--app", app]) == 64
    assert message in capsys.readouterr().err


def test_serve_help_documents_app_and_database_urls(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "module:attribute" in text
    assert "postgresql://" in text


def test_an_app_that_wires_hostwire_itself_refuses_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "plugins.yaml"
    config.write_text("plugins: []\n")
    module = tmp_path / "wired_app.py"
    module.write_text(
        "from starlette.applications import Starlette\nimport hostwire\n"
        "app = Starlette()\nhostwire.Hostwire(app, spec={'openapi': '3.1.0', "
        "'info': {'title': 't', 'version': '1'}, 'paths': {}})\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        assert main(["serve", "--app", "wired_app:app", "--config", str(config)]) == 64
    finally:
        sys.path.remove(str(tmp_path))
    assert "sets up hostwire itself" in capsys.readouterr().err


def test_plugin_call_against_another_apps_document_needs_app(
    capsys: pytest.CaptureFixture[str],
) -> None:
    wasm = ROOT / "sample_plugins" / "cycle_color" / "build" / "plugin.wasm"
    spec = ROOT / "tests" / "petstore" / "petstore.yaml"
    code = main(["plugin", "call", str(wasm), "run", "--spec", str(spec), "--grant", "*"])
    assert code == 64
    assert "give --app module:app to run that app in process" in capsys.readouterr().err
