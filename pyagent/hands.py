"""What dispatch and execution work through: the case acted on, the hands (executor,
channels, store, audit, change desk, history, guardrails), and the audit steps they write."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pyagent.alerts import Alert
from pyagent.approvals import Approval
from pyagent.briefing import Briefing
from pyagent.changes import ChangeDesk, ChangeRecord
from pyagent.contract import Decision
from pyagent.errors import ExecutorError
from pyagent.executors import Executor, ProposedAction
from pyagent.executors.guardrails import Guardrails
from pyagent.inflight import InFlight
from pyagent.ledger import Ledger
from pyagent.notifiers import Notifier
from pyagent.policy import Verdict
from pyagent.store import Store

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
    hands.audit.append(*step_record(decision_id, action, step, **fields))


def step_record(
    decision_id: str, action: ProposedAction, step: str, **fields: Any
) -> tuple[str, dict[str, Any]]:
    return "action_step", {"decision_id": decision_id, "step": step, "action": action.to_json(), **fields}


def case_step(hands: Hands, case: Case, step: str, **fields: Any) -> None:
    audit_step(hands, case.decision_id, case.action, step, fingerprint=case.alert.fingerprint, **fields)


def autonomous(decision: Decision) -> bool:
    """Whether the agent carries the decision out itself (levels 3 and 4) rather than asking
    or telling; such decisions count in the policy's autonomous rate limit."""
    return decision.level >= ABORT_LEVEL


def plan_of(executor: Executor, action: ProposedAction) -> str:
    """The executor's plan, or why it has none (a plan changes nothing, so it never fails the caller)."""
    try:
        return executor.plan(action)
    except Exception as exc:  # noqa: BLE001 - a plan that breaks is reported, never fatal
        return f"no plan: {exc if isinstance(exc, ExecutorError) else f'{type(exc).__name__}: {exc}'}"


def case_details(case: Case, **more: Any) -> dict[str, Any]:
    return {
        "decision_id": case.decision_id,
        "level": case.verdict.decision.level,
        "action": case.action.to_json(),
        "triggers": [t.to_json() for t in case.verdict.decision.triggers],
        **more,
    }
