"""Level 2 end to end: ask a human, wait with a deadline, escalate, and act on an approval.

* ``ask`` persists the approval with the notices that announce it and schedules its
  deadline (:class:`pyagent.timers.Deadlines`), which fires on time, also after a
  restart (``start`` schedules every pending approval again).
* ``decide`` takes a person's answer from an authenticated channel, checks that they may
  approve this asset class and that they saw this plan, and makes the single transition.
* On the deadline the approval expires (never approves) and on-call is paged, once.
  If the Slack request itself fails, on-call is paged at once, with the same dedup key.
* An approved action is not executed on the word of the old decision: the context is
  gathered again and OPA asked again; below level 2, or with another plan, or without a
  filed change record where one is needed, nothing executes and the reason is recorded.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pyagent.access import Access, Identity, asset_classes
from pyagent.alerts import Alert
from pyagent.approvals import Approval, Approvals, Ask, Request, plan_hash
from pyagent.briefing import Briefing
from pyagent.changes import ChangeDesk, ChangeRecord
from pyagent.context import Sources, gather
from pyagent.errors import ChangeSystemUnavailable, HistoryError, NotAuthorised
from pyagent.executors import ProposedAction
from pyagent.hands import Case
from pyagent.ledger import Ledger
from pyagent.notifiers.messages import Messages
from pyagent.notifiers.outbox import Failure, Notice, Outbox
from pyagent.opa import OpaClient
from pyagent.policy import decide
from pyagent.store import Store
from pyagent.timers import Deadlines

log = logging.getLogger("pyagent.supervision")


class Auditor(Protocol):
    def append(self, kind: str, fields: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Policy:
    """What re-asking needs: the sources and OPA, as the agent uses them."""

    sources: Sources
    opa: OpaClient


class Supervisor:
    """The approvals' lifecycle. ``execute`` carries out an approved case (dispatch's path)."""

    def __init__(  # noqa: PLR0913, PLR0917 - the parts of the loop, passed in
        self,
        store: Store,
        outbox: Outbox,
        messages: Messages,
        changes: ChangeDesk,
        access: Access,
        audit: Auditor,
        policy: Policy,
        execute: Callable[[Case], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.approvals, self.outbox, self.messages = store, Approvals(store), outbox, messages
        self.changes, self.access, self.audit, self.policy = changes, access, audit, policy
        self.execute, self.clock = execute, clock
        self.deadlines = Deadlines(self._expire, clock)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pyagent-approved")

    def start(self) -> None:
        """Schedule every pending approval (one already due expires at once); resume approved
        actions whose execution never started; report the ones a stop interrupted."""
        self.deadlines.start()
        for approval in self.approvals.listed("pending", limit=100_000):
            self.deadlines.add(approval.id, approval.expires_at)
        for approval in self.approvals.unexecuted():
            if approval.execution == "running":
                self.approvals.finish_execution(approval.id, "interrupted")
                self._blocked(approval, "interrupted", "the agent stopped while executing; check the target")
            else:
                self._pool.submit(self._run_approved, approval.id)

    def stop(self) -> None:
        self.deadlines.stop()
        self._pool.shutdown(wait=True)

    def _change_label(self, decision_id: str) -> str | None:
        """The change record as the approver is shown it: id, state and ServiceNow number."""
        return _label(self.changes.for_decision(decision_id))

    def ask_many(self, asks: list[tuple[Case, str, ChangeRecord | None]]) -> list[Approval | Exception]:
        """Persist a pending approval for each case, committed together, announce each and
        schedule its deadline; a case whose approval could not be recorded gets the exception
        in its place."""
        announced: dict[str, list[Notice]] = {}  # by approval id: built once, queued, then delivered

        def announcer(label: str | None) -> Callable[[Approval], list[Notice]]:
            def announce(created: Approval) -> list[Notice]:
                announced[created.id] = self.messages.approval_requested(created, label)
                return self.outbox.queued(announced[created.id])

            return announce

        created = self.approvals.create_many(
            [
                Ask(
                    case.decision_id,
                    case.alert_id,
                    _request(case, plan, change),
                    case.verdict.decision.approval.timeout_seconds,
                    announcer(_label(change)),  # dispatch opened the change, or there is none
                )
                for case, plan, change in asks
            ],
            self.clock(),
        )
        for approval in created:
            if not isinstance(approval, Exception):
                self.deadlines.add(approval.id, approval.expires_at)
                self.outbox.deliver_local(announced[approval.id])
        self.outbox.wake()
        return created

    def decide(self, approval_id: str, verdict: str, seen_plan_hash: str, identity: Identity) -> Approval:
        """One person's answer. Raises an ApprovalRefused subclass, having changed nothing."""
        current = self.approvals.get(approval_id)
        if current is not None and current.state == "pending":
            refusal = self.access.refusal(identity, current.request.asset_classes)
            if refusal is not None:
                self.audit.append(
                    "approval_refused",
                    {
                        "approval_id": approval_id,
                        "decision_id": current.decision_id,
                        "approver": identity.to_json(),
                        "reason": refusal,
                    },
                )
                raise NotAuthorised(refusal)
        label = self._change_label(current.decision_id) if current else None
        decided = self.approvals.decide(
            approval_id,
            verdict,
            seen_plan_hash,
            identity,
            self.clock(),
            lambda done: self.outbox.queued(self.messages.approval_closed(done, label)),
        )
        self.outbox.deliver_local(self.messages.approval_closed(decided, label))
        self.audit.append(
            "approval",
            {
                "approval_id": decided.id,
                "decision_id": decided.decision_id,
                "verdict": verdict,
                "plan_hash": decided.plan_hash,
                "approver": identity.to_json(),
                "decided_at": _rfc3339(decided.decided_at or self.clock()),
            },
        )
        self.outbox.wake()
        if verdict == "approved":
            self._pool.submit(self._run_approved, decided.id)
        else:
            self._learn_rejection(decided)
            self.changes.cancel_for(
                [decided.decision_id], f"the approval was rejected by {identity.name} via {identity.via}"
            )
        return decided

    def _learn_rejection(self, approval: Approval) -> None:
        """A human rejected the AI's recommendation: history records a ``false_positive``
        outcome of it (not executed), which counts in the AI's 7-day false-positive rate."""
        history, request = self.policy.sources.history, approval.request
        moment = datetime.fromtimestamp(approval.decided_at or self.clock(), UTC)
        try:
            incident_id = history.latest_incident(request.fingerprint)
            if incident_id is not None:
                action_id = history.record_action(incident_id, request.action.type, request.level)
                history.record_outcome(action_id, "false_positive", moment)
                return
            problem = f"no incident recorded for {request.fingerprint}"
        except HistoryError as exc:
            problem = str(exc)
        log.warning("rejection of %s not recorded in history: %s", approval.id, problem)
        self.audit.append(
            "history_problem",
            {"approval_id": approval.id, "decision_id": approval.decision_id, "detail": problem},
        )

    def _expire(self, approval_id: str, due: float) -> None:
        """The deadline fired: expire the approval unless someone answered first, and page on-call."""
        now = self.clock()
        current = self.approvals.get(approval_id)
        label = self._change_label(current.decision_id) if current else None
        expired = self.approvals.expire(
            approval_id,
            now,
            lambda done: self.outbox.queued(self._expiry_notices(done, label)),
        )
        if expired is None:
            return
        self.outbox.deliver_local(self._expiry_notices(expired, label))
        self.audit.append(
            "approval_expired",
            {
                "approval_id": approval_id,
                "decision_id": expired.decision_id,
                "due_at": _rfc3339(due),
                "fired_at": _rfc3339(now),
                "late_seconds": round(now - due, 6),
                "escalated_to": sorted(self.messages.channels & {"pagerduty", "log"}),
            },
        )
        self.outbox.wake()
        self.changes.cancel_for([expired.decision_id], "the approval expired unanswered; on-call was paged")

    def _expiry_notices(self, expired: Approval, label: str | None) -> list[Notice]:
        return [*self.messages.approval_closed(expired, label), *self.messages.escalation(expired, "timeout")]

    def on_delivery_failure(self, failure: Failure) -> None:
        """Slack could not take an approval request: page on-call now rather than at the timeout."""
        notice = failure.notice
        if notice.channel != "slack" or notice.kind != "approval_request" or failure.attempts != 1:
            return
        approval = self.approvals.get(notice.subject)
        if approval is None or approval.state != "pending":
            return
        self.outbox.post(*self.messages.escalation(approval, "slack_unreachable"))
        self.audit.append(
            "approval_escalated",
            {
                "approval_id": approval.id,
                "decision_id": approval.decision_id,
                "reason": "slack_unreachable",
                "error": failure.error,
            },
        )

    def _run_approved(self, approval_id: str) -> None:
        try:
            self._execute_approved(approval_id)
        except Exception:
            log.exception("executing approved %s failed", approval_id)
            self.approvals.finish_execution(approval_id, "error")

    def _execute_approved(self, approval_id: str) -> None:
        """Re-gather, re-ask OPA, check plan and change record, then execute through dispatch."""
        if not self.approvals.claim_execution(approval_id):
            return
        approval = self.approvals.get(approval_id)
        assert approval is not None  # noqa: S101 - claimed just now
        case = self._recheck(approval)
        decision = case.verdict.decision
        if decision.level < 2:
            why = "; ".join(f"{t.id}: {t.message}" for t in decision.triggers if t.ceiling < 2)
            self._blocked(approval, "policy_changed", f"OPA now says level {decision.level}: {why}")
            return
        if plan_hash(case.action) != approval.plan_hash:
            self._blocked(approval, "plan_changed", "the planned action changed since it was approved")
            return
        if decision.change_record_required or approval.request.change_id:
            try:
                if self.changes.for_decision(approval.decision_id) is None:
                    self.changes.open(
                        case.decision_id, case.action, decision.triggers, case.briefing, case.summary
                    )
                self.changes.ready(approval.decision_id)
            except ChangeSystemUnavailable as exc:
                self._blocked(approval, "change_system_unavailable", str(exc))
                return
        outcome = self.execute(case)
        self.approvals.finish_execution(approval.id, outcome)
        self.audit.append(
            "outcome",
            {
                "decision_id": approval.decision_id,
                "approval_id": approval.id,
                "fingerprint": case.alert.fingerprint,
                "outcome": outcome,
                "level": 2,
            },
        )
        approver = approval.decided_by.name if approval.decided_by else "a human"
        self.changes.end(approval.decision_id, case.action, outcome, f"approved by {approver}")

    def _recheck(self, approval: Approval) -> Case:
        """The approved case as it stands now: context gathered again, OPA asked again (audited)."""
        alert = self._alert(approval.alert_id)
        context = gather(alert, datetime.now(UTC), self.policy.sources)
        policy_input = context.policy_input()
        verdict = decide(self.policy.opa, policy_input, context.health_ceiling, context.problems)
        decision, action = verdict.decision, ProposedAction.from_policy_input(policy_input)
        self.audit.append(
            "approval_recheck",
            {
                "approval_id": approval.id,
                "decision_id": approval.decision_id,
                "level": decision.level,
                "triggers": [t.to_json() for t in decision.triggers],
                "input_hash": verdict.input_hash,
                "policy_version": decision.policy.version,
                "plan_hash": plan_hash(action),
            },
        )
        briefing = Briefing.from_context(context)
        summary = context.diagnosis.summary
        return Case(alert, approval.decision_id, verdict, action, summary, briefing, approval.alert_id)

    def _blocked(self, approval: Approval, reason: str, message: str) -> None:
        """An approved action not executed, and why; its change record is cancelled. One a
        stop interrupted after the action was sent (the ledger has it) is ended by that
        execution's recovery, with its outcome."""
        self.approvals.finish_execution(approval.id, f"blocked: {reason}")
        if reason != "interrupted":
            why = f"approved but not executed ({reason}): {message}"
            self.changes.cancel_for([approval.decision_id], why)
        elif Ledger(self.store).get(approval.decision_id) is None:
            why = "the agent stopped before the approved action was sent; nothing was changed"
            self.changes.cancel_for([approval.decision_id], why)
        self.audit.append(
            "approval_not_executed",
            {
                "approval_id": approval.id,
                "decision_id": approval.decision_id,
                "reason": reason,
                "message": message,
            },
        )
        details = {
            "decision_id": approval.decision_id,
            "action": approval.request.action.to_json(),
            "detail": f"approved but not executed ({reason}): {message}",
            "level": 2,
        }
        self.outbox.post(*self.messages.event("not_executed", approval.request.summary, details))

    def _alert(self, alert_id: int) -> Alert:
        row = self.store.transact(
            lambda db: db.execute("SELECT alert FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        )
        return Alert.from_json(json.loads(row[0]))


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _label(record: ChangeRecord | None) -> str | None:
    """A change record as the approver is shown it: id, state and ServiceNow number."""
    if record is None:
        return None
    number = f", {record.external_number}" if record.external_number else ""
    return f"{record.id} ({record.state}{number})"


def _request(case: Case, plan: str, change: ChangeRecord | None) -> Request:
    """What the approver is asked: the action, its plan, and the decision's reasons."""
    decision, briefing = case.verdict.decision, case.briefing
    return Request(
        case.action,
        plan,
        case.summary,
        decision.level,
        decision.triggers,
        decision.policy.version,
        briefing,
        asset_classes(briefing.regulated, briefing.frameworks),
        change.id if change else None,
        case.alert.fingerprint,
    )
