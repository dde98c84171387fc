"""The console in a real browser: Debian's Chromium, headless, driven through chromium-driver.

Screenshots are saved under ``test-artifacts/`` for people to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.humans import PASSWORDS, audit_records, humans_settings, policy_with_timeout, saas, served
from tests.serving import ROOT, example, post

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "test-artifacts"
PHONE = (390, 844)  # a phone's viewport in CSS pixels
WAIT = 60.0  # generous: the machine is shared; these waits end as soon as the page shows it


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={PHONE[0]},{PHONE[1]}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


def _sign_in(browser: WebDriver, url: str, user: str) -> None:
    browser.get(url + "/console")
    browser.find_element(By.ID, "username").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(PASSWORDS[user])
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, WAIT).until(expected_conditions.presence_of_element_located((By.ID, "pending")))


def _shot(browser: WebDriver, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(PHONE[0], max(PHONE[1], int(height) + 120))
    browser.save_screenshot(str(path))
    browser.set_window_size(*PHONE)
    return path


def _approval_card(browser: WebDriver) -> str:
    """Wait until a pending approval appears on the open page (it polls and reloads); its id."""
    card = WebDriverWait(browser, WAIT).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "article.approval.state-pending"))
    )
    return str(card.get_attribute("data-approval"))


def test_sign_in_see_an_approval_appear_approve_it_and_see_it_executed(
    tmp_path: Path, browser: WebDriver
) -> None:
    state = tmp_path / "state"
    with saas() as fakes, served(humans_settings(state, fakes)) as (url, _):
        _sign_in(browser, url, "alice")
        assert "Nothing is waiting for approval." == browser.find_element(By.ID, "no-pending").text
        _shot(browser, "console-1-signed-in-nothing-pending")
        post(url, example("level-4-oom-restart"))
        approval_id = _approval_card(browser)
        WebDriverWait(browser, WAIT).until(
            lambda b: "expires in" in b.find_element(By.CSS_SELECTOR, ".countdown").text
        )
        assert "early_occurrence" in browser.find_element(By.CSS_SELECTOR, ".triggers").text
        _shot(browser, "console-2-pending-approval-with-countdown")
        browser.find_element(By.ID, f"approve-{approval_id}").click()
        WebDriverWait(browser, WAIT).until(
            expected_conditions.text_to_be_present_in_element((By.ID, "flash"), "approved by alice")
        )
        WebDriverWait(browser, WAIT).until(
            expected_conditions.text_to_be_present_in_element(
                (By.CSS_SELECTOR, ".execution-state"), "success"
            )
        )
        _shot(browser, "console-3-approved-and-executed")
        browser.get(f"{url}/console/decisions")
        assert "early_occurrence" in browser.find_element(By.CSS_SELECTOR, "table.decisions").text
        browser.find_element(By.CSS_SELECTOR, "table.decisions a").click()
        trail = browser.find_element(By.CSS_SELECTOR, "ol.trail").text
        _shot(browser, "console-4-audit-trail")
    assert "approval" in trail
    assert "by alice via console (password)" in trail
    assert "executed" in trail
    assert [("approved", "alice", "console")] == [
        (r["verdict"], r["approver"]["name"], r["approver"]["via"]) for r in audit_records(state, "approval")
    ]


def test_an_unanswered_approval_expires_and_the_escalation_shows(tmp_path: Path, browser: WebDriver) -> None:
    policy = policy_with_timeout(tmp_path, 8)
    state = tmp_path / "state"
    with saas() as fakes, served(humans_settings(state, fakes, policy_dir=policy)) as (url, _):
        _sign_in(browser, url, "bob")
        post(url, example("level-4-oom-restart"))
        approval_id = _approval_card(browser)
        _shot(browser, "console-5-pending-before-expiry")
        WebDriverWait(browser, WAIT).until(
            expected_conditions.presence_of_element_located((By.ID, "no-pending"))
        )  # the page reloads once the approval leaves the pending list
        browser.get(f"{url}/console/approvals/{approval_id}")
        WebDriverWait(browser, WAIT).until(
            expected_conditions.text_to_be_present_in_element(
                (By.CSS_SELECTOR, ".notice-pagerduty-escalation"), "pagerduty escalation: sent"
            )
        )
        outcome = browser.find_element(By.CSS_SELECTOR, ".outcome").text
        _shot(browser, "console-6-expired-and-escalated")
        assert not browser.find_elements(By.ID, f"approve-{approval_id}")
    assert outcome.startswith("expired")
    assert 1 == len(fakes.pagerduty.events())
