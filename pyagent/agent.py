"""The pipeline, wired: validate -> gather context -> ask OPA -> clamp -> dispatch -> audit.

``intake`` records alerts durably and queues them; worker threads ``process`` each one.
Alerts recorded but not decided when the agent stopped are queued again on ``start``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pyagent.alerts import Delivery
from pyagent.audit import AuditLog
from pyagent.briefing import Briefing
from pyagent.context import Context, Sources, gather
from pyagent.dispatch import Case, Hands, dispatch
from pyagent.errors import HistoryError
from pyagent.executors import ProposedAction
from pyagent.metrics import Metrics
from pyagent.opa import OpaClient
from pyagent.policy import Verdict, decide
from pyagent.store import Store, StoredAlert

log = logging.getLogger("pyagent.agent")


class Agent:
    """Owns the intake queue and the workers; every stage is passed in."""

    def __init__(  # noqa: PLR0913, PLR0917 - the pipeline's stages, passed in
        self,
        store: Store,
        audit: AuditLog,
        opa: OpaClient,
        sources: Sources,
        hands: Hands,
        metrics: Metrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        workers: int = 4,
    ) -> None:
        self.store, self.audit, self.opa, self.sources = store, audit, opa, sources
        self.hands, self.metrics, self.clock, self.workers = hands, metrics, clock, workers
        self._queue: queue.Queue[StoredAlert | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Condition()
        self._busy = 0

    def intake(self, delivery: Delivery) -> tuple[int, int]:
        """Record a delivery durably, queue its new alerts; (accepted, duplicates)."""
        new = self.store.record_delivery(delivery)
        for stored in new:
            self.audit.append(
                "intake",
                {
                    "alert_id": stored.id,
                    "fingerprint": stored.alert.fingerprint,
                    "group_key": stored.alert.group_key,
                    "status": stored.alert.status,
                    "truncated_alerts": stored.alert.truncated_alerts,
                },
            )
            self._put(stored)
        return len(new), len(delivery.alerts) - len(new)

    def _put(self, stored: StoredAlert) -> None:
        with self._idle:
            self._busy += 1
        self._queue.put(stored)

    def health(self) -> dict[str, bool]:
        return {"opa": self.opa.healthy(), "store": self.store.healthy()}

    def start(self) -> None:
        """Start the workers and queue every alert recorded but not yet decided."""
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"pyagent-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        for stored in self.store.pending():
            self._put(stored)

    def drain(self, timeout: float) -> bool:
        """Wait until every queued alert is processed."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def _work(self) -> None:
        while (stored := self._queue.get()) is not None:
            try:
                self.process(stored)
            except Exception as exc:  # an alert stays pending and is retried at the next start
                log.exception("processing alert %s failed", stored.id)
                self.metrics.errors.labels(type(exc).__name__).inc()
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def process(self, stored: StoredAlert) -> None:
        """Decide and act on one recorded alert, auditing each step before acting on it."""
        alert = stored.alert
        if alert.status == "resolved":
            self.store.close_incident(stored)
            self.audit.append("resolved", {"alert_id": stored.id, "fingerprint": alert.fingerprint})
            return
        if self.store.close_if_resolved(stored):
            self.audit.append(
                "skipped",
                {
                    "alert_id": stored.id,
                    "fingerprint": alert.fingerprint,
                    "reason": "the alert resolved before it was decided; nothing to act on",
                },
            )
            return
        context = gather(alert, self.clock(), self.sources)
        policy_input = context.policy_input()
        verdict = self._decide(context, policy_input)
        recorded = self.store.record_decision(stored, verdict.decision.to_json(), verdict.input_hash)
        if recorded is None:
            return  # decided by another worker already
        decision_id, opened = recorded
        self._audit_decision(stored, context, policy_input, verdict, decision_id)
        incident_id, history_problem = None, None
        if opened:
            try:
                incident_id = self.sources.history.record_incident(
                    alert.fingerprint,
                    context.diagnosis.pattern_id,
                    alert.name,
                    context.now,
                    labels=alert.labels,
                    annotations=alert.annotations,
                )
            except HistoryError as exc:
                self.metrics.errors.labels("history").inc()
                history_problem = str(exc)
        action = ProposedAction.from_policy_input(policy_input)
        case = Case(
            alert,
            decision_id,
            verdict,
            action,
            context.diagnosis.summary,
            Briefing.from_context(context),
            stored.id,
            incident_id,
        )
        outcome = dispatch(case, self.hands)  # executions record their own outcome in history
        self.audit.append(
            "outcome",
            {
                "decision_id": decision_id,
                "fingerprint": alert.fingerprint,
                "outcome": outcome,
                "level": verdict.decision.level,
                "history_problem": history_problem,
            },
        )

    def _decide(self, context: Context, policy_input: dict[str, Any]) -> Verdict:
        started = time.perf_counter()
        verdict = decide(self.opa, policy_input, context.health_ceiling, context.problems)
        self.metrics.opa_latency.observe(time.perf_counter() - started)
        self.metrics.decisions.labels(str(verdict.decision.level)).inc()
        for trigger in verdict.decision.triggers:
            self.metrics.triggers.labels(trigger.id).inc()
        if verdict.fallback:
            self.metrics.errors.labels(verdict.fallback).inc()
        return verdict

    def _audit_decision(
        self,
        stored: StoredAlert,
        context: Context,
        policy_input: dict[str, Any],
        verdict: Verdict,
        decision_id: str,
    ) -> None:
        alert, decision = stored.alert, verdict.decision
        self.audit.append(
            "decision",
            {
                "decision_id": decision_id,
                "alert_id": stored.id,
                "fingerprint": alert.fingerprint,
                "group_key": alert.group_key,
                "alert_name": alert.name,
                "target": policy_input["action"]["target"],
                "action": policy_input["action"],
                "input_hash": verdict.input_hash,
                "level": decision.level,
                "name": decision.name,
                "triggers": [t.to_json() for t in decision.triggers],
                "policy_version": decision.policy.version,
                "fallback": verdict.fallback,
                "clamped_from": verdict.clamped_from,
                "context_problems": list(context.problems),
                "diagnosis": context.diagnosis.summary,
                "confidence": context.diagnosis.confidence_record(),
                "analysis": context.diagnosis.analysis,
                "diagnosis_notes": list(context.diagnosis.notes),
                "inventory": dict(context.inventory.details),
                "novelty": context.novelty.record(),
            },
        )
