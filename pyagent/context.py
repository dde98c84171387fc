"""Stage 2, the facts: ask every source about one alert and assemble the policy's input document.

:func:`gather` calls the diagnoser, the history, the inventory and the guardrails,
each through its protocol in :mod:`pyagent.sources`. A source that raises is
answered with its worst case and the exception as the reason, so nothing escapes;
a source that reports problems keeps its (worst-case) answer. Either way the
problem is listed, prefixed by the source's name, and :attr:`Context.health_ceiling`
drops to 1: the agent clamps the decision to it after asking OPA. A delivery whose
group Alertmanager truncated (``truncatedAlerts > 0``) is incomplete context too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from pyagent.alerts import Alert
from pyagent.sources import (
    BudgetFacts,
    Diagnoser,
    Diagnosis,
    ErrorBudgetSource,
    GuardrailFacts,
    GuardrailSource,
    HistoryFacts,
    InventoryFacts,
    InventorySource,
)
from pyagent.sources.catalog import ActionCatalog, ActionSpec
from pyagent.sources.history_sqlite import HistorySQLite
from pyagent.sources.novelty import HistoryNovelty, NoveltyFacts, NoveltySource

HEALTHY_CEILING = 4
DEGRADED_CEILING = 1

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """Everything the sources said about one alert, and why any of it is a worst case."""

    now: datetime
    alert: Alert
    diagnosis: Diagnosis
    history: HistoryFacts
    inventory: InventoryFacts
    guardrails: GuardrailFacts
    action: ActionSpec
    problems: tuple[str, ...]
    novelty: NoveltyFacts

    @property
    def health_ceiling(self) -> int:
        """4 when every source was healthy; 1 when any reported a problem."""
        return DEGRADED_CEILING if self.problems else HEALTHY_CEILING

    def counting_also(self, decided: int) -> Context:
        """This context with ``decided`` more autonomous actions in the rate-limit window: ones
        already decided whose actions history has not recorded yet."""
        if not decided:
            return self
        taken = self.guardrails.autonomous_actions_in_window + decided
        return replace(self, guardrails=replace(self.guardrails, autonomous_actions_in_window=taken))

    @property
    def pattern_known(self) -> bool:
        """Known to the catalog, or similar enough to a past incident (see :mod:`pyagent.sources.novelty`)."""
        return self.diagnosis.known or not self.novelty.novel

    def policy_input(self) -> dict[str, Any]:
        """The input document of ``data.escalation.decision`` (DESIGN.md, "The input document")."""
        alert, diagnosis, history, inventory = self.alert, self.diagnosis, self.history, self.inventory
        return {
            "now": self.now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "alert": {
                "name": alert.name or "unknown",
                "fingerprint": alert.fingerprint or "unknown",
                "severity": alert.severity or "none",
                "labels": dict(alert.labels),
            },
            "ai": {
                "available": diagnosis.available,
                "confidence": diagnosis.confidence,
                "false_positive_rate_7d": history.false_positive_rate_7d,
            },
            "pattern": {
                "id": diagnosis.pattern_id,
                "known": self.pattern_known,
                "occurrences": history.occurrences,
                "consistent_outcomes": history.consistent_outcomes,
                "last_suboptimal_at": history.last_suboptimal_at,
            },
            "action": self._action(),
            "blast_radius": {
                "services": inventory.services,
                "namespaces": list(inventory.namespaces),
                "replica_fraction": inventory.replica_fraction,
                "traffic_fraction": inventory.traffic_fraction,
                "shared_infrastructure": inventory.shared_infrastructure,
                "stateless": inventory.stateless,
            },
            "error_budget": {"remaining": inventory.error_budget_remaining},
            "regulatory": {"regulated": inventory.regulated, "frameworks": list(inventory.frameworks)},
            "guardrails": {
                "kill_switch": self.guardrails.kill_switch,
                "autonomous_actions_in_window": self.guardrails.autonomous_actions_in_window,
            },
        }

    def _action(self) -> dict[str, Any]:
        target = self.inventory.target
        seconds = self.action.rollback_seconds
        return {
            "type": self.action.type,
            "target": {
                "kind": target.kind,
                "namespace": target.namespace,
                "name": target.name,
                "environment": target.environment,
                "hpa_managed": target.hpa_managed,
            },
            "idempotent": self.action.idempotent,
            "reversible": self.action.reversible,
            "rollback_seconds": int(seconds) if seconds.is_integer() else seconds,
            "replicas_delta": self.diagnosis.replicas_delta,
            "production_impact": target.environment == "production",
        }


def _ask(call: Callable[[], T], worst: Callable[[str], T]) -> T:
    """The source's answer, or its worst case naming the exception it raised."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - a failing source is a fact (its worst case), never a crash
        return worst(f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Sources:
    """The context sources, one per kind, chosen by configuration (see :mod:`pyagent.app`)."""

    inventory: InventorySource
    history: HistorySQLite  # the agent also records incidents and actions in it
    diagnoser: Diagnoser
    guardrails: GuardrailSource
    catalog: ActionCatalog
    budget: ErrorBudgetSource | None = None  # None: the inventory's error budget
    novelty: NoveltySource | None = None  # None: compared with ``history`` at the default threshold


def gather(alert: Alert, now: datetime, sources: Sources) -> Context:
    """Ask every source about ``alert`` at ``now``. Never raises for a source's failure.

    With a ``budget`` source, the error budget comes from it instead of the inventory.
    """
    [context] = gather_many([alert], now, sources)
    return context


def gather_many(alerts: Sequence[Alert], now: datetime, sources: Sources) -> list[Context]:
    """:func:`gather` for several alerts at one moment, asking each source no more than its
    answers can differ: the guardrails once, the novelty index brought up to date once, the
    history once per pattern and action, the error budget once per service. Within a batch
    these answers cannot differ: nothing the batch does is recorded before all of it is
    decided. The diagnosis and the inventory are asked per alert."""
    asked = _Asked(now, sources)
    assessor = sources.novelty or HistoryNovelty(sources.history)
    try:
        novelties = assessor.assess_many(alerts, now)
    except Exception as exc:  # noqa: BLE001 - a failing source is a fact (its worst case), never a crash
        novelties = [NoveltyFacts.worst_case(f"{type(exc).__name__}: {exc}") for _ in alerts]
    return [asked.context(alert, novelty) for alert, novelty in zip(alerts, novelties, strict=True)]


class _Asked:
    """The answers of one moment, each source asked once per distinct question."""

    def __init__(self, now: datetime, sources: Sources) -> None:
        self.now, self.sources = now, sources
        self.guardrails = _ask(lambda: sources.guardrails.state(now), GuardrailFacts.worst_case)
        self._stats: dict[tuple[str, str], HistoryFacts] = {}
        self._budgets: dict[tuple[str, str], BudgetFacts] = {}

    def stats(self, pattern_id: str, action_type: str) -> HistoryFacts:
        key = (pattern_id, action_type)
        if key not in self._stats:
            history = self.sources.history
            self._stats[key] = _ask(
                lambda: history.stats(pattern_id, action_type, self.now), HistoryFacts.worst_case
            )
        return self._stats[key]

    def budget(self, budget: ErrorBudgetSource, service: str, namespace: str) -> BudgetFacts:
        key = (service, namespace)
        if key not in self._budgets:
            self._budgets[key] = _ask(
                lambda: budget.remaining(service, namespace, self.now), BudgetFacts.worst_case
            )
        return self._budgets[key]

    def context(self, alert: Alert, novelty: NoveltyFacts) -> Context:
        sources, now = self.sources, self.now
        inventory, diagnoser = sources.inventory, sources.diagnoser
        diagnosis = _ask(lambda: diagnoser.diagnose(alert), lambda why: Diagnosis.unavailable(alert, why))
        stats = self.stats(diagnosis.pattern_id, diagnosis.action_type)
        facts = _ask(lambda: inventory.lookup(alert), lambda why: InventoryFacts.worst_case(alert, why))
        budget_problems: tuple[str, ...] = ()
        if sources.budget is not None:
            service, namespace = facts.service or facts.target.name, facts.target.namespace
            reading = self.budget(sources.budget, service, namespace)
            facts = replace(facts, error_budget_remaining=reading.remaining)
            budget_problems = reading.problems
        truncated = alert.truncated_alerts
        problems = (
            *([f"alertmanager: {truncated} alerts of the group were truncated"] if truncated > 0 else []),
            *(f"diagnosis: {p}" for p in diagnosis.problems),
            *(f"history: {p}" for p in stats.problems),
            *(f"inventory: {p}" for p in facts.problems),
            *(f"guardrails: {p}" for p in self.guardrails.problems),
            *(f"error budget: {p}" for p in budget_problems),
            *(f"novelty: {p}" for p in novelty.problems),
        )
        return Context(
            now=now,
            alert=alert,
            diagnosis=diagnosis,
            history=stats,
            inventory=facts,
            guardrails=self.guardrails,
            action=sources.catalog.spec(diagnosis.action_type),
            problems=problems,
            novelty=novelty,
        )
