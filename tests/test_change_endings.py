"""Every change record ends: closed with the outcome of the change made under it, or cancelled
when nothing was changed; ServiceNow is told, and told again later when it cannot take it."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

from pyagent.app import running_agent
from pyagent.audit import AuditLog
from pyagent.changes import ChangeDesk
from pyagent.contract import Trigger
from pyagent.dispatch import dispatch_many
from pyagent.executors import ProposedAction
from pyagent.executors.dryrun import DryRunExecutor
from pyagent.opa import OpaClient, default_policy_dir, free_port
from pyagent.servicenow import ServiceNow
from pyagent.settings import Settings
from pyagent.store import Store
from tests.execution_kit import briefing, case, kit
from tests.fakes import FakeServiceNow
from tests.humans import (
    Saas,
    api,
    audit_records,
    humans_settings,
    pending_approval,
    policy_with_timeout,
    saas,
    served,
    servicenow_overrides,
    wait_until,
)
from tests.serving import example, post

REGULATED = Trigger("regulated_asset", 2, "the target is a regulated asset (frameworks: pci-dss)")


def _settings(state: Path, fakes: Saas, **overrides: Any) -> Settings:
    return humans_settings(state, fakes, **servicenow_overrides(fakes.servicenow.url), **overrides)


def _ending(state: Path) -> list[tuple[Any, ...]]:
    """(cancel reason, cancel told, close code, close notes, close told) of each record."""
    with sqlite3.connect(state / "agent.db") as db:
        return db.execute(
            "SELECT cancel_reason, cancel_filed, close_code, close_notes, close_filed FROM change_records"
            " ORDER BY created_at"
        ).fetchall()


def _answer(url: str, verdict: str, who: str = "alice") -> dict[str, Any]:
    """The regulated example's approval, once pending, answered ``verdict`` by ``who``."""
    approval = pending_approval(url)
    seen = {"plan_hash": approval["plan_hash"]}
    answer = api(url, who).post(f"{url}/api/approvals/{approval['id']}/{verdict}", json=seen, timeout=10)
    assert 200 == answer.status_code, answer.text
    return approval


def _answered_and_told(state: Path, verdict: str, told: str) -> dict[str, Any]:
    """The regulated example's approval answered ``verdict``; its change request in
    ServiceNow once the audit log says ServiceNow was told (a ``told`` record)."""
    with saas() as fakes, served(_settings(state, fakes)) as (url, _):
        post(url, example("regulated-pci"))
        _answer(url, verdict)
        assert wait_until(lambda: audit_records(state, told))
        [change] = fakes.servicenow.changes.values()
    return change


def test_a_verified_change_closes_its_record_successful_in_servicenow(tmp_path: Path) -> None:
    state = tmp_path / "state"
    change = _answered_and_told(state, "approve", "change_record_close_filed")
    [outcome] = [r for r in audit_records(state, "outcome") if r.get("approval_id")]
    [closed] = audit_records(state, "change_record_closed")
    [told] = audit_records(state, "change_record_close_filed")
    assert "success" == outcome["outcome"] == closed["outcome"]
    assert ("3", "successful") == (change["state"], change["close_code"])  # Closed
    assert change["close_notes"] == closed["close_notes"]
    assert "by pyagent: success (approved by alice)" in change["close_notes"]
    assert outcome["decision_id"] in change["close_notes"]
    assert (closed["change_id"], change["number"]) == (told["change_id"], closed["number"])
    assert outcome["seq"] < closed["seq"] < told["seq"]
    assert [(None, 0, "successful", closed["close_notes"], 1)] == _ending(state)


def test_a_rejected_approval_cancels_its_record_in_servicenow(tmp_path: Path) -> None:
    state = tmp_path / "state"
    change = _answered_and_told(state, "reject", "change_record_cancel_filed")
    [cancelled] = audit_records(state, "change_record_cancelled")
    assert "4" == change["state"]  # Canceled
    assert "Cancelled by pyagent: the approval was rejected by alice via api" == change["work_notes"]
    assert [(cancelled["reason"], 1, None, None, 0)] == _ending(state)
    assert [] == [r for r in audit_records(state, "action_step") if r["step"] == "executed"]


def test_an_expired_approval_cancels_its_record(tmp_path: Path) -> None:
    state = tmp_path / "state"
    policy = policy_with_timeout(tmp_path, 1)
    with saas() as fakes, served(_settings(state, fakes, policy_dir=policy)) as (url, _):
        post(url, example("regulated-pci"))
        assert wait_until(lambda: audit_records(state, "change_record_cancel_filed"))
        [change] = fakes.servicenow.changes.values()
    [expired] = audit_records(state, "approval_expired")
    [cancelled] = audit_records(state, "change_record_cancelled")
    assert expired["decision_id"] == cancelled["decision_id"]
    assert "4" == change["state"]
    assert "expired unanswered" in change["work_notes"]


