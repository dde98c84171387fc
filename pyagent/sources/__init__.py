"""Stage 2's sources: where the facts the policy needs come from.

One small module per external system; each sits behind a ``typing.Protocol`` here
with only the method :func:`pyagent.context.gather` calls, and answers with a frozen
result. A source that cannot know a fact answers with its *worst case* (the value
that makes the decision safer) and says why in ``problems``; it never raises for
a missing or broken backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Protocol

from pyagent.alerts import Alert

DEFAULT_TARGET_LABELS = ("deployment", "service", "job")
"""Alert labels naming the target, tried in order (with the ``namespace`` label)."""

DEFAULT_SHARED_NAMESPACES = ("argocd", "monitoring", "istio-system")
"""Namespaces whose workloads are shared infrastructure (Argo CD, Prometheus, Istio)."""

DEFAULT_SHARED_LABELS = (
    "app.kubernetes.io/part-of=argocd",
    "app.kubernetes.io/part-of=istio",
    "app.kubernetes.io/name=prometheus",
    "escalation.io/shared-infrastructure=true",
)
"""``key=value`` labels (on a Deployment or its namespace) that mark shared infrastructure."""

NO_ACTION = "no_action"
"""The action type proposed when nothing is known: not in the action catalog, so the policy caps it."""

WORST_CASE_SERVICES = 100
"""Services touched when the target is unknown: anything above the policy's limit of 1."""

WORST_CASE_ACTIONS = 1_000_000
"""Autonomous actions in the window when they cannot be counted: above any rate limit."""

ALL_NAMESPACES = "*"
"""Added to the namespaces touched when the target is unknown: it may reach any namespace."""


@dataclass(frozen=True)
class Target:
    """What an action would act on."""

    kind: str
    namespace: str
    name: str
    environment: str
    hpa_managed: bool
    replicas: int


@dataclass(frozen=True)
class InventoryFacts:
    """Blast radius, error budget and regulatory facts about an alert's target."""

    target: Target
    stateless: bool
    services: int
    namespaces: tuple[str, ...]
    replica_fraction: float
    traffic_fraction: float
    shared_infrastructure: bool
    regulated: bool
    frameworks: tuple[str, ...]
    error_budget_remaining: float
    problems: tuple[str, ...] = ()
    service: str = ""  # the service the target belongs to, when the inventory knows it
    # how the facts were found (source, strategy, HPA, owner, ...), for the audit record
    details: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def worst_case(
        cls, alert: Alert, problem: str, target_labels: tuple[str, ...] = DEFAULT_TARGET_LABELS
    ) -> InventoryFacts:
        """Every fact at its most dangerous, for a target the inventory cannot describe."""
        namespace = alert.labels.get("namespace") or "unknown"
        named = next((alert.labels[k] for k in target_labels if alert.labels.get(k)), "")
        target = Target(
            kind="Deployment" if named else "Unknown",
            namespace=namespace,
            name=named or alert.name or "unknown",
            environment="production",
            hpa_managed=False,
            replicas=0,
        )
        return cls(
            target=target,
            stateless=False,
            services=WORST_CASE_SERVICES,
            namespaces=(namespace, ALL_NAMESPACES),
            replica_fraction=1.0,
            traffic_fraction=1.0,
            shared_infrastructure=True,
            regulated=True,
            frameworks=("unknown",),
            error_budget_remaining=0.0,
            problems=(problem,),
        )


@dataclass(frozen=True)
class HistoryFacts:
    """What incident history says about a pattern and the action proposed for it."""

    occurrences: int
    consistent_outcomes: bool
    last_suboptimal_at: str | None
    false_positive_rate_7d: float
    problems: tuple[str, ...] = ()

    @classmethod
    def worst_case(cls, problem: str) -> HistoryFacts:
        """Never seen, inconsistent, and every recommendation a false positive."""
        return cls(
            occurrences=0,
            consistent_outcomes=False,
            last_suboptimal_at=None,
            false_positive_rate_7d=1.0,
            problems=(problem,),
        )


@dataclass(frozen=True)
class Diagnosis:
    """What the diagnoser thinks happened and what it proposes to do."""

    available: bool
    pattern_id: str
    known: bool
    action_type: str
    replicas_delta: int
    confidence: float
    summary: str
    evidence: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    problems: tuple[str, ...] = ()
    # how the confidence was computed (formula version and every component), for the audit
    components: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    analysis: str | None = None  # an investigator's text for humans; never raises confidence
    notes: tuple[str, ...] = ()  # what went wrong without lowering autonomy (e.g. no analysis)

    def confidence_record(self) -> dict[str, object]:
        """The confidence with how it was computed, as decisions record it."""
        return {"value": self.confidence, **self.components}

    @classmethod
    def novel(
        cls, alert: Alert, summary: str, problems: tuple[str, ...] = (), *, available: bool = True
    ) -> Diagnosis:
        """No known pattern: id ``novel:<alertname>``, no action, no confidence."""
        return cls(
            available=available,
            pattern_id=f"novel:{alert.name or 'unknown'}",
            known=False,
            action_type=NO_ACTION,
            replicas_delta=0,
            confidence=0.0,
            summary=summary,
            problems=problems,
        )

    @classmethod
    def unavailable(cls, alert: Alert, problem: str) -> Diagnosis:
        """No diagnosis at all: the policy sends this to level 0."""
        return cls.novel(alert, "no diagnosis: the diagnoser failed", (problem,), available=False)

    @classmethod
    def untrusted(cls, alert: Alert, reason: str) -> Diagnosis:
        """No diagnosis by choice (not a failure): the policy sends this to level 0."""
        return cls.novel(alert, f"no diagnosis: {reason}", available=False)


@dataclass(frozen=True)
class GuardrailFacts:
    """The operator's kill switch and the autonomous actions already taken in the window."""

    kill_switch: bool
    autonomous_actions_in_window: int
    problems: tuple[str, ...] = ()

    @classmethod
    def worst_case(cls, problem: str) -> GuardrailFacts:
        """Kill switch on and the rate limit exhausted."""
        return cls(kill_switch=True, autonomous_actions_in_window=WORST_CASE_ACTIONS, problems=(problem,))


@dataclass(frozen=True)
class BudgetFacts:
    """How much of a service's SLO error budget remains (1 untouched, 0 or less exhausted)."""

    remaining: float
    problems: tuple[str, ...] = ()

    @classmethod
    def worst_case(cls, problem: str) -> BudgetFacts:
        """The budget taken as exhausted: the policy freezes autonomy (tier 3)."""
        return cls(remaining=0.0, problems=(problem,))


class ErrorBudgetSource(Protocol):
    def remaining(self, service: str, namespace: str, now: datetime) -> BudgetFacts: ...


class InventorySource(Protocol):
    def lookup(self, alert: Alert) -> InventoryFacts: ...


class HistorySource(Protocol):
    def stats(self, pattern_id: str, action_type: str, now: datetime) -> HistoryFacts: ...


class Diagnoser(Protocol):
    def diagnose(self, alert: Alert) -> Diagnosis: ...


class GuardrailSource(Protocol):
    def state(self, now: datetime) -> GuardrailFacts: ...
