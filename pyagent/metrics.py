"""Prometheus metrics, on a registry passed in (tests hand in their own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "pyagent_webhook_requests", "Webhook requests by HTTP status", ["status"], registry=self.registry
        )
        self.decisions = Counter(
            "pyagent_decisions", "Decisions by autonomy level", ["level"], registry=self.registry
        )
        self.triggers = Counter("pyagent_triggers", "Fired triggers by id", ["id"], registry=self.registry)
        self.errors = Counter("pyagent_errors", "Errors by kind", ["kind"], registry=self.registry)
        self.opa_latency = Histogram(
            "pyagent_opa_request_seconds",
            "Time to get a decision from OPA",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
