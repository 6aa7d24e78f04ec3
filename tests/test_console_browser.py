"""The console in real headless Chromium (Debian's ``chromium`` and ``chromedriver``, driven by
Selenium): a coach's journey whose clicks reach the GP record as Observations, and an operator's
(a dead letter retried and delivered, a patient's access request answered). Screenshots are kept
in ``test-artifacts/console`` (gitignored; ``WOR_BRIDGE_ARTIFACTS`` to move it)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.cases import REPO
from tests.console_world import HIS, INBOX, PASSWORD, add_account, console_config, referral, served
from wor_bridge import bootstrap
from wor_bridge.demo.fhir_server import SimulatedFhirServer
from wor_bridge.service.app import create_app

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None, reason="Debian chromium and chromium-driver not installed"
)
ARTIFACTS = Path(os.environ.get("WOR_BRIDGE_ARTIFACTS", REPO / "test-artifacts")) / "console"
T = TypeVar("T")


def until(check: Callable[[], T | None], what: str, timeout_s: float = 20.0) -> T:
    """Poll ``check`` until it gives a value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    """Headless Debian chromium through Debian's chromedriver (no browser download)."""
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600",
                 "--disable-background-networking", "--no-first-run"):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=options)
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def world(tmp_path: Path, driver: WebDriver) -> Iterator[dict[str, Any]]:
    """The service with its dispatcher on a loopback port, a GP record, a coach and an operator."""
    driver.delete_all_cookies()
    welfare = SimulatedFhirServer("/fhir").start()
    gp = SimulatedFhirServer("/gp").start()
    config = console_config(tmp_path, welfare.base_url, gp.base_url)
    add_account(config, "coach.a", "coach", INBOX)
    add_account(config, "operator.a", "operator")
    components = bootstrap.load(config)
    try:
        with served(create_app(components, start_dispatcher=True)) as base:
            yield {"base": base, "gp": gp, "components": components}
    finally:
        welfare.stop()
        gp.stop()


def shot(driver: WebDriver, name: str) -> None:
    """Keep a screenshot as a test artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def push(base: str, ref: str) -> str:
    """A GP system pushes a referral that routes to the inbox; its Task id."""
    answer = requests.post(
        f"{base}/fhir/r4/ServiceRequest",
        data=referral(ref),
        headers={**HIS, "Content-Type": "application/fhir+json"},
        timeout=10,
    )
    assert answer.status_code == 201
    return str(answer.headers["location"].split("/_history/")[0].rsplit("/", 1)[-1])


def sign_in(driver: WebDriver, base: str, username: str) -> None:
    """Fill in the sign-in form and submit it."""
    driver.get(f"{base}/console/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "aanmelden").click()
    until(lambda: "Aanmelden" not in driver.title, "the first page after sign-in")


def click_and_wait(driver: WebDriver, by: str, what: str) -> None:
    """Click and wait until the next page replaced this one."""
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(by, what).click()

    def replaced() -> bool:
        try:
            old.get_attribute("lang")
        except WebDriverException:  # stale, or the page is being replaced
            return True
        return False

    until(replaced, f"the page after {what}")


def submit(driver: WebDriver, button: str) -> None:
    """Click an action's button and wait for the answer page."""
    click_and_wait(driver, By.ID, button)
    until(lambda: driver.find_elements(By.ID, "melding"), f"the answer to {button}")


def item_codes(gp: SimulatedFhirServer) -> set[str]:
    """The feedback-item codes of the Observations the GP record holds."""
    return {
        coding["code"]
        for obs in gp.resources("Observation")
        for coding in obs.get("code", {}).get("coding", [])
    }


