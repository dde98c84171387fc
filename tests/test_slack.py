"""Slack: the approval message, signed clicks, and every way a click is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyagent.app import Running
from pyagent.notifiers.slack import verify
from pyagent.sources import history_import as history_file
from pyagent.sources.history_sqlite import HistorySQLite
from tests.humans import (
    SIGNING_SECRET,
    SLACK_IDS,
    Saas,
    api,
    audit_records,
    click_body,
    humans_settings,
    pending_approval,
    post_click,
    saas,
    served,
    wait_until,
)
from tests.serving import EXAMPLES, example, post

Served = tuple[str, Running, Saas, Path]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Served]:
    with saas() as fakes, served(humans_settings(tmp_path / "state", fakes)) as (url, running):
        yield url, running, fakes, tmp_path / "state"


def _level_2(url: str) -> dict[str, Any]:
    """An OOM alert on checkout, first seen: level 2 (early_occurrence); its pending approval."""
    assert 200 == post(url, example("level-4-oom-restart")).status_code
    return pending_approval(url)


def _executed(state: Path) -> list[dict[str, Any]]:
    return [r for r in audit_records(state, "action_step") if r["step"] == "executed"]


def test_approval_request_is_a_block_kit_message_with_every_reason(agent: Served) -> None:
    url, _, fakes, _ = agent
    approval = _level_2(url)
    [message] = [r.json() for r in fakes.slack.wait_for(1, "/api/chat.postMessage")]
    assert "#approvals" == message["channel"]
    blocks = message["blocks"]
    assert "header" == blocks[0]["type"]
    assert "rolling_restart of Deployment shop/checkout" in blocks[0]["text"]["text"]
    text = str(blocks)
    for trigger in approval["request"]["triggers"]:
        assert trigger["id"] in text
        assert trigger["message"] in text
    for fact in ("Confidence", "Blast radius", "Error budget left", "Policy", "Expires"):
        assert fact in text
    [actions] = [b for b in blocks if b["type"] == "actions"]
    value = f"{approval['id']}:{approval['plan_hash']}"
    assert [("approve", value), ("reject", value)] == [
        (e["action_id"], e["value"]) for e in actions["elements"]
    ]


def test_signed_click_approves_once_and_the_message_is_updated(agent: Served) -> None:
    url, _, fakes, state = agent
    approval = _level_2(url)
    body = click_body(
        approval["id"], approval["plan_hash"], SLACK_IDS["bob"], "approve", fakes.slack.response_url()
    )
    answer = post_click(url, body)
    assert 200 == answer.status_code
    assert answer.json()["ok"] is True
    assert wait_until(lambda: _executed(state))
    [record] = audit_records(state, "approval")
    assert ("approved", "bob", "slack", "slack_signature") == (
        record["verdict"],
        record["approver"]["name"],
        record["approver"]["via"],
        record["approver"]["verified_by"],
    )
    [update] = [r.json() for r in fakes.slack.wait_for(1, "/api/chat.update")]
    assert "Approved* by bob via slack" in str(update["blocks"])
    assert not [b for b in update["blocks"] if b["type"] == "actions"]
    replay = post_click(url, body)  # the same click again, freshly signed: a replay
    assert 200 == replay.status_code
    assert replay.json()["ok"] is False
    assert 409 == replay.json()["status"]
    assert 1 == len(audit_records(state, "approval"))
    [reply] = [r.json() for r in fakes.slack.wait_for(1, "/actions/")]
    assert "ephemeral" == reply["response_type"]
    assert "already approved" in reply["text"]
    assert 1 == len(_executed(state))


@pytest.mark.parametrize("forgery", ["wrong_secret", "stale", "body_altered", "unsigned"])
def test_forged_stale_or_altered_requests_get_401_and_change_nothing(agent: Served, forgery: str) -> None:
    url, _, fakes, state = agent
    approval = _level_2(url)
    body = click_body(
        approval["id"], approval["plan_hash"], SLACK_IDS["bob"], "approve", fakes.slack.response_url()
    )
    if forgery == "wrong_secret":
        answer = post_click(url, body, secret="not-the-signing-secret")
    elif forgery == "stale":
        answer = post_click(url, body, timestamp=int(approval["created_at"]) - 301)
    elif forgery == "body_altered":
        other = click_body(approval["id"], approval["plan_hash"], SLACK_IDS["carol"], "reject", "http://x")
        answer = post_click(url, body, sign_body=other)
    else:
        answer = api(url, "bob").post(url + "/slack/interactions", data=body, timeout=10)
    assert 401 == answer.status_code
    assert (
        "pending"
        == api(url, "alice").get(f"{url}/api/approvals/{approval['id']}", timeout=10).json()["state"]
    )
    assert [] == audit_records(state, "approval")
    assert [] == fakes.slack.received("/actions/")


def test_valid_click_on_an_unknown_approval_is_refused_without_side_effects(agent: Served) -> None:
    url, running, fakes, state = agent
    approval = _level_2(url)
    # the request's delivery to Slack is audited by the courier: wait for it before comparing
    assert wait_until(lambda: audit_records(state, "notification"))
    before = (state / "audit.jsonl").read_text()
    body = click_body(
        "0000-unknown", approval["plan_hash"], SLACK_IDS["alice"], "approve", fakes.slack.response_url()
    )
    answer = post_click(url, body)
    assert (200, False, 404) == (answer.status_code, answer.json()["ok"], answer.json()["status"])
    assert "no approval" in fakes.slack.wait_for(1, "/actions/")[0].json()["text"]
    # the refusal's reply to the clicker is delivered and audited like any notice; nothing else is
    replies = wait_until(lambda: [r for r in audit_records(state, "notification") if r["notice"] == "reply"])
    after = (state / "audit.jsonl").read_text()
    assert after.startswith(before)
    assert [("notification", "reply")] == [
        (r["kind"], r["notice"]) for r in map(json.loads, after[len(before) :].splitlines())
    ]
    assert 1 == len(replies)
    assert ["pending"] == [a.state for a in running.desk.supervisor.approvals.listed()]


def test_click_by_someone_not_in_the_access_file_changes_nothing(agent: Served) -> None:
    url, _, fakes, state = agent
    approval = _level_2(url)
    body = click_body(
        approval["id"], approval["plan_hash"], "U0STRANGER", "approve", fakes.slack.response_url()
    )
    assert post_click(url, body).json()["ok"] is False
    assert (
        "pending"
        == api(url, "alice").get(f"{url}/api/approvals/{approval['id']}", timeout=10).json()["state"]
    )
    assert [] == audit_records(state, "approval")


def test_button_value_cannot_carry_another_plan(agent: Served) -> None:
    url, _, fakes, state = agent
    approval = _level_2(url)
    body = click_body(approval["id"], "f" * 64, SLACK_IDS["alice"], "approve", fakes.slack.response_url())
    assert 409 == post_click(url, body).json()["status"]
    assert [] == audit_records(state, "approval")


def test_signature_check_follows_slacks_recipe() -> None:
    """The example from Slack's documentation of request signing."""
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert verify(SIGNING_SECRET, "1531420618", expected, body, 1531420618 + 10) is None
    assert "stale" in str(verify(SIGNING_SECRET, "1531420618", expected, body, 1531420618 + 301))
    assert "mismatch" in str(verify(SIGNING_SECRET, "1531420618", expected, body + b"x", 1531420618))


