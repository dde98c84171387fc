"""Approvals: deadlines that fire also after a restart, one page to on-call, re-asking OPA,
who may approve, and the JSON API."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from pyagent.alerts import Delivery as AlertGroup
from pyagent.approvals import Approval, Approvals, Ask, Request, plan_hash
from pyagent.briefing import Briefing
from pyagent.changes import ChangeRecord
from pyagent.cli import main
from pyagent.dispatch import dispatch_many
from pyagent.errors import StoreUnavailable
from pyagent.executors import ProposedAction
from pyagent.executors.dryrun import DryRunExecutor
from pyagent.hands import Case
from pyagent.ledger import Ledger
from pyagent.notifiers.outbox import Notice, create_table
from pyagent.notifiers.outbox import history as outbox_history
from pyagent.notifiers.pagerduty import dedup_key
from pyagent.opa import OpaClient
from pyagent.store import Store
from tests.builders import firing_alert
from tests.execution_kit import case, kit
from tests.fakes import FakeSlack
from tests.humans import (
    PASSWORDS,
    SLACK_IDS,
    api,
    audit_records,
    click_body,
    humans_settings,
    inventory_copy,
    pending_approval,
    policy_with_timeout,
    post_click,
    saas,
    served,
    wait_until,
)
from tests.serving import example, post


def _state_of(state: Path, approval_id: str) -> str:
    """The approval's state as stored, read with no agent running."""
    store = Store(state / "agent.db")
    try:
        found = Approvals(store).get(approval_id)
    finally:
        store.close()
    assert found is not None
    return found.state


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def test_unanswered_approval_expires_and_pages_on_call_once(tmp_path: Path) -> None:
    policy = policy_with_timeout(tmp_path, 2)
    state = tmp_path / "state"
    with saas() as fakes, served(humans_settings(state, fakes, policy_dir=policy)) as (url, _):
        post(url, example("level-4-oom-restart"))
        approval = pending_approval(url, state="")  # it may expire before the first look
        [event] = [r.json() for r in fakes.pagerduty.wait_for(1)]
        assert wait_until(lambda: audit_records(state, "approval_expired"))
        late_click = click_body(
            approval["id"], approval["plan_hash"], SLACK_IDS["alice"], "approve", fakes.slack.response_url()
        )
        assert 409 == post_click(url, late_click).json()["status"]
        assert [] == audit_records(state, "approval")
    assert "trigger" == event["event_action"]
    assert dedup_key(approval["id"]) == event["dedup_key"]
    assert "rolling_restart" in event["payload"]["summary"]
    assert {"kind": "Deployment", "namespace": "shop", "name": "checkout"} == event["payload"][
        "custom_details"
    ]["target"]
    assert f"http://console.example/console/approvals/{approval['id']}" == event["links"][0]["href"]
    [expired] = audit_records(state, "approval_expired")
    assert _epoch(expired["fired_at"]) >= _epoch(expired["due_at"])
    assert approval["expires_at"] == pytest.approx(_epoch(expired["due_at"]), abs=1e-5)
    assert 1 == len(fakes.pagerduty.events())
    assert "Expired unanswered" in str(fakes.slack.wait_for(1, "/api/chat.update")[0].json()["blocks"])
    assert [] == [r for r in audit_records(state, "action_step") if r["step"] == "executed"]


def test_restart_during_a_pending_approval_still_expires_on_time_and_pages_once(tmp_path: Path) -> None:
    policy = policy_with_timeout(tmp_path, 10)
    state = tmp_path / "state"
    with saas() as fakes:
        settings = humans_settings(state, fakes, policy_dir=policy)
        with served(settings) as (url, _):
            post(url, example("level-4-oom-restart"))
            approval = pending_approval(url)
        assert "pending" == _state_of(state, approval["id"])
        assert [] == fakes.pagerduty.events()  # stopped before the deadline
        with served(settings) as (url, _):
            assert wait_until(lambda: audit_records(state, "approval_expired"))
            fakes.pagerduty.wait_for(1)
        with served(settings) as (url, _):  # and a third start pages no one again
            pass
        assert "expired" == _state_of(state, approval["id"])
        assert 1 == len(fakes.pagerduty.events())
    [expired] = audit_records(state, "approval_expired")
    assert _epoch(expired["fired_at"]) >= _epoch(expired["due_at"])
    assert approval["expires_at"] == pytest.approx(_epoch(expired["due_at"]), abs=1e-5)
    assert dedup_key(approval["id"]) == fakes.pagerduty.events()[0]["dedup_key"]


