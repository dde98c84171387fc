"""Stage 4, dispatch by level: execute and verify, ask for approval, or only inform.

Every step is audited before it is acted on; a change record, when the decision asks for
one, is written before anything executes. Levels 3 and 4 execute through
:func:`pyagent.execution.execute_action`; level 2 is asked of humans, level 1 posts context,
level 0 is recorded.
"""

from __future__ import annotations

from pyagent.changes import ChangeRecord
from pyagent.contract import Decision
from pyagent.execution import execute_action
from pyagent.hands import Case, Hands, case_details, case_step, plan_of, step_record


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
    case_step(hands, case, "change_record", change_id=change.id, state=change.state, error=change.last_error)
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
            step_record(
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
        case_step(hands, case, "recorded")
        return "recorded"
    if decision.level == 1:
        hands.notifier.notify("context", case.summary, case_details(case))
        case_step(hands, case, "context_posted")
        return "context_posted"
    if change is not None and not change.executable:  # never executed later: the record ends here
        case_step(hands, case, "not_executed", reason="change_system_unavailable", error=change.last_error)
        hands.notifier.notify("not_executed", case.summary, case_details(case, detail=change.last_error))
        why = f"not executed: the change system failed: {change.last_error}"
        hands.changes.cancel_for([case.decision_id], why)
        return "blocked"
    return execute_action(case, hands)
