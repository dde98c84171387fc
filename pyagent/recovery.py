"""Executions a stopped agent left unfinished, taken up again when it starts.

An agent can stop between changing a target and recording the outcome. What the ledger says
decides what is safe:

- ``started``: the change may or may not have reached the target; it is never sent again.
  The execution ends as ``error`` and humans are told to check the target.
- ``executed``: the change was made; its verification resumes (a fresh deadline from the
  catalog), with rollback and outcome as usual. A level-3 abort window still holds.
- ``rolling_back``: the rollback may be half done; humans are told to check, and the outcome
  is ``verification_failed``.
- an abort was claimed but not finished: humans are told the rollback is unconfirmed.

Each ends its change record, if it has one, with that outcome (see :mod:`pyagent.changes`).
A decision recorded but never carried out is dropped, and its alert decided again
(:func:`decide_again`).
"""

from __future__ import annotations

import logging
import threading

from pyagent.audit import AuditLog
from pyagent.changes import ChangeDesk
from pyagent.execution import Attempt, conclude, learn
from pyagent.hands import Hands
from pyagent.ledger import Execution
from pyagent.store import Store

# the logger the agent's start-up warnings have always come from, so log filters keep working
log = logging.getLogger("pyagent.agent")


def decide_again(store: Store, audit: AuditLog, changes: ChangeDesk) -> None:
    """Drop the decisions the agent recorded but never carried out, so that their alerts
    are decided anew: it stopped, or the audit failed, between a decision's commit and its
    first durable step (an approval, an execution, an outcome). Nothing was done for
    them, and the audit says so before the alert's new decision; a change record opened
    for one is cancelled."""
    unfinished = store.not_carried_out()
    if not unfinished:
        return
    audit.append_many(
        [
            (
                "decision_abandoned",
                {
                    "decision_id": decision_id,
                    "alert_id": stored.id,
                    "fingerprint": stored.alert.fingerprint,
                    "level": level,
                    "reason": "recorded but never carried out before the agent stopped; decided again",
                },
            )
            for stored, decision_id, level in unfinished
        ]
    )
    dropped = [decision_id for _, decision_id, _ in unfinished]
    changes.cancel_for(dropped, "its decision was dropped before anything was done under it")
    store.reopen(dropped)
    log.warning("%d decisions were never carried out; their alerts are decided again", len(unfinished))


def recover(hands: Hands) -> list[threading.Thread]:
    """Deal with every unfinished execution; returns the threads resuming verifications."""
    resumed = []
    for execution in hands.ledger.unfinished():
        attempt = Attempt(
            execution.decision_id,
            execution.action,
            execution.level,
            f"{execution.action.type} on {execution.action.target}",
            execution.history_action_id,
        )
        if execution.abort_requested_by is not None:
            _tell(
                hands, attempt, "the abort's rollback was interrupted by an agent restart; check the target"
            )
            hands.ledger.abort_done(execution.decision_id, rolled_back=False)
            _end(hands, attempt, "aborted", "its rollback was interrupted by a restart; check the target")
        elif execution.state == "executed" and execution.change is not None:
            thread = threading.Thread(
                target=_resume,
                args=(hands, attempt, execution),
                name=f"pyagent-resume-{execution.decision_id}",
            )
            thread.start()
            resumed.append(thread)
        elif execution.state == "rolling_back":
            hands.ledger.move(execution.decision_id, "verification_failed", from_states=("rolling_back",))
            _tell(hands, attempt, "the rollback was interrupted by an agent restart; check the target")
            learn(hands, execution.history_action_id, "verification_failed", simulated=False)
            _end(hands, attempt, "verification_failed", "its rollback was interrupted by a restart")
        else:
            hands.ledger.move(execution.decision_id, "error", from_states=("started",))
            _tell(
                hands,
                attempt,
                "the agent stopped while executing: whether the change reached the target is unknown;"
                " it is not sent again, check the target",
            )
            _end(hands, attempt, "error", "the agent stopped while executing; check the target")
    return resumed


def _resume(hands: Hands, attempt: Attempt, execution: Execution) -> None:
    assert execution.change is not None  # noqa: S101 - checked by the caller
    attempt.step(hands, "verification_resumed", reason="the agent restarted during verification")
    with (
        hands.guardrails.slot(attempt.action.target) as refusal,
        hands.guardrails.watch(attempt.decision_id) as cancelled,
    ):
        if refusal is not None:
            _tell(hands, attempt, f"verification not resumed: {refusal}")
            return
        outcome = conclude(hands, attempt, execution.change, cancelled)
    if outcome != "aborted":  # an abort ends the record itself
        _end(hands, attempt, outcome, "its verification resumed after a restart")


def _end(hands: Hands, attempt: Attempt, outcome: str, detail: str) -> None:
    hands.changes.end(attempt.decision_id, attempt.action, outcome, detail)


def _tell(hands: Hands, attempt: Attempt, detail: str) -> None:
    attempt.step(hands, "interrupted", detail=detail)
    hands.notifier.notify("execution_interrupted", attempt.summary, attempt.details(detail=detail))