def test_slack_down_pages_on_call_at_once_and_slack_is_retried(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with saas() as fakes:
        fakes.slack.down = True
        with served(humans_settings(state, fakes)) as (url, _):
            post(url, example("level-4-oom-restart"))
            approval = pending_approval(url)
            [event] = [r.json() for r in fakes.pagerduty.wait_for(1)]
            assert "slack_unreachable" == event["payload"]["custom_details"]["reason"]
            assert approval["expires_at"] > _epoch(audit_records(state, "approval_escalated")[0]["ts"]) + 500
            fakes.slack.wait_for(2, "/api/chat.postMessage")
            fakes.slack.down = False
            retried = wait_until(
                lambda: [r for r in audit_records(state, "notification") if r["channel"] == "slack"],
                timeout=20,
            )
            assert retried
    assert retried[0]["attempts"] >= 2
    assert retried[0]["delivered"] is True


def test_pagerduty_5xx_is_retried_with_backoff(tmp_path: Path) -> None:
    policy = policy_with_timeout(tmp_path, 1)
    state = tmp_path / "state"
    with saas() as fakes:
        fakes.pagerduty.statuses = [500, 429]
        with served(humans_settings(state, fakes, policy_dir=policy)) as (url, _):
            post(url, example("level-4-oom-restart"))
            fakes.pagerduty.wait_for(3)
            wait_until(
                lambda: [r for r in audit_records(state, "notification") if r["channel"] == "pagerduty"]
            )
    [sent] = [r for r in audit_records(state, "notification") if r["channel"] == "pagerduty"]
    assert (3, True) == (sent["attempts"], sent["delivered"])
    dedup_keys = {e["dedup_key"] for e in fakes.pagerduty.events()}
    assert 1 == len(dedup_keys)


def test_opa_is_asked_again_before_executing_and_a_lower_level_stops_it(tmp_path: Path) -> None:
    inventory = inventory_copy(tmp_path)
    state = tmp_path / "state"
    with saas() as fakes, served(humans_settings(state, fakes, inventory=inventory)) as (url, _):
        post(url, example("level-4-oom-restart"))
        approval = pending_approval(url)
        text = inventory.read_text()
        inventory.write_text(text.replace("error_budget_remaining: 0.8", "error_budget_remaining: 0.1"))
        answer = api(url, "bob").post(
            f"{url}/api/approvals/{approval['id']}/approve",
            json={"plan_hash": approval["plan_hash"]},
            timeout=10,
        )
        assert 200 == answer.status_code
        assert wait_until(lambda: audit_records(state, "approval_not_executed"))
    [recheck] = audit_records(state, "approval_recheck")
    assert 1 == recheck["level"]
    assert "error_budget_exhausted" in {t["id"] for t in recheck["triggers"]}
    [blocked] = audit_records(state, "approval_not_executed")
    assert "policy_changed" == blocked["reason"]
    assert [] == [r for r in audit_records(state, "action_step") if r["step"] == "executed"]


def test_regulated_asset_needs_a_member_of_the_frameworks_group(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with saas() as fakes, served(humans_settings(state, fakes)) as (url, _):
        post(url, example("regulated-pci"))
        approval = pending_approval(url)
        seen = {"plan_hash": approval["plan_hash"]}
        refused = api(url, "bob").post(f"{url}/api/approvals/{approval['id']}/approve", json=seen, timeout=10)
        assert 403 == refused.status_code
        assert "pci-approvers" in refused.json()["error"]
        accepted = api(url, "alice").post(
            f"{url}/api/approvals/{approval['id']}/approve", json=seen, timeout=10
        )
        assert 200 == accepted.status_code
        assert wait_until(lambda: [r for r in audit_records(state, "outcome") if r.get("approval_id")])
    assert ["bob"] == [r["approver"]["name"] for r in audit_records(state, "approval_refused")]
    assert [("approved", "alice", "api")] == [
        (r["verdict"], r["approver"]["name"], r["approver"]["via"]) for r in audit_records(state, "approval")
    ]


def test_api_needs_credentials_and_a_browser_post_needs_the_csrf_token(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with saas() as fakes, served(humans_settings(state, fakes)) as (url, _):
        post(url, example("level-4-oom-restart"))
        approval = pending_approval(url)
        assert 401 == requests.get(url + "/api/approvals", timeout=10).status_code
        wrong = requests.get(url + "/api/approvals", auth=("alice", "wrong"), timeout=10)
        assert 401 == wrong.status_code
        browser = requests.Session()
        page = browser.get(url + "/console/login", timeout=10).text
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert token is not None
        form = {"username": "alice", "password": PASSWORDS["alice"]}
        assert 403 == browser.post(url + "/console/login", data=form, timeout=10).status_code
        signed_in = browser.post(url + "/console/login", data={**form, "csrf": token.group(1)}, timeout=10)
        assert 200 == signed_in.status_code
        assert "Pending approvals" in signed_in.text
        forged = browser.post(
            f"{url}/console/approvals/{approval['id']}/approve",
            data={"plan_hash": approval["plan_hash"]},
            timeout=10,
        )
        assert 403 == forged.status_code
        as_form = api(url, "alice").post(
            f"{url}/api/approvals/{approval['id']}/approve",
            data={"plan_hash": approval["plan_hash"]},
            timeout=10,
        )
        assert 403 == as_form.status_code  # Basic credentials, but not JSON: a cross-site form
        assert (
            "pending"
            == api(url, "alice").get(f"{url}/api/approvals/{approval['id']}", timeout=10).json()["state"]
        )


def test_plan_hash_covers_target_action_and_parameters() -> None:
    base = ProposedAction("scale_up", "Deployment", "shop", "checkout", 2)
    others = [
        ProposedAction("rolling_restart", "Deployment", "shop", "checkout", 2),
        ProposedAction("scale_up", "Deployment", "shop", "cart", 2),
        ProposedAction("scale_up", "Deployment", "shop", "checkout", 3),
    ]
    assert plan_hash(base) == plan_hash(ProposedAction("scale_up", "Deployment", "shop", "checkout", 2))
    assert all(plan_hash(base) != plan_hash(other) for other in others)


def test_cli_lists_and_approves_through_the_api(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with saas() as fakes, served(humans_settings(state, fakes)) as (url, _):
        post(url, example("level-4-oom-restart"))
        approval = pending_approval(url)
        runner = CliRunner()
        env = {"PYAGENT_URL": url, "PYAGENT_USER": "bob", "PYAGENT_PASSWORD": PASSWORDS["bob"]}
        listed = runner.invoke(main, ["approvals", "list", "--state", "pending"], env=env)
        assert 0 == listed.exit_code, listed.output
        assert approval["id"] in listed.output
        assert "early_occurrence" in listed.output
        stale = runner.invoke(
            main, ["approvals", "approve", approval["id"], "--plan-hash", "0" * 64], env=env
        )
        assert 1 == stale.exit_code
        assert "HTTP 409" in stale.output
        approved = runner.invoke(main, ["approvals", "approve", approval["id"]], env=env)
        assert 0 == approved.exit_code, approved.output
        assert "approved by bob" in approved.output
        again = runner.invoke(main, ["approvals", "reject", approval["id"]], env=env)
        assert 1 == again.exit_code
        assert "already approved" in again.output
        assert wait_until(lambda: [r for r in audit_records(state, "action_step") if r["step"] == "executed"])
    assert [("approved", "bob", "api", "password")] == [
        (r["verdict"], r["approver"]["name"], r["approver"]["via"], r["approver"]["verified_by"])
        for r in audit_records(state, "approval")
    ]


def test_decisions_are_filtered_by_level_service_and_trigger(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with saas() as fakes, served(humans_settings(state, fakes)) as (url, running):
        post(url, example("level-4-oom-restart"))
        post(url, example("level-1-novel-pattern"))
        assert running.agent.drain(30)
        session = api(url, "carol")  # reading needs a sign-in, not an approver group

        def ids(query: str) -> list[str]:
            return [
                d["alert_name"]
                for d in session.get(f"{url}/api/decisions?{query}", timeout=10).json()["decisions"]
            ]

        assert 2 == len(ids(""))
        assert ["KubePodOOMKilled"] == ids("level=2")
        assert ["KubePodOOMKilled"] == ids("service=checkout")
        assert ["KafkaConsumerLagGrowing"] == ids("trigger=novel_pattern")
        assert [] == ids("level=4")


def test_a_decision_made_while_slack_is_down_updates_the_request_once_it_is_posted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with saas() as fakes:
        fakes.slack.down = True
        with served(humans_settings(state, fakes)) as (url, _):
            post(url, example("level-4-oom-restart"))
            approval = pending_approval(url)
            fakes.slack.wait_for(1, "/api/chat.postMessage")  # refused: Slack is down
            seen = {"plan_hash": approval["plan_hash"]}
            api(url, "bob").post(f"{url}/api/approvals/{approval['id']}/reject", json=seen, timeout=10)
            fakes.slack.down = False
            [update] = [r.json() for r in fakes.slack.wait_for(1, "/api/chat.update", timeout=60)]
        posted = [r for r in fakes.slack.received("/api/chat.postMessage") if r.json().get("blocks")]
    answers = [json.loads(r.body) for r in posted]
    assert "Approval needed" in answers[-1]["text"]
    assert "Rejected* by bob via api" in str(update["blocks"])
    assert FakeSlack.CHANNEL == update["channel"]
    assert len(fakes.slack.received("/api/chat.postMessage")) >= 2  # the first try failed, a retry landed


def test_the_log_channel_announces_an_approval_once_committed_without_queuing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The log only writes locally: it is written after the approval is committed, with no row in
    the outbox (a row would cost three transactions per alert); Slack's notice is queued."""
    state = tmp_path / "state"
    with saas() as fakes, served(humans_settings(state, fakes)) as (url, _):
        post(url, example("level-4-oom-restart"))
        approval = pending_approval(url)
        fakes.slack.wait_for(1)
        store = Store(state / "agent.db")
        try:
            channels = [n["channel"] for n in outbox_history(store, approval["id"])]
        finally:
            store.close()
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("[approval_request]")]
    assert approval["id"] in line
    assert "Approval needed: rolling_restart of Deployment shop/checkout" in line
    assert ["slack"] == channels


def _request(name: str) -> Request:
    briefing = Briefing(
        alert_name="PodOOMKilled",
        service=name,
        environment="production",
        confidence=0.9,
        replica_fraction=0.1,
        services=1,
        namespaces=("shop",),
        shared_infrastructure=False,
        error_budget_remaining=0.5,
        regulated=False,
        frameworks=(),
        pattern_id="oom-memory-leak",
        occurrences=1,
        analysis=None,
        problems=(),
    )
    action = ProposedAction("rolling_restart", "Deployment", "shop", name, 0)
    return Request(action, "plan", "summary", 2, (), "v1", briefing, (), None, f"fp-{name}")


def test_approvals_created_together_stand_alone(tmp_path: Path) -> None:
    """One commit creates a batch's approvals with their notices; a decision that already has
    an approval fails alone and queues nothing."""
    store = Store(tmp_path / "agent.db")
    book = Approvals(store)
    create_table(store)

    def notices(created: Approval) -> list[Notice]:
        return [Notice("slack", "approval_request", created.id, {"text": created.decision_id})]

    [first] = book.create_many([Ask("d-1", 1, _request("checkout"), 600, notices)], 1000.0)
    assert isinstance(first, Approval)
    made = book.create_many([Ask(f"d-{n}", n, _request(f"svc-{n}"), 600, notices) for n in (1, 2, 3)], 2000.0)
    queued = store.read(lambda db: sorted(p for (p,) in db.execute("SELECT payload FROM notifications")))
    pending = book.listed("pending")
    store.close()
    assert isinstance(made[0], StoreUnavailable)
    assert ["d-2", "d-3"] == [a.decision_id for a in made[1:] if isinstance(a, Approval)]
    assert [2600.0, 2600.0] == [a.expires_at for a in made[1:] if isinstance(a, Approval)]
    assert sorted([first.id, *(a.id for a in made[1:] if isinstance(a, Approval))]) == sorted(
        a.id for a in pending
    )
    assert ['{"text": "d-1"}', '{"text": "d-2"}', '{"text": "d-3"}'] == queued


def test_a_decision_counts_as_carried_out_from_its_approval_or_its_execution(tmp_path: Path) -> None:
    """The first durable step marks a decision in its own transaction, so a restart after it
    never decides the alert again; a decision with no step yet is dropped and its alert
    is pending again."""
    store = Store(tmp_path / "agent.db")
    book = Approvals(store)
    create_table(store)
    alerts = tuple(firing_alert({"alertname": "X"}, fingerprint=f"fp-{n}") for n in range(3))
    stored = store.record_delivery(AlertGroup("{}:{}", "firing", "pyagent", 0, alerts))
    ids = [
        r[0] for r in store.record_decisions([(s, {"level": 2}, "h") for s in stored]) if isinstance(r, tuple)
    ]
    book.create_many([Ask(ids[0], stored[0].id, _request("checkout"), 600, lambda _: [])], 1000.0)
    Ledger(store).begin(ids[1], ProposedAction("rolling_restart", "Deployment", "shop", "cart"), 4)
    unfinished = store.not_carried_out()
    store.reopen([ids[2], ids[0]])  # the one with an approval is kept
    pending, counts = store.pending(), store.counts()
    store.close()
    assert [(stored[2].id, ids[2], 2)] == [(a.id, d, level) for a, d, level in unfinished]
    assert [stored[2].id] == [a.id for a in pending]
    assert 2 == counts["decisions"]


class _BrokenAsker:
    """An approval book that cannot record anything: the store refused the transaction."""

    def ask_many(self, asks: list[tuple[Case, str, ChangeRecord | None]]) -> list[Approval | Exception]:
        raise StoreUnavailable("store agent.db: disk I/O error")


def test_approvals_that_cannot_be_recorded_fail_their_cases_alone(
    opa: OpaClient, example_input: dict[str, Any], tmp_path: Path
) -> None:
    """The level-2 cases of a batch get the store's error; the level-4 case beside them is
    still executed, and nothing claims an approval was requested."""
    made = kit(tmp_path / "state", DryRunExecutor())
    try:
        hands = replace(made.hands, asker=_BrokenAsker())
        cautious = copy.deepcopy(example_input)
        cautious["ai"]["confidence"] = 0.72
        cases = [case(opa, cautious, made.history, 2), case(opa, example_input, made.history, 4)]
        outcomes = dispatch_many(cases, hands)
        steps = [made.steps(c.decision_id) for c in cases]
    finally:
        made.close()
    assert isinstance(outcomes[0], StoreUnavailable)
    assert "success" == outcomes[1]
    assert [[], ["execute", "executed", "verified"]] == steps
