"""Stage 4, dispatch by level: execute and verify, ask for approval, or only inform.

Every step is audited before it is acted on; a change record, when the decision asks for
one, is written before anything executes. :func:`execute_action` is the one way an action
runs (levels 3 and 4 here, an approved level 2 from the approval flow): guardrails, plan,
execute once per decision, verify by the catalog's deadline, roll back when verification
fails, and record the outcome in history so the policy learns from it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pyagent.alerts import Alert
from pyagent.approvals import Approval
from pyagent.briefing import Briefing
from pyagent.changes import ChangeDesk, ChangeRecord
from pyagent.contract import Decision
from pyagent.errors import ExecutorError, HistoryError
from pyagent.executors import Change, Deadline, Executor, ProposedAction, StepResult
from pyagent.executors.guardrails import Guardrails
from pyagent.inflight import InFlight
from pyagent.ledger import Ledger
from pyagent.notifiers import Notifier
from pyagent.policy import Verdict
from pyagent.store import Store

log = logging.getLogger("pyagent.dispatch")

DEFAULT_VERIFY_SECONDS = 300.0
ABORT_LEVEL = 3  # level 3 has the abort window; 3 and up act without asking


class Auditor(Protocol):
    def append(self, kind: str, fields: Mapping[str, Any]) -> Any: ...

    def append_many(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> Any: ...


class OutcomeHistory(Protocol):
    """Where executed actions and their outcomes are learned (:class:`HistorySQLite`)."""

    def latest_incident(self, fingerprint: str) -> int | None: ...

    def record_action(
        self, incident_id: int, action_type: str, decided_level: int, executed_at: datetime | None = None
    ) -> int: ...

    def record_outcome(self, action_id: int, outcome: Any, recorded_at: datetime) -> None: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


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
    incident_id: int | None = None  # the history incident; None: the alert's latest one

    @property
    def autonomous(self) -> bool:
        """Whether the agent carries this case out itself: see :func:`autonomous`."""
        return autonomous(self.verdict.decision)


class Asker(Protocol):
    """Asks humans to approve level-2 cases (:class:`pyagent.supervision.Supervisor`): an
    approval per case, or the exception that kept it from being recorded."""

    def ask_many(self, asks: list[tuple[Case, str, ChangeRecord | None]]) -> list[Approval | Exception]: ...


@dataclass(frozen=True)
class Hands:
    """The executor, channels, store, audit and change desk dispatch works through; the
    history outcomes are learned in, the guardrails, the catalog's verification deadlines,
    and the autonomous decisions made and not yet in history."""

    executor: Executor
    notifier: Notifier
    store: Store
    audit: Auditor
    changes: ChangeDesk
    asker: Asker
    history: OutcomeHistory | None = None
    guardrails: Guardrails = field(default_factory=Guardrails)
    verify_seconds: Mapping[str, float] = field(default_factory=dict)
    clock: Callable[[], datetime] = _utc_now
    in_flight: InFlight = field(default_factory=InFlight)

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.store)


def audit_step(hands: Hands, decision_id: str, action: ProposedAction, step: str, **fields: Any) -> None:
    """One ``action_step`` audit record."""
    hands.audit.append(*_step_record(decision_id, action, step, **fields))


def _step_record(
    decision_id: str, action: ProposedAction, step: str, **fields: Any
) -> tuple[str, dict[str, Any]]:
    return "action_step", {"decision_id": decision_id, "step": step, "action": action.to_json(), **fields}


def _step(hands: Hands, case: Case, step: str, **fields: Any) -> None:
    audit_step(hands, case.decision_id, case.action, step, fingerprint=case.alert.fingerprint, **fields)


def autonomous(decision: Decision) -> bool:
    """Whether the agent carries the decision out itself (levels 3 and 4) rather than asking
    or telling; such decisions count in the policy's autonomous rate limit."""
    return decision.level >= ABORT_LEVEL


def dispatch_many(cases: list[Case], hands: Hands) -> list[str | Exception]:
    """Carry the decisions out, in order; what was done for each (for the audit and the
    caller), or the exception that stopped it, which leaves the other cases alone. The
    level-2 cases are asked together: their approvals are committed with one transaction and
    their ``approval_requested`` steps audited with one fsync, after the approvals exist."""
    outcomes: dict[int, str | Exception] = {}
    asking: list[tuple[int, Case, str, ChangeRecord | None]] = []
    for index, case in enumerate(cases):
        try:
            change = _change_record(case, hands)
            if case.verdict.decision.level == 2:
                asking.append((index, case, plan_of(hands.executor, case.action), change))
            else:
                outcomes[index] = _act(case, hands, change)
        except Exception as exc:  # noqa: BLE001 - the caller reports it; the other cases go on
            outcomes[index] = exc
    if asking:
        outcomes.update(_ask(asking, hands))
    return [outcomes[index] for index in range(len(cases))]


def opens_change_record(decision: Decision) -> bool:
    """Whether dispatch opens a change record (filed when a change system is set) for it."""
    return decision.change_record_required and decision.level >= 2


