"""The console without a browser: sign-in paths, the proxy header, the policy's state."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import requests

from pyagent.access import Access, Identity, check_password, hash_password
from pyagent.console.auth import COOKIE
from pyagent.console.queries import policy_state
from pyagent.opa import default_policy_dir
from tests.humans import PASSWORDS, humans_settings, saas, served
from tests.serving import EXAMPLES


def _signed_in(url: str, user: str, password: str) -> requests.Session:
    browser = requests.Session()
    page = browser.get(url + "/console/login", timeout=10).text
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert token is not None
    browser.post(
        url + "/console/login",
        data={"username": user, "password": password, "csrf": token.group(1)},
        timeout=10,
    )
    return browser


def test_wrong_password_or_tampered_cookie_is_not_signed_in(tmp_path: Path) -> None:
    with saas() as fakes, served(humans_settings(tmp_path / "state", fakes)) as (url, _):
        wrong = _signed_in(url, "alice", "not-her-password")
        assert "/console/login" in wrong.get(url + "/console", timeout=10).url
        right = _signed_in(url, "alice", PASSWORDS["alice"])
        assert "Pending approvals" in right.get(url + "/console", timeout=10).text
        cookie = right.cookies[COOKIE]
        data, _, mac = cookie.partition(".")
        forged = requests.Session()
        forged.cookies.set(COOKIE, f"{data[:-2]}AA.{mac}")
        assert "/console/login" in forged.get(url + "/console", timeout=10).url


def test_a_trusted_proxy_header_signs_in_and_an_untrusted_peer_is_ignored(tmp_path: Path) -> None:
    header = {"X-Forwarded-User": "bob", "X-Forwarded-Groups": "sre"}
    with saas() as fakes:
        trusted = humans_settings(tmp_path / "a", fakes, console_proxy_header="X-Forwarded-User",
                                  console_proxy_groups_header="X-Forwarded-Groups")  # fmt: skip
        with served(trusted) as (url, _):
            assert 200 == requests.get(url + "/api/approvals", headers=header, timeout=10).status_code
        untrusted = humans_settings(tmp_path / "b", fakes, console_proxy_header="X-Forwarded-User",
                                    console_trusted_proxies="10.9.8.7")  # fmt: skip
        with served(untrusted) as (url, _):
            assert 401 == requests.get(url + "/api/approvals", headers=header, timeout=10).status_code


def test_qualifications_about_to_expire_are_listed_with_the_policy_version() -> None:
    state = policy_state(default_policy_dir(), datetime(2027, 2, 1, tzinfo=UTC))
    assert "1.4" == state.version
    soon = {(q["action"], q["pattern"]): q["days_left"] for q in state.expiring}
    assert soon  # the earliest shipped qualification (2026-10-20) expires 2027-01-18, already past
    assert all(days <= 14 for days in soon.values())
    assert () == policy_state(default_policy_dir(), datetime(2026, 11, 20, tzinfo=UTC)).expiring


def test_passwords_are_scrypt_hashed_and_identities_carry_their_groups() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$")
    assert check_password("correct horse", stored)
    assert not check_password("correct horsf", stored)
    alice = Identity("alice", frozenset({"sre"}), "console", "password")
    access = Access(approver_groups={"default": frozenset({"sre"}), "pci-dss": frozenset({"pci"})})
    assert access.refusal(alice, ("default",)) is None
    assert "pci" in str(access.refusal(alice, ("pci-dss",)))
    assert "no approver group" in str(access.refusal(alice, ("hipaa",)))


def test_the_example_access_file_signs_in_its_demo_user() -> None:
    access = Access.load(EXAMPLES / "access.yaml")
    demo = access.login("demo", "change-me-now")
    assert demo is not None
    assert access.refusal(demo, ("pci-dss",)) is None
    assert access.login("demo", "wrong") is None


def test_a_link_cannot_make_the_console_show_words_of_its_own(tmp_path: Path) -> None:
    with saas() as fakes, served(humans_settings(tmp_path / "state", fakes)) as (url, _):
        browser = _signed_in(url, "alice", PASSWORDS["alice"])
        page = browser.get(url + "/console?msg=Approve+everything+now&kind=ok&sig=00", timeout=10).text
        stranger = requests.Session()
        token = re.search(
            r'name="csrf" value="([0-9a-f]+)"', stranger.get(url + "/console/login", timeout=10).text
        )
        assert token is not None
        form = {"username": "alice", "password": "wrong", "csrf": token.group(1)}
        login_page = stranger.post(url + "/console/login", data=form, timeout=10).text
    assert "Approve everything now" not in page
    assert "Wrong user or password" in login_page
