"""Execution: the one way an action runs, and what follows it.

:func:`execute_action` carries out levels 3 and 4 from dispatch, and an approved level 2
from the approval flow: guardrails, plan, execute once per decision, verify by the
catalog's deadline, roll back when verification fails, and record the outcome in history so
the policy learns from it. :func:`conclude`, :func:`roll_back` and :func:`learn` also serve
an abort and the recovery of executions a restart interrupted.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from pyagent.errors import ExecutorError, HistoryError
from pyagent.executors import Change, Deadline, Executor, ProposedAction, StepResult
from pyagent.hands import ABORT_LEVEL, Case, Hands, audit_step, case_details, case_step, plan_of

log = logging.getLogger("pyagent.execution")

DEFAULT_VERIFY_SECONDS = 300.0


def execute_action(case: Case, hands: Hands) -> str:
    """Carry out the case's action once; returns the outcome.

    For a decision that lets the agent act (level 3 or 4), or a level-2 decision a human
    approved. The kill switch stops the autonomous ones only: with it on, the policy sends
    every action to a human, whose approval is the way to act. ``refused`` (kill switch,
    target busy, global cap) and ``duplicate`` (this
    decision already executed) change nothing; otherwise the outcome is ``success``,
    ``rolled_back`` or ``verification_failed`` (verification failed, rollback done or not),
    ``aborted`` (a human aborted within the abort window) or ``error`` (the executor failed;
    never retried). Every outcome of a real change is recorded in history.
    """
    guardrails = hands.guardrails
    if case.autonomous and guardrails.kill_switch_engaged():
        return _refuse(case, hands, "the kill switch is engaged")
    with guardrails.slot(case.action.target) as refusal:
        if refusal is not None:
            return _refuse(case, hands, refusal)
        plan = plan_of(hands.executor, case.action)
        if case.autonomous and guardrails.kill_switch_engaged():  # again, right before the change
            return _refuse(case, hands, "the kill switch is engaged")
        if not hands.ledger.begin(case.decision_id, case.action, case.verdict.decision.level):
            case_step(
                hands, case, "duplicate", reason="this decision was executed before; not executed again"
            )
            return "duplicate"
        case_step(hands, case, "execute", plan=plan)
        with guardrails.watch(case.decision_id) as cancelled:
            return _run(case, hands, cancelled)


def _refuse(case: Case, hands: Hands, reason: str) -> str:
    case_step(hands, case, "refused", reason=reason)
    hands.notifier.notify("execution_refused", case.summary, case_details(case, reason=reason))
    return "refused"


@dataclass(frozen=True)
class Attempt:
    """One decision's execution as the steps after ``execute`` need it: a live case, or a ledger
    row found unfinished when the agent starts."""

    decision_id: str
    action: ProposedAction
    level: int
    summary: str
    history_action_id: int | None
    fingerprint: str | None = None

    def step(self, hands: Hands, step: str, **fields: Any) -> None:
        where = {"fingerprint": self.fingerprint} if self.fingerprint else {}
        audit_step(hands, self.decision_id, self.action, step, **where, **fields)

    def details(self, **more: Any) -> dict[str, Any]:
        return {"decision_id": self.decision_id, "level": self.level, "action": self.action.to_json(), **more}


def _run(case: Case, hands: Hands, cancelled: threading.Event) -> str:
    decision, action = case.verdict.decision, case.action
    try:
        change = hands.executor.execute(action, case.decision_id)
    except Exception as exc:  # noqa: BLE001 - any failure, even a bug, ends as error and is told
        detail = str(exc) if isinstance(exc, ExecutorError) else f"{type(exc).__name__}: {exc}"
        action_id = _record_action(case, hands)
        hands.ledger.move(case.decision_id, "error", from_states=("started",))
        case_step(hands, case, "executed", ok=False, detail=detail, retried=False)
        hands.notifier.notify("execution_failed", case.summary, case_details(case, detail=detail))
        _learn(case, hands, action_id, "error", simulated=False)
        return "error"
    action_id = _record_action(case, hands)  # after the change: nothing delays it
    window = decision.abort_window_seconds if decision.level == ABORT_LEVEL else None
    hands.ledger.executed(case.decision_id, change, hands.clock(), window, action_id)
    case_step(hands, case, "executed", ok=True, detail=change.detail, sent=change.sent)
    if window is not None:
        hands.notifier.notify(
            "executed_abort_window",
            case.summary,
            case_details(
                case, abort_window_seconds=window, abort=f"POST /api/actions/{case.decision_id}/abort"
            ),
        )
    attempt = Attempt(
        case.decision_id, action, decision.level, case.summary, action_id, case.alert.fingerprint
    )
    return conclude(hands, attempt, change, cancelled)


def conclude(hands: Hands, attempt: Attempt, change: Change, cancelled: threading.Event) -> str:
    """Verify an executed change by the catalog's deadline, roll it back when that fails, and
    record the outcome; an abort claimed meanwhile takes over (returns ``aborted``)."""
    decision_id, action = attempt.decision_id, attempt.action
    seconds = hands.verify_seconds.get(action.type, DEFAULT_VERIFY_SECONDS)
    verified = _verify(hands.executor, action, change, Deadline.after(seconds, cancelled))
    if cancelled.is_set():
        attempt.step(hands, "verification_stopped", detail=verified.detail)
        return "aborted"  # the abort rolls back and records the outcome
    attempt.step(hands, "verified", ok=verified.ok, detail=verified.detail, deadline_seconds=seconds)
    if verified.ok:
        if not hands.ledger.move(decision_id, "succeeded", from_states=("executed",)):
            return "aborted"
        _remember(hands, attempt, "success", change.simulated)
        return "success"
    if not hands.ledger.move(decision_id, "rolling_back", from_states=("executed",)):
        return "aborted"
    undone = roll_back(hands, decision_id, action, change, "verification failed")
    outcome = "rolled_back" if undone.ok else "verification_failed"
    hands.ledger.move(decision_id, outcome, from_states=("rolling_back",))
    hands.notifier.notify(
        "verification_failed",
        attempt.summary,
        attempt.details(detail=verified.detail, rollback=undone.detail, outcome=outcome),
    )
    _remember(hands, attempt, outcome, change.simulated)
    return outcome


def _remember(hands: Hands, attempt: Attempt, outcome: str, simulated: bool) -> None:
    problem = learn(hands, attempt.history_action_id, outcome, simulated=simulated)
    if problem:
        attempt.step(hands, "history_problem", detail=problem)


def _verify(executor: Executor, action: ProposedAction, change: Change, deadline: Deadline) -> StepResult:
    try:
        return executor.verify(action, change, deadline)
    except Exception as exc:  # noqa: BLE001 - a verification that breaks has not verified
        return StepResult(ok=False, detail=f"verification could not observe the target: {exc}")


def roll_back(hands: Hands, decision_id: str, action: ProposedAction, change: Change, why: str) -> StepResult:
    """Undo ``change``, audited as its own two steps; a failure is reported, not raised."""
    audit_step(hands, decision_id, action, "rollback", reason=why, undo=dict(change.undo))
    try:
        result = hands.executor.rollback(action, change)
    except Exception as exc:  # noqa: BLE001 - a rollback that breaks has not rolled back
        result = StepResult(ok=False, detail=f"rollback failed: {exc}")
    audit_step(hands, decision_id, action, "rolled_back", ok=result.ok, detail=result.detail)
    if not result.ok:
        hands.notifier.notify(
            "rollback_failed",
            f"rollback of {action.type} on {action.target} failed: roll back by hand",
            {"decision_id": decision_id, "action": action.to_json(), "detail": result.detail},
        )
    return result


def _record_action(case: Case, hands: Hands) -> int | None:
    """Record the executed action in history (it counts toward the autonomous rate limit from
    now on, so it is no longer counted as in flight)."""
    history = hands.history
    if history is None:
        return None
    try:
        incident_id = case.incident_id or history.latest_incident(case.alert.fingerprint)
        if incident_id is None:
            case_step(
                hands, case, "history_problem", detail="no incident recorded; the action is not in history"
            )
            return None
        action_id = history.record_action(
            incident_id, case.action.type, case.verdict.decision.level, hands.clock()
        )
    except HistoryError as exc:
        case_step(hands, case, "history_problem", detail=str(exc))
        return None
    hands.in_flight.done(case.alert_id)
    return action_id


def _learn(case: Case, hands: Hands, action_id: int | None, outcome: str, *, simulated: bool) -> None:
    problem = learn(hands, action_id, outcome, simulated=simulated)
    if problem:
        case_step(hands, case, "history_problem", detail=problem)


def learn(hands: Hands, action_id: int | None, outcome: str, *, simulated: bool) -> str | None:
    """Record an outcome in history, unless the change was simulated; returns a problem, if any."""
    if hands.history is None or action_id is None or simulated:
        return None
    try:
        hands.history.record_outcome(action_id, outcome, hands.clock())
    except HistoryError as exc:
        log.warning("outcome %s of history action %s not recorded: %s", outcome, action_id, exc)
        return str(exc)
    return None
