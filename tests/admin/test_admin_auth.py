"""The admin token's protection: Bearer for API clients, a login cookie for
browsers (console paths only), cross-site refusal, off without a token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from conftest import ROOT
from hostwire import ConfigError, Hostwire
from hostwire._admin.app import COOKIE, session_value
from hostwire.cli import main

TOKEN = "s3cret-admin-token-for-tests"
SPEC_FILE = ROOT / "openapi" / "light.yaml"
SPEC = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}}
BEARER = {"Authorization": f"Bearer {TOKEN}"}
HTML = {"Accept": "text/html"}


async def app_route(request: Request) -> JSONResponse:
    return JSONResponse({"app": request.url.path})


def make_app(token: str | None) -> Starlette:
    app = Starlette(
        routes=[
            Route("/", app_route),
            Route("/hostwire/anything", app_route),
            Route("/metrics", app_route),
        ]
    )
    Hostwire(app, spec=SPEC, admin_token=token)
    return app


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.delenv("HOSTWIRE_ADMIN_TOKEN", raising=False)
    with TestClient(make_app(TOKEN), base_url="http://testserver") as c:
        yield c


def log_in(client: TestClient) -> None:
    answer = client.post("/hostwire/login", data={"token": TOKEN}, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/hostwire/"


def test_off_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOSTWIRE_ADMIN_TOKEN", raising=False)
    with TestClient(make_app(None)) as c:
        assert c.get("/hostwire/anything").json() == {"app": "/hostwire/anything"}
        assert c.get("/metrics").json() == {"app": "/metrics"}
        assert c.get("/hostwire/").status_code == 404  # the app's 404, not a console


def test_the_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTWIRE_ADMIN_TOKEN", TOKEN)
    with TestClient(make_app(None)) as c:
        assert c.get("/hostwire/api/overview").status_code == 401
        assert c.get("/hostwire/api/overview", headers=BEARER).status_code == 200


def test_bearer_opens_the_api_and_the_app_is_untouched(client: TestClient) -> None:
    assert client.get("/").json() == {"app": "/"}
    answer = client.get("/hostwire/api/overview")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    assert answer.headers["www-authenticate"].startswith("Bearer")
    wrong = client.get("/hostwire/api/overview", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    body = client.get("/hostwire/api/overview", headers=BEARER).json()
    assert body["plugins"] == []
    assert body["events"] is False


def test_a_browser_is_sent_to_the_login_page(client: TestClient) -> None:
    answer = client.get("/hostwire/", headers=HTML, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/hostwire/login"
    form = client.get("/hostwire/login")
    assert form.status_code == 200
    assert 'name="token"' in form.text
    assert 'type="password"' in form.text


def test_a_wrong_token_shows_the_form_again(client: TestClient) -> None:
    answer = client.post("/hostwire/login", data={"token": "guess"}, follow_redirects=False)
    assert answer.status_code == 401
    assert "That is not the admin token." in answer.text
    assert 'name="token"' in answer.text
    assert COOKIE not in answer.cookies


def test_login_sets_a_strict_cookie_holding_no_token(client: TestClient) -> None:
    answer = client.post("/hostwire/login", data={"token": TOKEN}, follow_redirects=False)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={session_value(TOKEN)};")
    assert TOKEN not in cookie
    lowered = cookie.lower()
    assert "httponly" in lowered
    assert "samesite=strict" in lowered
    assert "path=/hostwire" in lowered


def test_the_cookie_opens_the_console_but_not_metrics(client: TestClient) -> None:
    log_in(client)
    page = client.get("/hostwire/", headers=HTML)
    assert page.status_code == 200
    assert "hostwire console" in page.text
    assert client.get("/hostwire/api/overview").status_code == 200
    # Sent by hand: the client keeps the cookie for /hostwire only, as a browser would.
    cookies = {"Cookie": f"{COOKIE}={session_value(TOKEN)}"}
    assert client.get("/metrics", headers=cookies).status_code == 401


def test_a_forged_cookie_is_refused(client: TestClient) -> None:
    forged = {"Cookie": f"{COOKIE}={session_value('another token')}"}
    assert client.get("/hostwire/api/overview", headers=forged).status_code == 401


def test_logout_ends_the_session(client: TestClient) -> None:
    log_in(client)
    answer = client.post("/hostwire/logout", follow_redirects=False)
    assert answer.status_code == 303
    assert (
        f'{COOKIE}=""' in answer.headers["set-cookie"]
        or "Max-Age=0" in answer.headers["set-cookie"]
    )
    assert client.get("/hostwire/api/overview").status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Sec-Fetch-Site": "cross-site"}, id="sec-fetch-cross-site"),
        pytest.param({"Sec-Fetch-Site": "same-site"}, id="sec-fetch-same-site"),
        pytest.param({"Origin": "http://evil.example"}, id="foreign-origin"),
        pytest.param({"Origin": "null"}, id="null-origin"),
    ],
)
def test_cross_site_unsafe_requests_are_refused(
    client: TestClient, headers: dict[str, str]
) -> None:
    log_in(client)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        answer = client.request(method, "/hostwire/deliveries/e1/replay", headers=headers)
        assert answer.status_code == 403, method
        assert answer.json()["error"]["code"] == "cross_site"
    # Even with the token: a login from another site is refused too.
    login = client.post("/hostwire/login", data={"token": TOKEN}, headers=headers)
    assert login.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Sec-Fetch-Site": "same-origin"}, id="sec-fetch-same-origin"),
        pytest.param({"Sec-Fetch-Site": "none"}, id="sec-fetch-none"),
        pytest.param({"Origin": "http://testserver"}, id="own-origin"),
        pytest.param({}, id="no-browser-headers"),
    ],
)
def test_same_site_unsafe_requests_pass(client: TestClient, headers: dict[str, str]) -> None:
    answer = client.post("/hostwire/deliveries/e1/replay", headers={**BEARER, **headers})
    # Past the gate: this host keeps no events, which the route itself says.
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "no_events"


def test_another_sites_reads_need_the_token_not_the_cookie(client: TestClient) -> None:
    # A holder of the token may read from anywhere (a dashboard on another host).
    headers = {**BEARER, "Sec-Fetch-Site": "cross-site"}
    assert client.get("/hostwire/api/overview", headers=headers).status_code == 200
    # A logged-in browser's cookie goes with a sibling subdomain's requests too
    # (SameSite counts the registrable domain): its scripts and images get 403.
    log_in(client)
    assert client.get("/hostwire/api/overview").status_code == 200
    for mode in ("cors", "no-cors"):
        fetched = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": mode}
        answer = client.get("/hostwire/api/overview", headers=fetched)
        assert answer.status_code == 403, mode
        assert answer.json()["error"]["code"] == "cross_site"
    # Following a link to the console from elsewhere opens it, but not in a frame
    # of that site's page (clickjacking: the frame's buttons would be same-origin).
    followed = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate", **HTML}
    assert client.get("/hostwire/", headers=followed).status_code == 200
    framed = {**followed, "Sec-Fetch-Dest": "iframe"}
    assert client.get("/hostwire/", headers=framed).status_code == 403


def test_every_admin_answer_forbids_framing(client: TestClient) -> None:
    for answer in (
        client.get("/hostwire/login"),
        client.get("/hostwire/api/overview"),  # 401
        client.get("/hostwire/", headers=BEARER),
        client.get("/metrics", headers=BEARER),
    ):
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert "x-frame-options" not in client.get("/").headers  # the app's own answers: its own


def test_the_static_files(client: TestClient) -> None:
    assert client.get("/hostwire/static/console.css").status_code == 200  # the login page's
    assert client.get("/hostwire/static/console.js").status_code == 401
    log_in(client)
    script = client.get("/hostwire/static/console.js")
    assert script.status_code == 200
    assert "/hostwire/api/overview" in script.text
    assert client.get("/hostwire/static/../app.py").status_code in (401, 404)
    assert client.get("/hostwire/static/nothing.js").status_code == 404


def test_unknown_admin_paths_and_methods_answer_json(client: TestClient) -> None:
    missing = client.get("/hostwire/nothing-here", headers=BEARER)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = client.get("/hostwire/deliveries/e1/replay", headers=BEARER)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


# -- where the token comes from, and the tokens refused ----------------------------


def configured(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plugins.yaml"
    path.write_text(text)
    return path


def serves_with(token: str, **given: Any) -> None:
    """The admin routes open with ``token`` (and only it)."""
    app = Starlette()
    Hostwire(app, spec=SPEC, **given)
    with TestClient(app) as c:
        assert c.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert c.get("/metrics", headers=BEARER).status_code == (200 if token == TOKEN else 401)


def test_the_configuration_names_the_tokens_variable_or_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSTWIRE_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("OPS_CONSOLE_TOKEN", "from-the-named-variable")
    by_env = configured(tmp_path, "admin: {token_env: OPS_CONSOLE_TOKEN}\n")
    serves_with("from-the-named-variable", config=by_env)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "admin").write_text("from-a-mounted-secret\n")
    by_file = configured(tmp_path, "admin: {token_file: secrets/admin}\n")  # beside the config
    serves_with("from-a-mounted-secret", config=by_file)
    # Hostwire(admin_token=) comes first, then the configuration, then HOSTWIRE_ADMIN_TOKEN.
    serves_with("given-in-the-code-itself", config=by_env, admin_token="given-in-the-code-itself")
    serves_with(TOKEN, config=configured(tmp_path, "plugins: []\n"))


def test_a_token_written_in_the_file_is_not_in_the_errors_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = configured(tmp_path, f"admin: {{token: {TOKEN}}}\n")
    with pytest.raises(ConfigError) as refused:
        Hostwire(Starlette(), spec=SPEC, config=path)
    assert refused.value.__cause__ is None  # pydantic's error quotes the input
    assert TOKEN not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "admin: {token: s3cret-admin-token-for-tests}\n",
            "admin: the admin token does not go in the configuration file",
            id="token-in-the-file",
        ),
        pytest.param(
            "admin: {token_env: NOT_SET_ANYWHERE}\n",
            "admin.token_env names NOT_SET_ANYWHERE, which is not set",
            id="unset-variable",
        ),
        pytest.param(
            "admin: {token_file: nothing-here}\n",
            "admin.token_file .*nothing-here cannot be read: No such file or directory",
            id="missing-file",
        ),
        pytest.param(
            "admin: {token_env: SHORT_ADMIN_TOKEN}\n",
            r"The admin token from \$SHORT_ADMIN_TOKEN is 5 characters; .* at least 16",
            id="too-short",
        ),
        pytest.param(
            "admin: {token_env: OK, token_file: x}\n",
            "give token_env or token_file, not both",
            id="both",
        ),
        pytest.param(
            "plugins:\n- name: leaky\n  path: leaky.wasm\n"
            "  config: {upstream: {auth: 'Bearer s3cret-admin-token-for-tests'}}\n",
            r'plugin "leaky" .*its config.upstream.auth holds the admin token',
            id="in-a-plugins-config",
        ),
        pytest.param(
            "admin: {token_file: data/secrets/admin}\n"
            "plugins:\n- name: reader\n  path: reader.wasm\n  allowed_paths: {data: /data}\n",
            r'plugin "reader" .*allowed_paths give it data, which holds the admin token',
            id="its-file-in-a-plugins-folder",
        ),
    ],
)
def test_a_token_from_the_wrong_place_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    monkeypatch.setenv("HOSTWIRE_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    monkeypatch.setenv("SHORT_ADMIN_TOKEN", "short")
    (tmp_path / "data" / "secrets").mkdir(parents=True)
    (tmp_path / "data" / "secrets" / "admin").write_text(TOKEN)
    monkeypatch.chdir(tmp_path)  # allowed_paths are the process's paths
    with pytest.raises(ConfigError, match=message) as refused:
        Hostwire(Starlette(), spec=SPEC, config=configured(tmp_path, text))
    assert "\n" not in str(refused.value)


def test_a_reload_that_would_hand_a_plugin_the_token_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSTWIRE_ADMIN_TOKEN", TOKEN)
    path = configured(tmp_path, "plugins: []\n")
    app = Starlette()
    hw = Hostwire(app, spec=SPEC, config=path)
    with TestClient(app) as c:
        path.write_text(f"plugins:\n- {{name: leaky, path: x.wasm, config: {{key: {TOKEN}}}}}\n")
        with pytest.raises(ConfigError, match=r"its config\.key holds the admin token"):
            hw.reload_config()
        assert c.get("/metrics", headers=BEARER).status_code == 200  # still serving


def test_the_cli_refuses_a_short_token_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOSTWIRE_ADMIN_TOKEN", "adm")
    config = configured(tmp_path, "plugins: []\n")
    code = main(["serve", "--config", str(config), "--port", "0"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hostwire: error: ")
    assert "\n" not in err
    assert err.endswith(
        "The admin token from $HOSTWIRE_ADMIN_TOKEN is 3 characters; an admin "
        "token needs at least 16 (make one: python -c 'import secrets; "
        "print(secrets.token_urlsafe(24))')."
    )


def test_lightcontrol_refuses_its_api_token_as_the_admin_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightcontrol.app import Settings, create_app

    monkeypatch.setenv("HOSTWIRE_ADMIN_TOKEN", TOKEN)
    with pytest.raises(ConfigError, match="also one of the app's API tokens"):
        create_app(Settings(db_path=str(tmp_path / "a.db"), token=TOKEN))
    with pytest.raises(ConfigError, match="also one of the app's API tokens"):
        create_app(Settings(db_path=str(tmp_path / "b.db"), plugin_tokens={"p": TOKEN}))
    create_app(Settings(db_path=str(tmp_path / "c.db"), token="the-api-token-of-its-own"))
