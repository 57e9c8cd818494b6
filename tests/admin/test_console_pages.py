"""The console's pages: the overview's data and the pages an app adds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from hostwire import Hostwire, StorageError

TOKEN = "pages-admin-token"
SPEC = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def hosted() -> tuple[Starlette, Hostwire, list[dict[str, Any]]]:
    app = Starlette()
    hw = Hostwire(app, spec=SPEC, admin_token=TOKEN)
    shown: list[dict[str, Any]] = [{"id": "a", "note": "<script>alert(1)</script>"}]

    async def rows() -> list[dict[str, Any]]:
        return shown

    hw.console_page("things", "Things", rows)
    return app, hw, shown


def test_an_app_page_is_a_table_escaped_and_polled() -> None:
    app, _, shown = hosted()
    with TestClient(app) as client:
        page = client.get("/hostwire/things", headers=BEARER)
        assert page.status_code == 200
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "<script>alert" not in page.text
        assert 'data-page="things"' in page.text
        overview = client.get("/hostwire/", headers=BEARER)
        assert '<a href="/hostwire/things">Things</a>' in overview.text
        shown.append({"id": "b", "extra": 2})
        data = client.get("/hostwire/api/pages/things", headers=BEARER).json()
        assert data["columns"] == ["id", "note", "extra"]
        assert [r["id"] for r in data["rows"]] == ["a", "b"]
        assert client.get("/hostwire/things").status_code == 401


def test_a_page_added_after_the_first_request_is_served() -> None:
    app, hw, _ = hosted()
    with TestClient(app) as client:
        assert client.get("/hostwire/later", headers=BEARER).status_code == 404

        async def rows() -> list[dict[str, Any]]:
            return []

        hw.console_page("later", "Later", rows)
        assert client.get("/hostwire/later", headers=BEARER).status_code == 200


@pytest.mark.parametrize("name", ["Bad", "", "api", "login", "static", "a/b", "-x"])
def test_bad_page_names_are_refused(name: str) -> None:
    _, hw, _ = hosted()

    async def rows() -> list[dict[str, Any]]:
        return []

    with pytest.raises(ValueError, match="a name is lowercase letters"):
        hw.console_page(name, "x", rows)


def test_a_page_name_once() -> None:
    _, hw, _ = hosted()

    async def rows() -> list[dict[str, Any]]:
        return []

    with pytest.raises(ValueError, match='console page "things" is added already'):
        hw.console_page("things", "again", rows)
    assert [p.name for p in hw.console_pages] == ["things"]


def test_the_overview_filters_deliveries() -> None:
    app, _, _ = hosted()
    with TestClient(app) as client:
        page = client.get("/hostwire/?plugin=x&state=nonsense", headers=BEARER)
        assert page.status_code == 200
        data = client.get("/hostwire/api/overview?state=dead", headers=BEARER).json()
        assert data["deliveries"] == []
        assert data["delivery_counts"] == []


def test_a_database_failure_is_a_503_and_the_console_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Starlette()
    hw = Hostwire(app, spec=SPEC, admin_token=TOKEN, database=tmp_path / "app.db")
    with TestClient(app) as client:
        assert hw.outbox is not None

        def broken(**_: Any) -> list[dict[str, Any]]:
            raise StorageError("the disk is full", kind="disk_full", retry_after_s=7)

        monkeypatch.setattr(hw.outbox, "deliveries", broken)
        answer = client.get("/hostwire/api/overview", headers=BEARER)
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "7"
        assert answer.json()["error"] == {
            "code": "storage_unavailable",
            "message": "the disk is full",
        }
        monkeypatch.undo()
        assert client.get("/hostwire/api/overview", headers=BEARER).json()["deliveries"] == []
