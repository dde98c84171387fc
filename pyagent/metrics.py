"""Prometheus metrics, on a registry passed in (tests hand in their own).

The AI's quality is read from incident history at each scrape (:class:`AIQuality`):

- ``pyagent_ai_outcomes_total{pattern, outcome}``: every outcome of an AI recommendation
  ever recorded (a counter: history only grows). Outcomes that show the AI was wrong are
  ``false_positive`` (a human rejected the recommendation, or it was marked so),
  ``verification_failed``, ``aborted`` and ``rolled_back``; the shipped rules divide
  them by all outcomes over 7 days (``pyagent:ai_false_positive_rate:rate7d``).
- ``pyagent_ai_false_positive_rate_7d`` and ``pyagent_ai_pattern_false_positive_rate_7d{pattern}``:
  the same rate computed by the agent, overall (what the policy reads as
  ``ai.false_positive_rate_7d``) and per pattern.

A history that cannot be read yields none of these samples (and logs why); the scrape
still succeeds.

The change records ServiceNow does not know as they stand are read from the store at each
scrape (:class:`ChangeBacklog`): ``pyagent_change_records_untold{what="unfiled"}``, open
records it could not take (nothing executes under them), and ``{what="ending"}``, records
that ended here (closed or cancelled) and that it was not yet told of.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pyagent.errors import HistoryError, StoreUnavailable
from pyagent.sources.history_sqlite import FalsePositiveRates

log = logging.getLogger("pyagent.metrics")


class OutcomeHistory(Protocol):
    def outcome_counts(self) -> list[tuple[str, str, int]]: ...

    def false_positive_rates(self, now: datetime) -> FalsePositiveRates: ...


def _families() -> tuple[CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        CounterMetricFamily(
            "pyagent_ai_outcomes", "Outcomes of AI recommendations by pattern", labels=["pattern", "outcome"]
        ),
        GaugeMetricFamily(
            "pyagent_ai_false_positive_rate_7d", "Share of AI recommendations that proved wrong, 7 days"
        ),
        GaugeMetricFamily(
            "pyagent_ai_pattern_false_positive_rate_7d",
            "Share of AI recommendations that proved wrong, 7 days, per pattern",
            labels=["pattern"],
        ),
    )


class AIQuality(Collector):
    """The AI's recorded outcomes and false-positive rates, read from history at each scrape."""

    def __init__(self, history: OutcomeHistory, clock: Callable[[], datetime] | None = None) -> None:
        self.history = history
        self.clock = clock or (lambda: datetime.now(UTC))

    def describe(self) -> Iterator[Metric]:
        yield from _families()

    def collect(self) -> Iterator[Metric]:
        outcomes, overall, by_pattern = _families()
        try:
            counts = self.history.outcome_counts()
            rates = self.history.false_positive_rates(self.clock())
        except HistoryError as exc:
            log.warning("AI quality metrics not available: %s", exc)
            return
        for pattern, outcome, count in counts:
            outcomes.add_metric([pattern, outcome], count)
        overall.add_metric([], rates.overall)
        for pattern, rate in sorted(rates.by_pattern.items()):
            by_pattern.add_metric([pattern], rate)
        yield from (outcomes, overall, by_pattern)


def _backlog_family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "pyagent_change_records_untold",
        "Change records the change system does not know as they stand: not filed, or their ending",
        labels=["what"],
    )


class ChangeBacklog(Collector):
    """The change records ServiceNow does not know as they stand, counted at each scrape."""

    def __init__(self, backlog: Callable[[], Mapping[str, int]]) -> None:
        self.backlog = backlog

    def describe(self) -> Iterator[Metric]:
        yield _backlog_family()

    def collect(self) -> Iterator[Metric]:
        family = _backlog_family()
        try:
            counts = self.backlog()
        except StoreUnavailable as exc:
            log.warning("change record metrics not available: %s", exc)
            return
        for what, count in sorted(counts.items()):
            family.add_metric([what], count)
        yield family


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
        self.opa_batch = Histogram(
            "pyagent_opa_batch_alerts",
            "Alerts decided by one request to OPA (the alerts queued when a worker asked)",
            buckets=(1, 2, 4, 8, 16),
            registry=self.registry,
        )
        self.decision_latency = Histogram(
            "pyagent_decision_seconds",
            "Time from an alert's intake to its decision audited, before it is acted on",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.waiting = Gauge(
            "pyagent_alerts_waiting",
            "Alerts taken in and not yet decided: queued, or being decided",
            registry=self.registry,
        )

    def watch_ai_quality(self, history: OutcomeHistory, clock: Callable[[], datetime] | None = None) -> None:
        """Expose the AI's outcomes and false-positive rates from ``history`` (:class:`AIQuality`)."""
        self.registry.register(AIQuality(history, clock))

    def watch_change_records(self, backlog: Callable[[], Mapping[str, int]]) -> None:
        """Expose the change records the change system does not know (:class:`ChangeBacklog`)."""
        self.registry.register(ChangeBacklog(backlog))