def test_a_closing_servicenow_cannot_take_is_sent_at_the_next_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with saas() as fakes:
        settings = _settings(state, fakes)
        with served(settings) as (url, _):
            post(url, example("regulated-pci"))
            pending_approval(url)
            fakes.servicenow.updates_refused_with = 503  # filed, then the instance is unavailable
            _answer(url, "approve")
            assert wait_until(lambda: audit_records(state, "change_record_close_unfiled"))
            metrics = requests.get(f"{url}/metrics", timeout=10).text
        [change] = fakes.servicenow.changes.values()
        assert "-5" == change["state"]
        assert 0 == _ending(state)[0][4]
        fakes.servicenow.updates_refused_with = None
        with running_agent(settings) as running:
            assert running.agent.drain(30)
        [change] = fakes.servicenow.changes.values()
    assert ("3", "successful") == (change["state"], change["close_code"])
    assert 'pyagent_change_records_untold{what="ending"} 1.0' in metrics
    assert 'pyagent_change_records_untold{what="unfiled"} 0.0' in metrics
    assert 1 == len(audit_records(state, "change_record_closed"))
    assert 1 == len(audit_records(state, "change_record_close_filed"))
    assert 1 == _ending(state)[0][4]


def test_an_execution_ends_its_record_by_outcome_once(tmp_path: Path, example_input: dict[str, Any]) -> None:
    """Outcomes of a change made: closed, successful or not; refused: cancelled; an outcome
    that is no ending (a duplicate execution) and a second ending change nothing."""
    store, audit = Store(tmp_path / "agent.db"), AuditLog(tmp_path / "audit.jsonl", "test")
    action = ProposedAction.from_policy_input(example_input)
    with saas() as fakes:
        client = ServiceNow(fakes.servicenow.url, FakeServiceNow.USER, FakeServiceNow.PASSWORD)
        desk = ChangeDesk(store, audit, default_policy_dir() / "escalation" / "policy.json", client)
        try:
            for decision_id in ("ok", "undone", "refused", "twice"):
                desk.open(decision_id, action, (REGULATED,), briefing(example_input), "a summary")
            desk.end("ok", action, "success")
            desk.conclude("undone", "rolled_back", "verification failed; rolled back")
            desk.conclude("refused", "refused", "the target is busy")
            desk.conclude("twice", "duplicate", "executed before")
            desk.conclude("twice", "error", "the executor failed")
            desk.conclude("twice", "success", "a second ending")
        finally:
            desk.close()  # waits for ServiceNow to be told
            audit.close()
            store.close()
        states = {c["short_description"] + c["sys_id"]: c for c in fakes.servicenow.changes.values()}
    by_decision = {r["decision_id"]: r for r in audit_records(tmp_path, "change_record_closed")}
    assert {"ok": "successful", "undone": "unsuccessful", "twice": "unsuccessful"} == {
        d: r["close_code"] for d, r in by_decision.items()
    }
    [cancelled] = audit_records(tmp_path, "change_record_cancelled")
    assert ("refused", "the target is busy") == (cancelled["decision_id"], cancelled["reason"])
    assert sorted(["3", "3", "3", "4"]) == sorted(c["state"] for c in states.values())
    assert 4 == len(audit_records(tmp_path, "change_record_close_filed")) + len(
        audit_records(tmp_path, "change_record_cancel_filed")
    )


def test_closing_the_desk_does_not_wait_for_a_hung_servicenow(
    tmp_path: Path, example_input: dict[str, Any]
) -> None:
    """ServiceNow takes the filings, then hangs: closing the desk waits for the record being
    told, not for the other, which the next start tells."""
    store, audit = Store(tmp_path / "agent.db"), AuditLog(tmp_path / "audit.jsonl", "test")
    action = ProposedAction.from_policy_input(example_input)
    policy = default_policy_dir() / "escalation" / "policy.json"
    with saas() as fakes:
        held = fakes.servicenow.held["PATCH"] = threading.Event()
        try:
            slow = ServiceNow(fakes.servicenow.url, FakeServiceNow.USER, FakeServiceNow.PASSWORD, timeout=0.5)
            desk = ChangeDesk(store, audit, policy, slow, close_wait=0.2)
            for decision_id in ("first", "second"):
                desk.open(decision_id, action, (REGULATED,), briefing(example_input), "a summary")
                desk.conclude(decision_id, "success", "verified")
            desk.close()
            tried = set(fakes.servicenow.held_paths)
        finally:
            held.set()
        assert 1 == len(tried)  # the first record's PATCH (and its retries), not the second's
        assert [0, 0] == [row[4] for row in _ending(tmp_path)]
        client = ServiceNow(fakes.servicenow.url, FakeServiceNow.USER, FakeServiceNow.PASSWORD)
        later = ChangeDesk(store, audit, policy, client)
        later.file_endings()  # as the next start does
        later.close()
        assert ["3", "3"] == [c["state"] for c in fakes.servicenow.changes.values()]
    assert [1, 1] == [row[4] for row in _ending(tmp_path)]
    audit.close()
    store.close()


