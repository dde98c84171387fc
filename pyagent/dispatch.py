"""Stage 4, dispatch by level: execute and verify, ask for approval, or only inform.

Every step is audited before it is acted on; a change record, when the decision asks for
one, is written before anything executes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pyagent.alerts import Alert
from pyagent.approvals import Approval
from pyagent.briefing import Briefing
from pyagent.changes import ChangeDesk, ChangeRecord
from pyagent.executors import Executor, ProposedAction
from pyagent.notifiers import Notifier
from pyagent.policy import Verdict
from pyagent.store import Store


class Auditor(Protocol):
    def append(self, kind: str, fields: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Case:
    """What dispatch acts on: the alert, its decision, and the action proposed."""

    alert: Alert
    decision_id: str
    verdict: Verdict
    action: ProposedAction
    summary: str
    briefing: Briefing
    alert_id: int


class Asker(Protocol):
    """Asks a human to approve a level-2 case (:class:`pyagent.supervision.Supervisor`)."""

    def ask(self, case: Case, plan: str, change: ChangeRecord | None) -> Approval: ...


@dataclass(frozen=True)
class Hands:
    """The executor, channels, store, audit and change desk dispatch works through."""

    executor: Executor
    notifier: Notifier
    store: Store
    audit: Auditor
    changes: ChangeDesk
    asker: Asker


def _step(hands: Hands, case: Case, step: str, **fields: Any) -> None:
    hands.audit.append(
        "action_step",
        {
            "decision_id": case.decision_id,
            "fingerprint": case.alert.fingerprint,
            "step": step,
            "action": case.action.to_json(),
            **fields,
        },
    )


def dispatch(case: Case, hands: Hands) -> str:
    """Carry the decision out; returns what was done (for the audit and the caller)."""
    decision = case.verdict.decision
    details = {
        "decision_id": case.decision_id,
        "level": decision.level,
        "action": case.action.to_json(),
        "triggers": [t.to_json() for t in decision.triggers],
    }
    change = None
    if decision.change_record_required and decision.level >= 2:
        change = hands.changes.open(
            case.decision_id, case.action, decision.triggers, case.briefing, case.summary
        )
        _step(hands, case, "change_record", change_id=change.id, state=change.state, error=change.last_error)
    if decision.level == 0:
        _step(hands, case, "recorded")
        return "recorded"
    if decision.level == 1:
        hands.notifier.notify("context", case.summary, details)
        _step(hands, case, "context_posted")
        return "context_posted"
    if decision.level == 2:
        plan = hands.executor.plan(case.action)
        approval = hands.asker.ask(case, plan, change)
        _step(
            hands,
            case,
            "approval_requested",
            approval_id=approval.id,
            plan_hash=approval.plan_hash,
            timeout_seconds=decision.approval.timeout_seconds,
            on_timeout=decision.approval.on_timeout,
            plan=plan,
        )
        return "approval_requested"
    if change is not None and not change.executable:
        _step(hands, case, "not_executed", reason="change_system_unavailable", error=change.last_error)
        hands.notifier.notify("not_executed", case.summary, {**details, "detail": change.last_error})
        return "blocked"
    return _execute(case, hands, details)


def execute_action(case: Case, hands: Hands) -> str:
    """Execute and verify an approved case (its change record, if needed, is already filed)."""
    decision = case.verdict.decision
    details = {
        "decision_id": case.decision_id,
        "level": decision.level,
        "action": case.action.to_json(),
        "triggers": [t.to_json() for t in decision.triggers],
    }
    return _execute(case, hands, details)


def _execute(case: Case, hands: Hands, details: dict[str, Any]) -> str:
    decision = case.verdict.decision
    _step(hands, case, "execute", plan=hands.executor.plan(case.action))
    result = hands.executor.execute(case.action)
    _step(hands, case, "executed", ok=result.ok, detail=result.detail)
    if not result.ok:
        hands.notifier.notify("execution_failed", case.summary, {**details, "detail": result.detail})
        return "error"
    if decision.level == 3:
        hands.notifier.notify(
            "executed_abort_window",
            case.summary,
            {**details, "abort_window_seconds": decision.abort_window_seconds},
        )
    verified = hands.executor.verify(case.action)
    _step(hands, case, "verified", ok=verified.ok, detail=verified.detail)
    if not verified.ok:
        hands.notifier.notify("verification_failed", case.summary, {**details, "detail": verified.detail})
        return "verification_failed"
    return "success"
