"""What a human is shown about one decision: the facts behind it, as plain typed data.

Built once from the context when the decision is made, stored with an approval, and
rendered by every channel (Slack, the console, PagerDuty's custom details) the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyagent.context import Context


@dataclass(frozen=True)
class Briefing:
    """The context of a decision that a human needs to judge it."""

    alert_name: str
    service: str
    environment: str
    confidence: float
    replica_fraction: float
    services: int
    namespaces: tuple[str, ...]
    shared_infrastructure: bool
    error_budget_remaining: float
    regulated: bool
    frameworks: tuple[str, ...]
    pattern_id: str
    occurrences: int
    analysis: str | None
    problems: tuple[str, ...]

    @classmethod
    def from_context(cls, context: Context) -> Briefing:
        inventory = context.inventory
        return cls(
            alert_name=context.alert.name or "unknown",
            service=inventory.service or inventory.target.name,
            environment=inventory.target.environment,
            confidence=context.diagnosis.confidence,
            replica_fraction=inventory.replica_fraction,
            services=inventory.services,
            namespaces=tuple(inventory.namespaces),
            shared_infrastructure=inventory.shared_infrastructure,
            error_budget_remaining=inventory.error_budget_remaining,
            regulated=inventory.regulated or bool(inventory.frameworks),
            frameworks=tuple(inventory.frameworks),
            pattern_id=context.diagnosis.pattern_id,
            occurrences=context.history.occurrences,
            analysis=context.diagnosis.analysis,
            problems=tuple(context.problems),
        )

    @property
    def blast_radius(self) -> str:
        """One line: replicas disrupted at once, services and namespaces touched."""
        shared = ", shared infrastructure" if self.shared_infrastructure else ""
        return (
            f"{self.replica_fraction:.0%} of replicas at once, {self.services} service(s), "
            f"namespaces {', '.join(self.namespaces) or 'none'}{shared}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "alert_name": self.alert_name,
            "service": self.service,
            "environment": self.environment,
            "confidence": self.confidence,
            "replica_fraction": self.replica_fraction,
            "services": self.services,
            "namespaces": list(self.namespaces),
            "shared_infrastructure": self.shared_infrastructure,
            "error_budget_remaining": self.error_budget_remaining,
            "regulated": self.regulated,
            "frameworks": list(self.frameworks),
            "pattern_id": self.pattern_id,
            "occurrences": self.occurrences,
            "analysis": self.analysis,
            "problems": list(self.problems),
            "blast_radius": self.blast_radius,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Briefing:
        return cls(
            alert_name=data["alert_name"],
            service=data["service"],
            environment=data["environment"],
            confidence=data["confidence"],
            replica_fraction=data["replica_fraction"],
            services=data["services"],
            namespaces=tuple(data["namespaces"]),
            shared_infrastructure=data["shared_infrastructure"],
            error_budget_remaining=data["error_budget_remaining"],
            regulated=data["regulated"],
            frameworks=tuple(data["frameworks"]),
            pattern_id=data["pattern_id"],
            occurrences=data["occurrences"],
            analysis=data["analysis"],
            problems=tuple(data["problems"]),
        )
