"""Level 3's abort window: a human may abort an executed action, and the agent rolls it back.

:func:`abort` is the one entry point (the HTTP API, the CLI through it, and chat buttons call
it), told who asks and through what. Within the window it claims the abort once in the
ledger, stops a verification still running, rolls the change back (audited as its own
steps), records the ``aborted`` outcome in history (a suboptimal outcome: the pattern loses
its level-4 qualification until a human re-qualifies it) and tells humans. After the window,
or for an action with no window, it raises :class:`pyagent.errors.AbortRefused` saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyagent.execution import learn, roll_back
from pyagent.executors import StepResult
from pyagent.hands import Hands, audit_step

STOP_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class AbortResult:
    decision_id: str
    rolled_back: bool
    detail: str
    by: str
    via: str

    def to_json(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "aborted": True,
            "rolled_back": self.rolled_back,
            "detail": self.detail,
            "by": self.by,
            "via": self.via,
        }


def abort(
    decision_id: str, by: str, via: str, hands: Hands, stop_wait: float = STOP_WAIT_SECONDS
) -> AbortResult:
    """Abort the action of ``decision_id`` on behalf of ``by`` (a person) through ``via``
    (``api``, ``cli``, ``slack`` ...). Raises :class:`AbortRefused` outside the abort window."""
    execution = hands.ledger.claim_abort(decision_id, by, via, hands.clock())
    action, change = execution.action, execution.change
    audit_step(hands, decision_id, action, "abort_requested", by=by, via=via)
    hands.guardrails.cancel(decision_id)
    with hands.guardrails.target(action.target, stop_wait) as held:
        if change is None:  # a claimed execution always has one; kept for the type checker
            result = StepResult(ok=False, detail="no change was recorded; nothing to undo")
        elif not held:
            result = StepResult(
                ok=False, detail=f"the running action did not stop within {stop_wait:g} s; roll back by hand"
            )
        else:
            result = roll_back(hands, decision_id, action, change, f"aborted by {by} via {via}")
    hands.ledger.abort_done(decision_id, result.ok)
    simulated = change is not None and change.simulated
    problem = learn(hands, execution.history_action_id, "aborted", simulated=simulated)
    if problem:
        audit_step(hands, decision_id, action, "history_problem", detail=problem)
    undone = "rolled back" if result.ok else "rollback failed, roll back by hand"
    hands.changes.end(decision_id, action, "aborted", f"by {by} via {via}; {undone}")
    hands.notifier.notify(
        "aborted",
        f"{action.type} on {action.target} aborted by {by} via {via}"
        + ("; rolled back" if result.ok else "; rollback FAILED, roll back by hand"),
        {"decision_id": decision_id, "action": action.to_json(), "detail": result.detail},
    )
    return AbortResult(decision_id, result.ok, result.detail, by, via)