def test_a_coach_journey_reaches_the_gp_record(world: dict[str, Any], driver: WebDriver) -> None:
    """Sign in, open, accept, first contact, activity, close: the GP record gets the
    Observations and the Task is completed, every step through the transition table."""
    base = world["base"]
    task = push(base, "BROWSER-COACH-1")
    sign_in(driver, base, "coach.a")
    until(lambda: "Inbox" in driver.title, "the inbox")
    shot(driver, "coach-1-inbox")
    click_and_wait(driver, By.CSS_SELECTOR, f'a[href="/console/inbox/{task}"]')
    until(lambda: driver.find_elements(By.ID, "knop-accept"), "the referral")
    shot(driver, "coach-2-referral")
    submit(driver, "knop-accept")
    assert driver.find_element(By.ID, "status").text == "Aangenomen"
    date = driver.find_element(By.ID, "first-contact-date")
    driver.execute_script("arguments[0].value = arguments[1]", date, "2026-11-30")
    submit(driver, "knop-first-contact")
    Select(driver.find_element(By.ID, "category")).select_by_value("bewegen-sporten")
    Select(driver.find_element(By.ID, "role")).select_by_value("volunteer")
    submit(driver, "knop-activity")
    Select(driver.find_element(By.ID, "close-reason")).select_by_value("completed-activity")
    submit(driver, "knop-close")
    shot(driver, "coach-3-closed")
    assert driver.find_element(By.ID, "status").text == "Afgerond"
    stored = world["components"].store.get_task(task)
    assert (stored.status, stored.business_status) == ("completed", "closed")
    codes = until(
        lambda: (
            (c := item_codes(world["gp"])) >= {"first-contact", "activity-started", "closed"} and c
        ),
        "the Observations in the GP record",
    )
    assert {"first-contact", "activity-started", "closed"} <= codes


def test_an_operator_retries_a_dead_letter_and_answers_an_access_request(
    world: dict[str, Any], driver: WebDriver
) -> None:
    """A GP-record message the receiver refused is a dead letter; the operator sees it, retries
    it with a confirmation, sees it delivered, reveals it, and finds who read the patient's
    referral (the coach's opening and the operator's reveal)."""
    base, gp, store = world["base"], world["gp"], world["components"].store
    task = push(base, "BROWSER-OPS-1")
    gp.fail_next(400, times=100)  # the GP record refuses everything for now
    until(lambda: store.get_task(task).version > 1 or None, "the inbox delivery")
    sign_in(driver, base, "coach.a")
    driver.get(f"{base}/console/inbox/{task}")
    submit(driver, "knop-accept")
    dead = until(
        lambda: [e for e in store.list_entries("dead", 50) if e.destination == "gp-record"],
        "a dead letter to the GP record",
    )[0]
    click_and_wait(driver, By.CSS_SELECTOR, "header form button")  # sign out
    gp.reset()  # the GP record takes messages again
    sign_in(driver, base, "operator.a")
    until(lambda: "Berichten" in driver.title, "the outbox")
    Select(driver.find_element(By.ID, "state")).select_by_value("dead")
    click_and_wait(driver, By.CSS_SELECTOR, "form[method=get] button")
    click_and_wait(driver, By.CSS_SELECTOR, f'a[href="/console/outbox/{dead.id}"]')
    shot(driver, "operator-1-dead-letter")
    assert driver.find_element(By.ID, "state").text == "dead"
    click_and_wait(driver, By.ID, "knop-retry")
    click_and_wait(driver, By.ID, "knop-bevestig")

    def delivered() -> bool:
        driver.get(f"{base}/console/outbox/{dead.id}")
        return driver.find_element(By.ID, "state").text == "delivered"

    until(delivered, "the retried message delivered")
    shot(driver, "operator-2-delivered")
    assert gp.resources("Task")
    click_and_wait(driver, By.ID, "knop-reveal")  # the content: an audited read
    driver.get(f"{base}/console/audit")
    driver.find_element(By.ID, "patient").send_keys(store.get_task(task).patient_id)
    click_and_wait(driver, By.ID, "knop-zoek")
    users = {cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "td.user")}
    shot(driver, "operator-3-access-request")
    assert "console:coach.a" in users
    assert "console:operator.a" in users  # the reveal, by the operator
