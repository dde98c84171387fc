"""Stage 4, dispatch by level: execute and verify, ask for approval, or only inform.

Every step is audited before it is acted on; a change record, when the decision asks for
one, is written before anything executes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pyagent.alerts import Alert
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


@dataclass(frozen=True)
class Hands:
    """The executor, channel, store and audit dispatch works through."""

    executor: Executor
    notifier: Notifier
    store: Store
    audit: Auditor


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


def change_record(case: Case) -> dict[str, Any]:
    """A change request in ServiceNow's fields, for a regulated or unknown asset."""
    action, decision = case.action, case.verdict.decision
    return {
        "short_description": f"{action.type} of {action.kind} {action.namespace}/{action.name}",
        "description": case.summary,
        "justification": "; ".join(t.message for t in decision.triggers) or "policy decision",
        "implementation_plan": f"{action.type} by pyagent after decision {case.decision_id}",
        "backout_plan": f"roll back {action.type} on {action.namespace}/{action.name}",
        "test_plan": "verify the rollout completes and the alert resolves",
        "risk_impact_analysis": f"autonomy level {decision.level} ({decision.name})",
        "risk": "moderate" if decision.level >= 2 else "high",
        "impact": "2",
        "cmdb_ci": f"{action.namespace}/{action.name}",
        "assignment_group": "sre",
        "type": "normal",
    }


def dispatch(case: Case, hands: Hands) -> str:
    """Carry the decision out; returns what was done (for the audit and the caller)."""
    decision = case.verdict.decision
    details = {
        "decision_id": case.decision_id,
        "level": decision.level,
        "action": case.action.to_json(),
        "triggers": [t.to_json() for t in decision.triggers],
    }
    if decision.change_record_required and decision.level >= 2:
        change_id = hands.store.record_change(case.decision_id, change_record(case))
        _step(hands, case, "change_record", change_id=change_id)
    if decision.level == 0:
        _step(hands, case, "recorded")
        return "recorded"
    if decision.level == 1:
        hands.notifier.notify("context", case.summary, details)
        _step(hands, case, "context_posted")
        return "context_posted"
    if decision.level == 2:
        approval_id = hands.store.create_approval(case.decision_id, decision.approval.timeout_seconds)
        _step(
            hands,
            case,
            "approval_requested",
            approval_id=approval_id,
            timeout_seconds=decision.approval.timeout_seconds,
            on_timeout=decision.approval.on_timeout,
            plan=hands.executor.plan(case.action),
        )
        hands.notifier.notify("approval_requested", case.summary, {**details, "approval_id": approval_id})
        return "approval_requested"
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