def _change_record(case: Case, hands: Hands) -> ChangeRecord | None:
    """The change record, opened (and audited) before anything else when the decision needs one."""
    decision = case.verdict.decision
    if not opens_change_record(decision):
        return None
    change = hands.changes.open(case.decision_id, case.action, decision.triggers, case.briefing, case.summary)
    _step(hands, case, "change_record", change_id=change.id, state=change.state, error=change.last_error)
    return change


def _ask(
    asking: list[tuple[int, Case, str, ChangeRecord | None]], hands: Hands
) -> dict[int, str | Exception]:
    try:
        approvals = hands.asker.ask_many([(case, plan, change) for _, case, plan, change in asking])
    except Exception as exc:  # noqa: BLE001 - e.g. the store is closed: no approval was recorded
        return {index: exc for index, *_ in asking}
    outcomes: dict[int, str | Exception] = {}
    steps = []
    for (index, case, plan, _), approval in zip(asking, approvals, strict=True):
        if isinstance(approval, Exception):
            outcomes[index] = approval
            continue
        approval_step = case.verdict.decision.approval
        steps.append(
            _step_record(
                case.decision_id,
                case.action,
                "approval_requested",
                fingerprint=case.alert.fingerprint,
                approval_id=approval.id,
                plan_hash=approval.plan_hash,
                timeout_seconds=approval_step.timeout_seconds,
                on_timeout=approval_step.on_timeout,
                plan=plan,
            )
        )
        outcomes[index] = "approval_requested"
    try:
        hands.audit.append_many(steps)
    except Exception as exc:  # noqa: BLE001 - the approvals exist; their steps are not audited
        return {index: exc for index, *_ in asking}
    return outcomes


def _act(case: Case, hands: Hands, change: ChangeRecord | None) -> str:
    """Levels 0, 1, 3 and 4: record, post context, or execute."""
    decision = case.verdict.decision
    if decision.level == 0:
        _step(hands, case, "recorded")
        return "recorded"
    if decision.level == 1:
        hands.notifier.notify("context", case.summary, _details(case))
        _step(hands, case, "context_posted")
        return "context_posted"
    if change is not None and not change.executable:  # never executed later: the record ends here
        _step(hands, case, "not_executed", reason="change_system_unavailable", error=change.last_error)
        hands.notifier.notify("not_executed", case.summary, _details(case, detail=change.last_error))
        why = f"not executed: the change system failed: {change.last_error}"
        hands.changes.cancel_for([case.decision_id], why)
        return "blocked"
    return execute_action(case, hands)


def plan_of(executor: Executor, action: ProposedAction) -> str:
    """The executor's plan, or why it has none (a plan changes nothing, so it never fails the caller)."""
    try:
        return executor.plan(action)
    except Exception as exc:  # noqa: BLE001 - a plan that breaks is reported, never fatal
        return f"no plan: {exc if isinstance(exc, ExecutorError) else f'{type(exc).__name__}: {exc}'}"


def _details(case: Case, **more: Any) -> dict[str, Any]:
    return {
        "decision_id": case.decision_id,
        "level": case.verdict.decision.level,
        "action": case.action.to_json(),
        "triggers": [t.to_json() for t in case.verdict.decision.triggers],
        **more,
    }


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
            _step(hands, case, "duplicate", reason="this decision was executed before; not executed again")
            return "duplicate"
        _step(hands, case, "execute", plan=plan)
        with guardrails.watch(case.decision_id) as cancelled:
            return _run(case, hands, cancelled)


def _refuse(case: Case, hands: Hands, reason: str) -> str:
    _step(hands, case, "refused", reason=reason)
    hands.notifier.notify("execution_refused", case.summary, _details(case, reason=reason))
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
        _step(hands, case, "executed", ok=False, detail=detail, retried=False)
        hands.notifier.notify("execution_failed", case.summary, _details(case, detail=detail))
        _learn(case, hands, action_id, "error", simulated=False)
        return "error"
    action_id = _record_action(case, hands)  # after the change: nothing delays it
    window = decision.abort_window_seconds if decision.level == ABORT_LEVEL else None
    hands.ledger.executed(case.decision_id, change, hands.clock(), window, action_id)
    _step(hands, case, "executed", ok=True, detail=change.detail, sent=change.sent)
    if window is not None:
        hands.notifier.notify(
            "executed_abort_window",
            case.summary,
            _details(case, abort_window_seconds=window, abort=f"POST /api/actions/{case.decision_id}/abort"),
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
            _step(hands, case, "history_problem", detail="no incident recorded; the action is not in history")
            return None
        action_id = history.record_action(
            incident_id, case.action.type, case.verdict.decision.level, hands.clock()
        )
    except HistoryError as exc:
        _step(hands, case, "history_problem", detail=str(exc))
        return None
    hands.in_flight.done(case.alert_id)
    return action_id


def _learn(case: Case, hands: Hands, action_id: int | None, outcome: str, *, simulated: bool) -> None:
    problem = learn(hands, action_id, outcome, simulated=simulated)
    if problem:
        _step(hands, case, "history_problem", detail=problem)


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