def _with_history(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    history_file.import_incidents(
        HistorySQLite(state / "history.db"), history_file.load(EXAMPLES / "history.yaml")
    )


def test_level_1_posts_context_without_buttons_and_level_3_offers_abort(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _with_history(state)
    with saas() as fakes, served(humans_settings(state, fakes)) as (url, running):
        post(url, example("level-1-novel-pattern"))
        post(url, example("level-3-rollback"))
        assert running.agent.drain(30)
        messages = {
            m["text"].split(":")[0]: m for m in (r.json() for r in fakes.slack.wait_for(2, "/api/chat"))
        }
    context, done = messages["context"], messages["executed_abort_window"]
    assert [] == [b for b in context["blocks"] if b["type"] == "actions"]
    assert "no action recommended" in context["blocks"][0]["text"]["text"]
    assert "novel_pattern" in str(context["blocks"])
    assert "Abort within 15 minutes" in done["blocks"][0]["text"]["text"]
    [actions] = [b for b in done["blocks"] if b["type"] == "actions"]
    assert ["abort"] == [e["action_id"] for e in actions["elements"]]


def test_abort_button_rolls_back_as_the_signed_slack_user(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _with_history(state)
    with saas() as fakes, served(humans_settings(state, fakes)) as (url, running):
        post(url, example("level-3-rollback"))
        assert running.agent.drain(30)
        [done] = [r.json() for r in fakes.slack.wait_for(1, "/api/chat.postMessage")]
        [actions] = [b for b in done["blocks"] if b["type"] == "actions"]
        decision_id = actions["elements"][0]["value"]
        body = click_body("", "", SLACK_IDS["carol"], "abort", fakes.slack.response_url(), value=decision_id)
        answer = post_click(url, body)
        assert (200, True) == (answer.status_code, answer.json()["ok"]), answer.json()
        again = post_click(url, body)
        assert again.json()["ok"] is False
    [requested] = [r for r in audit_records(state, "action_step") if r["step"] == "abort_requested"]
    assert ("carol", "slack") == (requested["by"], requested["via"])


def test_alert_text_cannot_mention_everyone_or_hide_a_link(tmp_path: Path) -> None:
    """An alert's name reaches the message (a novel pattern's summary names it): it stays text."""
    hostile = example("level-1-novel-pattern")
    name = "<!channel> see <https://evil.example|here> & relax"
    hostile["alerts"][0]["labels"]["alertname"] = name
    state = tmp_path / "state"
    with saas() as fakes, served(humans_settings(state, fakes)) as (url, running):
        post(url, hostile)
        assert running.agent.drain(30)
        [message] = [r.json() for r in fakes.slack.wait_for(1, "/api/chat.postMessage")]
    text = json.dumps(message["blocks"])
    assert "&lt;!channel&gt; see &lt;https://evil.example|here&gt; &amp; relax" in text
    assert "<!channel>" not in text
