"""Change records for regulated assets: ServiceNow's fields, filed before anything executes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from pyagent.app import running_agent
from pyagent.audit import AuditLog
from pyagent.changes import ChangeDesk
from pyagent.contract import Trigger
from pyagent.executors import ProposedAction
from pyagent.opa import default_policy_dir, free_port
from pyagent.servicenow import ServiceNow
from pyagent.store import Store
from tests.execution_kit import briefing
from tests.fakes import FakeServiceNow
from tests.humans import (
    Saas,
    api,
    audit_records,
    humans_settings,
    pending_approval,
    saas,
    served,
    servicenow_overrides,
    wait_until,
)
from tests.serving import example, post, record_decided_without_acting

FIELDS = {
    "short_description", "description", "justification", "implementation_plan", "backout_plan", "test_plan",
    "risk_impact_analysis", "risk", "impact", "cmdb_ci", "assignment_group", "start_date", "end_date", "type",
}  # fmt: skip


def test_regulated_change_is_filed_in_servicenow_before_approval_and_executes_after(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with saas() as fakes:
        settings = humans_settings(state, fakes, **servicenow_overrides(fakes.servicenow.url))
        with served(settings) as (url, _):
            post(url, example("regulated-pci"))
            approval = pending_approval(url)
            [filed] = [r.json() for r in fakes.servicenow.wait_for(1)]
            shown = api(url, "alice").get(f"{url}/api/approvals/{approval['id']}", timeout=10).json()
            message = fakes.slack.wait_for(1, "/api/chat.postMessage")[0].json()
            seen = {"plan_hash": approval["plan_hash"]}
            api(url, "alice").post(f"{url}/api/approvals/{approval['id']}/approve", json=seen, timeout=10)
            assert wait_until(
                lambda: [r for r in audit_records(state, "action_step") if r["step"] == "executed"]
            )
    assert FIELDS == set(filed)
    assert "rolling_restart of Deployment payments/payments-api" == filed["short_description"]
    assert "regulated_asset" in filed["justification"]
    assert "kubectl rollout restart" in filed["implementation_plan"]
    assert "rollout undo" in filed["backout_plan"]
    assert "payments" == filed["cmdb_ci"]
    assert "normal" == filed["type"]
    assert ("filed", "CHG0030001") == (
        shown["change_record"]["state"],
        shown["change_record"]["external_number"],
    )
    assert "CHG0030001" in str(message["blocks"])
    [record] = audit_records(state, "change_record")
    assert filed == record["fields"]
    assert 1 == len(audit_records(state, "change_record_filed"))


def test_unreachable_change_system_means_nothing_executes_on_the_regulated_asset(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with saas() as fakes:
        closed = fakes.servicenow.url
        fakes.servicenow.close()  # the change system is down
        with served(humans_settings(state, fakes, **servicenow_overrides(closed))) as (url, _):
            post(url, example("regulated-pci"))
            approval = pending_approval(url)
            waiting = requests.get(f"{url}/metrics", timeout=10).text
            seen = {"plan_hash": approval["plan_hash"]}
            answer = api(url, "alice").post(
                f"{url}/api/approvals/{approval['id']}/approve", json=seen, timeout=10
            )
            assert 200 == answer.status_code
            assert wait_until(lambda: audit_records(state, "approval_not_executed"))
            ended = requests.get(f"{url}/metrics", timeout=10).text
    assert 'pyagent_change_records_untold{what="unfiled"} 1.0' in waiting
    assert 'pyagent_change_records_untold{what="unfiled"} 0.0' in ended  # cancelled: never executes
    [cancelled] = audit_records(state, "change_record_cancelled")
    assert "change_system_unavailable" in cancelled["reason"]
    [blocked] = audit_records(state, "approval_not_executed")
    assert "change_system_unavailable" == blocked["reason"]
    assert [] == [r for r in audit_records(state, "action_step") if r["step"] == "executed"]
    assert audit_records(state, "change_record_unfiled")


def test_without_a_change_system_the_record_is_kept_locally_with_every_field(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with saas() as fakes, served(humans_settings(state, fakes)) as (url, _):
        post(url, example("regulated-pci"))
        approval = pending_approval(url)
        shown = api(url, "alice").get(f"{url}/api/approvals/{approval['id']}", timeout=10).json()
    assert "recorded" == shown["change_record"]["state"]
    assert FIELDS == set(shown["change_record"]["fields"])
    assert [] == fakes.servicenow.received()


def _opened_then_stopped(state: Path, document: dict[str, Any], servicenow: str | None) -> tuple[str, str]:
    """A regulated alert decided, and its change record opened (and filed, when ``servicenow``
    is set) as dispatch opens it before anything else; then the agent stopped before asking
    for approval. The decision's id and the record's."""
    [decision_id] = record_decided_without_acting(state, example("regulated-pci"))
    store = Store(state / "agent.db")
    audit = AuditLog(state / "audit.jsonl", "before-the-stop")
    client = ServiceNow(servicenow, FakeServiceNow.USER, FakeServiceNow.PASSWORD) if servicenow else None
    desk = ChangeDesk(store, audit, default_policy_dir() / "escalation" / "policy.json", client)
    regulated = Trigger("regulated_asset", 2, "the target is a regulated asset (frameworks: pci-dss)")
    action = ProposedAction.from_policy_input(document)
    record = desk.open(decision_id, action, (regulated,), briefing(document), "proposing rolling_restart")
    desk.close()
    audit.close()
    store.close()
    return decision_id, record.id


def _restart(state: Path, fakes: Saas, servicenow: str | None) -> None:
    """The agent started again on ``state`` (with ServiceNow at ``servicenow``), until idle."""
    overrides = servicenow_overrides(servicenow) if servicenow else {}
    with running_agent(humans_settings(state, fakes, **overrides)) as running:
        assert running.agent.drain(30)


def _cancelled(state: Path) -> list[tuple[str, str, int]]:
    """(change id, reason, whether the change system was told) of each cancelled record."""
    with sqlite3.connect(state / "agent.db") as db:
        rows = db.execute(
            "SELECT id, cancel_reason, cancel_filed FROM change_records WHERE cancelled_at IS NOT NULL"
        ).fetchall()
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]


@dataclass(frozen=True)
class _Stopped:
    """A regulated alert's decision, whose change record was filed in ServiceNow before the
    agent stopped; nothing else was done for it."""

    state: Path
    fakes: Saas
    decision_id: str
    change_id: str
    sys_id: str


@pytest.fixture
def filed_then_stopped(tmp_path: Path, example_input: dict[str, Any]) -> Iterator[_Stopped]:
    state = tmp_path / "state"
    with saas() as fakes:
        decision_id, change_id = _opened_then_stopped(state, example_input, fakes.servicenow.url)
        [sys_id] = fakes.servicenow.changes
        yield _Stopped(state, fakes, decision_id, change_id, sys_id)


def test_a_record_whose_decision_is_dropped_at_restart_is_cancelled_in_servicenow(
    filed_then_stopped: _Stopped,
) -> None:
    state, fakes, sys_id = filed_then_stopped.state, filed_then_stopped.fakes, filed_then_stopped.sys_id
    _restart(state, fakes, fakes.servicenow.url)
    changes = dict(fakes.servicenow.changes)
    assert "4" == changes[sys_id]["state"]  # Canceled
    assert "dropped before anything was done" in changes[sys_id]["work_notes"]
    [abandoned] = audit_records(state, "decision_abandoned")
    [cancelled] = audit_records(state, "change_record_cancelled")
    [told] = audit_records(state, "change_record_cancel_filed")
    assert filed_then_stopped.decision_id == abandoned["decision_id"] == cancelled["decision_id"]
    assert told["decision_id"] == cancelled["decision_id"]
    assert filed_then_stopped.change_id == cancelled["change_id"] == told["change_id"]
    assert changes[sys_id]["number"] == cancelled["number"]
    # decided anew: a second record, filed and left open, for the new decision
    [new] = [c for c in changes.values() if c["sys_id"] != sys_id]
    assert "-5" == new["state"]
    [decision] = audit_records(state, "decision")
    assert decision["seq"] > told["seq"]
    assert [(filed_then_stopped.change_id, cancelled["reason"], 1)] == _cancelled(state)


def test_a_cancellation_servicenow_cannot_take_is_sent_again_at_the_next_start(
    filed_then_stopped: _Stopped,
) -> None:
    state, fakes, change_id = filed_then_stopped.state, filed_then_stopped.fakes, filed_then_stopped.change_id
    down = f"http://127.0.0.1:{free_port()}{FakeServiceNow.PATH}"
    _restart(state, fakes, down)
    assert "-5" == fakes.servicenow.changes[filed_then_stopped.sys_id]["state"]
    unfiled = audit_records(state, "change_record_cancel_unfiled")  # one per attempt
    [cancelled] = audit_records(state, "change_record_cancelled")
    assert unfiled
    assert {change_id} == {u["change_id"] for u in unfiled} == {cancelled["change_id"]}
    assert [(change_id, cancelled["reason"], 0)] == _cancelled(state)
    _restart(state, fakes, fakes.servicenow.url)
    assert "4" == fakes.servicenow.changes[filed_then_stopped.sys_id]["state"]
    [told] = audit_records(state, "change_record_cancel_filed")
    assert change_id == told["change_id"]
    assert 1 == _cancelled(state)[0][2]
    assert 1 == len(audit_records(state, "change_record_cancelled"))


def test_without_a_change_system_a_dropped_decisions_record_is_cancelled_here(
    tmp_path: Path, example_input: dict[str, Any]
) -> None:
    state = tmp_path / "state"
    with saas() as fakes:
        decision_id, change_id = _opened_then_stopped(state, example_input, None)
        _restart(state, fakes, None)
    [cancelled] = audit_records(state, "change_record_cancelled")
    assert (decision_id, change_id, None) == (
        cancelled["decision_id"],
        cancelled["change_id"],
        cancelled["number"],
    )
    assert [] == audit_records(state, "change_record_cancel_filed")
    assert [] == fakes.servicenow.received()
    assert [(change_id, cancelled["reason"], 0)] == _cancelled(state)


def test_a_store_from_before_cancellations_is_brought_up_to_date(
    tmp_path: Path, example_input: dict[str, Any]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with sqlite3.connect(state / "agent.db") as db:  # the table as the first release made it
        db.execute(
            "CREATE TABLE change_records (id TEXT PRIMARY KEY, decision_id TEXT NOT NULL UNIQUE,"
            " record TEXT NOT NULL, created_at REAL NOT NULL,"
            " state TEXT NOT NULL CHECK (state IN ('recorded', 'filed', 'unfiled')),"
            " external_number TEXT, external_id TEXT, last_error TEXT)"
        )
        db.execute(
            "INSERT INTO change_records VALUES ('CHG-OLD', 'd-old', '{}', 0, 'recorded', NULL, NULL, NULL)"
        )
    decision_id, change_id = _opened_then_stopped(state, example_input, None)
    with saas() as fakes:
        _restart(state, fakes, None)
    assert [change_id] == [c for c, *_ in _cancelled(state)]
    assert decision_id == audit_records(state, "change_record_cancelled")[0]["decision_id"]


def test_a_slow_change_system_holds_up_no_other_alerts_decision(tmp_path: Path) -> None:
    """The regulated alert's record is being filed with a ServiceNow that does not answer yet;
    an alert that came after it is decided and its context posted meanwhile."""
    state = tmp_path / "state"
    with saas() as fakes:
        held = fakes.servicenow.held["POST"] = threading.Event()
        settings = humans_settings(state, fakes, **servicenow_overrides(fakes.servicenow.url))
        try:
            with served(settings) as (url, _):
                post(url, example("regulated-pci"))
                assert wait_until(lambda: fakes.servicenow.held_paths)
                post(url, example("level-1-novel-pattern"))
                assert wait_until(
                    lambda: [r for r in audit_records(state, "action_step") if r["step"] == "context_posted"]
                )
                filing_ended = audit_records(state, "change_record_filed") + audit_records(
                    state, "change_record_unfiled"
                )
                held.set()
                approval = pending_approval(url)
                shown = api(url, "alice").get(f"{url}/api/approvals/{approval['id']}", timeout=10).json()
        finally:
            held.set()
    assert [] == filing_ended  # the level-1 alert was decided while the filing waited
    assert ("filed", "CHG0030001") == (
        shown["change_record"]["state"],
        shown["change_record"]["external_number"],
    )
