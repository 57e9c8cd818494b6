"""The console in a real headless Chromium: log in through the form, see the
demo plug-ins, watch the numbers update live and replay a dead event."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver as Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from hostwire import Hostwire, HostwireConfig, load_config
from lightcontrol.app import Settings, create_app
from live_server import ROOT, serving

ADMIN_TOKEN = "console-admin-token"
API_TOKEN = "console-api-token"
API = {"Authorization": f"Bearer {API_TOKEN}", "X-API-Key": "demo-key"}
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 20


def demo_config() -> HostwireConfig:
    """plugins.yaml's plug-ins; one attempt per delivery, so a failure is dead at once."""
    config = load_config(ROOT / "plugins.yaml")
    for plugin in config.plugins:
        # The server shares this process (and 2 cores) with Chromium.
        plugin.limits.timeout_ms = max(plugin.limits.timeout_ms, 1000)
    config.events.max_attempts = 1
    config.events.poll_s = 0.2
    return config


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Hostwire]]:
    monkeypatch.setenv("HOSTWIRE_ADMIN_TOKEN", ADMIN_TOKEN)
    settings = Settings(db_path=str(tmp_path / "lights.db"), token=API_TOKEN)
    app = create_app(settings, plugins=demo_config())
    with serving(app) as url:
        yield url, app.state.hostwire


@pytest.fixture
def driver() -> Iterator[Chrome]:
    if shutil.which("chromium") is None or not Path(CHROMEDRIVER).exists():
        pytest.fail("the console's test needs Debian's chromium and chromium-driver (make test)")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    browser.set_page_load_timeout(WAIT_S)
    browser.set_script_timeout(WAIT_S)
    try:
        yield browser
    finally:
        browser.quit()


def wait(driver: WebDriver, what: str, condition: Any) -> Any:
    # The page re-renders parts of itself every poll: an element found just before
    # may be replaced by the time it is read, so a stale one means "look again".
    return WebDriverWait(
        driver, WAIT_S, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    ).until(condition, message=what)


def click(driver: WebDriver, what: str, selector: str) -> None:
    """Click the element at ``selector``, found again if a poll replaced it."""

    def clicked(d: WebDriver) -> bool:
        d.find_element(By.CSS_SELECTOR, selector).click()
        return True

    wait(driver, what, clicked)


def delivery_states(driver: WebDriver, plugin: str) -> dict[str, str]:
    """The plug-in's deliveries on the page: state by event id."""
    rows = driver.find_elements(By.CSS_SELECTOR, f'#deliveries tr[data-plugin="{plugin}"]')
    return {
        row.get_attribute("data-event") or "": row.find_element(
            By.CSS_SELECTOR, 'td[data-field="state"]'
        ).text
        for row in rows
    }


def log_in(driver: Chrome, url: str) -> None:
    """Through the form: a console page load is sent there first."""
    driver.get(f"{url}/hostwire/")
    wait(driver, "the login page", lambda d: d.current_url == f"{url}/hostwire/login")
    driver.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(driver, "the console", lambda d: d.current_url == f"{url}/hostwire/")


def check_the_lights_page(driver: Chrome, url: str) -> None:
    """lightcontrol's own page: its lights, kept live by polling."""
    driver.find_element(By.LINK_TEXT, "Lights").click()
    wait(driver, "the lights page", lambda d: d.current_url == f"{url}/hostwire/lights")
    id_cells = '#rows td[data-field="id"]'
    ids = {e.text for e in driver.find_elements(By.CSS_SELECTOR, id_cells)}
    assert ids == {"default", "lamp"}
    driver.execute_script("window.stillThisPage = true;")
    answer = httpx.patch(f"{url}/lights/lamp", json={"name": "Reading lamp"}, headers=API)
    assert answer.status_code == 200, answer.text
    wait(
        driver,
        "the renamed lamp",
        lambda d: "Reading lamp" in d.find_element(By.ID, "rows").text,
    )
    assert driver.execute_script("return window.stillThisPage === true;")


def test_console_in_a_browser(server: tuple[str, Hostwire], driver: Chrome, tmp_path: Path) -> None:
    url, hw = server
    log_in(driver, url)
    names = {e.text for e in driver.find_elements(By.CSS_SELECTOR, "#plugins td.name")}
    assert names == {p.name for p in hw.config.plugins}
    assert "night-mode" in names
    # Marked now: still there later means the numbers came by polling, not a reload.
    driver.execute_script("window.stillThisPage = true;")

    # A change of the default light: follow updates "lamp", which does not exist,
    # so its one attempt fails and the delivery is dead.
    answer = httpx.patch(f"{url}/lights/default", json={"color": "green"}, headers=API)
    assert answer.status_code == 200, answer.text
    wait(
        driver, "follow's dead delivery", lambda d: "dead" in delivery_states(d, "follow").values()
    )
    [dead] = [e for e, state in delivery_states(driver, "follow").items() if state == "dead"]

    # The counters Plugin.call fills: the page follows them live (no reload).
    follow = next(p for p in hw.loaded_plugins() if p.name == "follow")
    snapshot = follow.stats.snapshot()
    assert snapshot["calls"] >= 1
    assert snapshot["failures"] >= 1
    reason = snapshot["recent_failures"][0]["reason"]
    expected = str(snapshot["calls"])
    calls = '#plugins tr[data-plugin="follow"] td[data-field="calls"]'
    wait(
        driver,
        f"follow's calls to show {expected}",
        lambda d: d.find_element(By.CSS_SELECTOR, calls).text == expected,
    )
    wait(
        driver,
        "the failure in the list",
        lambda d: reason[:40] in d.find_element(By.ID, "failures").text,
    )
    assert driver.execute_script("return window.stillThisPage === true;")

    # Deliverable now: the lamp exists. A click on Replay delivers the event.
    created = httpx.post(f"{url}/lights", json={"id": "lamp", "name": "Lamp"}, headers=API)
    assert created.status_code == 201, created.text
    click(driver, "the Replay button", f'#deliveries tr[data-event="{dead}"] button.replay')
    wait(
        driver,
        "the replayed delivery",
        lambda d: delivery_states(d, "follow").get(dead) == "delivered",
    )
    assert hw.outbox is not None
    [replayed] = hw.outbox.deliveries(plugin="follow", event_id=dead)
    assert replayed["state"] == "delivered"
    source = httpx.get(f"{url}/lights/default", headers=API).json()
    lamp = httpx.get(f"{url}/lights/lamp", headers=API).json()
    assert lamp["color"] == source["color"] != "white"  # green (red in night mode's hours)
    assert driver.find_element(By.ID, "message").text == ""

    driver.execute_script("window.scrollTo(0, 0);")
    screenshot = tmp_path / "console.png"
    assert driver.save_screenshot(str(screenshot))
    print(f"console screenshot: {screenshot}")

    check_the_lights_page(driver, url)

    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe

    # Logging out ends the session: the console sends the browser to the form again.
    driver.find_element(By.CSS_SELECTOR, 'form[action="/hostwire/logout"] button').click()
    wait(driver, "the login page again", lambda d: d.current_url == f"{url}/hostwire/login")
    driver.get(f"{url}/hostwire/lights")
    wait(driver, "no way back in", lambda d: d.current_url == f"{url}/hostwire/login")