def test_an_approval_stopped_before_its_action_was_sent_cancels_its_record(tmp_path: Path) -> None:
    """The agent stopped after claiming an approved execution and before sending anything
    (no ledger row): at the start nothing is executed, and the record is cancelled."""
    state = tmp_path / "state"
    with saas() as fakes:
        settings = _settings(state, fakes)
        with served(settings) as (url, _):
            post(url, example("regulated-pci"))
            approval = pending_approval(url)
        with sqlite3.connect(state / "agent.db") as db:  # as a stop right after the claim leaves it
            db.execute(
                "UPDATE approvals SET state = 'approved', execution = 'running' WHERE id = ?",
                (approval["id"],),
            )
        with running_agent(settings) as running:
            assert running.agent.drain(30)
        [change] = fakes.servicenow.changes.values()
    [blocked] = audit_records(state, "approval_not_executed")
    [cancelled] = audit_records(state, "change_record_cancelled")
    assert "interrupted" == blocked["reason"]
    assert "before the approved action was sent" in cancelled["reason"]
    assert "4" == change["state"]
    assert [] == [r for r in audit_records(state, "action_step") if r["step"] == "execute"]


def test_an_autonomous_action_whose_record_cannot_be_filed_cancels_it(
    tmp_path: Path, example_input: dict[str, Any], opa: OpaClient
) -> None:
    """A level-4 decision that needs a change record (none does under the shipped policy)
    with the change system down: not executed, and the record ends cancelled."""
    hands_kit = kit(tmp_path, DryRunExecutor())
    down = ServiceNow(f"http://127.0.0.1:{free_port()}{FakeServiceNow.PATH}", None, None, timeout=0.5)
    policy = default_policy_dir() / "escalation" / "policy.json"
    hands = replace(
        hands_kit.hands, changes=ChangeDesk(hands_kit.hands.store, hands_kit.hands.audit, policy, down)
    )
    level_4 = case(opa, example_input, hands_kit.history, 4)
    decision = replace(level_4.verdict.decision, change_record_required=True)
    try:
        assert ["blocked"] == dispatch_many(
            [replace(level_4, verdict=replace(level_4.verdict, decision=decision))], hands
        )
    finally:
        hands.changes.close()
        hands_kit.close()
    [cancelled] = audit_records(tmp_path, "change_record_cancelled")
    assert "the change system failed" in cancelled["reason"]
    assert "not_executed" in hands_kit.steps(level_4.decision_id)
    assert "execute" not in hands_kit.steps(level_4.decision_id)


def test_an_abort_while_the_success_is_being_told_is_told_after_it(
    tmp_path: Path, example_input: dict[str, Any]
) -> None:
    """The verified closing is on its way to ServiceNow when an abort closes the record
    again: ServiceNow ends with the abort's closing, and the store says it was told."""
    store, audit = Store(tmp_path / "agent.db"), AuditLog(tmp_path / "audit.jsonl", "test")
    action = ProposedAction.from_policy_input(example_input)
    with saas() as fakes:
        client = ServiceNow(fakes.servicenow.url, FakeServiceNow.USER, FakeServiceNow.PASSWORD)
        desk = ChangeDesk(store, audit, default_policy_dir() / "escalation" / "policy.json", client)
        held = fakes.servicenow.held["PATCH"] = threading.Event()
        try:
            desk.open("d", action, (REGULATED,), briefing(example_input), "a summary")
            desk.conclude("d", "success", "verified")
            assert wait_until(lambda: fakes.servicenow.held_paths)  # the success, held on its way
            desk.conclude("d", "aborted", "aborted by alice via api; rolled back")
        finally:
            held.set()
            desk.close()
            audit.close()
            store.close()
        [change] = fakes.servicenow.changes.values()
    assert ("unsuccessful", "aborted by alice via api; rolled back") == (
        change["close_code"],
        change["close_notes"],
    )
    assert [("unsuccessful", 1)] == [(row[2], row[4]) for row in _ending(tmp_path)]
    assert 2 == len(audit_records(tmp_path, "change_record_close_filed"))
