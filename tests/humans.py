"""Helpers for the tests of the human loop: people, a policy with a short timeout, Slack clicks."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import requests

from pyagent.access import hash_password
from pyagent.app import Running
from pyagent.notifiers.slack import signature
from pyagent.opa import default_policy_dir
from pyagent.settings import Settings
from tests.fakes import FakePagerDuty, FakeServiceNow, FakeSlack
from tests.serving import EXAMPLES, records, serve

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-2", "carol": "carol-pass-3"}
SLACK_IDS = {"alice": "U0ALICE", "bob": "U0BOB", "carol": "U0CAROL"}
GROUPS = {"alice": ["sre", "pci-approvers"], "bob": ["sre"], "carol": []}


def write_access_file(path: Path) -> Path:
    """alice may approve anything, bob unregulated assets only, carol nothing."""
    users = [
        {"name": name, "password_hash": hash_password(PASSWORDS[name]), "groups": GROUPS[name],
         "slack_user_id": SLACK_IDS[name]}
        for name in PASSWORDS
    ]  # fmt: skip
    rules = {"default": ["sre"], "pci-dss": ["pci-approvers"]}
    path.write_text(json.dumps({"users": users, "approver_groups": rules}))
    return path


def policy_with_timeout(directory: Path, timeout_seconds: int) -> Path:
    """A copy of the project's policy whose approvals time out after ``timeout_seconds``."""
    target = directory / "rego"
    shutil.copytree(default_policy_dir(), target)
    data_file = target / "escalation" / "policy.json"
    data = json.loads(data_file.read_text())
    data["policy"]["approval"]["timeout_seconds"] = timeout_seconds
    data_file.write_text(json.dumps(data))
    return target


def inventory_copy(directory: Path) -> Path:
    target = directory / "inventory.yaml"
    shutil.copy(EXAMPLES / "inventory.yaml", target)
    return target


@dataclass
class Saas:
    """The faked SaaS services of one test."""

    slack: FakeSlack
    pagerduty: FakePagerDuty
    servicenow: FakeServiceNow


@contextmanager
def saas() -> Iterator[Saas]:
    with ExitStack() as stack:
        fakes = Saas(FakeSlack(), FakePagerDuty(), FakeServiceNow())
        for fake in (fakes.slack, fakes.pagerduty, fakes.servicenow):
            stack.callback(fake.close)
        yield fakes


def humans_settings(state: Path, fakes: Saas, **overrides: Any) -> Settings:
    """Settings for an agent wired to the fakes, with the access file in ``state``."""
    settings = Settings(
        state_dir=state,
        inventory=EXAMPLES / "inventory.yaml",
        console_users=write_access_file(state.parent / f"{state.name}-access.yaml"),
        console_url="http://console.example",
        slack_api_url=fakes.slack.api_url,
        slack_bot_token=FakeSlack.TOKEN,
        slack_channel="#approvals",
        slack_signing_secret=SIGNING_SECRET,
        pagerduty_url=fakes.pagerduty.url,
        pagerduty_routing_key=FakePagerDuty.ROUTING_KEY,
    )
    return replace(settings, **overrides)


def servicenow_overrides(url: str) -> dict[str, Any]:
    """Settings that file change records with the fake ServiceNow at ``url``."""
    return {
        "servicenow_url": url,
        "servicenow_user": FakeServiceNow.USER,
        "servicenow_password": FakeServiceNow.PASSWORD,
    }


@contextmanager
def served(settings: Settings) -> Iterator[tuple[str, Running]]:
    with serve(settings) as (url, running):
        yield url, running


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, step: float = 0.05) -> Any:
    """Poll ``predicate`` until it is truthy; its last value (falsy when the time ran out)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def click_body(  # noqa: PLR0917 - what one click carries
    approval_id: str,
    plan_hash: str,
    user_id: str,
    action_id: str,
    response_url: str,
    value: str | None = None,
) -> bytes:
    """A ``block_actions`` interaction as Slack sends it: form field ``payload`` holding JSON.
    The button's value is ``approval_id:plan_hash`` unless ``value`` is given (an abort button)."""
    payload = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "team_id": "T0TEAM"},
        "team": {"id": "T0TEAM"},
        "api_app_id": "A0APP",
        "container": {"type": "message", "message_ts": "1700000001.000100", "channel_id": FakeSlack.CHANNEL},
        "response_url": response_url,
        "actions": [{"type": "button", "action_id": action_id, "block_id": f"approval:{approval_id}",
                     "value": value or f"{approval_id}:{plan_hash}", "action_ts": "1700000002.000200"}],
    }  # fmt: skip
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def post_click(
    url: str,
    body: bytes,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    sign_body: bytes | None = None,
) -> requests.Response:
    """POST a click to ``/slack/interactions``, signed over ``sign_body`` (default: the body sent)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature(secret, stamp, body if sign_body is None else sign_body),
    }
    return requests.post(url + "/slack/interactions", data=body, headers=headers, timeout=10)


def api(url: str, user: str) -> requests.Session:
    """A session for the JSON API with ``user``'s Basic credentials (as the CLI uses it)."""
    session = requests.Session()
    session.auth = (user, PASSWORDS[user])
    return session


def pending_approval(url: str, timeout: float = 30.0, state: str = "pending") -> dict[str, Any]:
    """The first approval in ``state`` (any state when empty), once there is one."""
    session = api(url, "alice")

    def first() -> dict[str, Any] | None:
        listed = session.get(f"{url}/api/approvals?state={state}", timeout=10).json()["approvals"]
        return listed[0] if listed else None

    found = wait_until(first, timeout)
    assert found, "no approval became pending"
    result: dict[str, Any] = found
    return result


audit_records = records  # the audit records of one kind, as the human-loop tests call them
