"""The pipeline, wired: validate -> gather context -> ask OPA -> clamp -> dispatch -> audit.

``intake`` records alerts durably and queues them; worker threads ``process`` each one.
Alerts recorded but not decided when the agent stopped are queued again on ``start``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from pyagent.policy import Question, Verdict, decide_many
from pyagent.store import Store, StoredAlert

log = logging.getLogger("pyagent.agent")


@dataclass(frozen=True)
class _Prepared:
    """An alert ready to be decided: its context and the question for OPA."""

    stored: StoredAlert
    context: Context
    question: Question


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
        batch_size: int = 16,
    ) -> None:
        self.store, self.audit, self.opa, self.sources = store, audit, opa, sources
        self.hands, self.metrics, self.clock, self.workers = hands, metrics, clock, workers
        self.batch_size = batch_size  # alerts decided with one OPA request, at most
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
        for stored in self.store.pending():
            self._put(stored)
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"pyagent-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

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
        while (first := self._queue.get()) is not None:
            batch = [first]
            stop = False
            while len(batch) < self.batch_size:  # whatever else is queued now goes in one OPA request
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            try:
                self.process_batch(batch)
            finally:
                with self._idle:
                    self._busy -= len(batch)
                    self._idle.notify_all()
            if stop:
                return

    def process(self, stored: StoredAlert) -> None:
        """Decide and act on one recorded alert, auditing each step before acting on it."""
        self.process_batch([stored])

    def process_batch(self, batch: list[StoredAlert]) -> None:
        """Decide the alerts with one question to OPA, then act on each in order.

        An alert whose processing fails stays pending (it is retried at the next start)
        and does not stop the others."""
        prepared: list[_Prepared] = []
        for stored in batch:
            with self._failures_logged(stored):
                if (ready := self._prepare(stored)) is not None:
                    prepared.append(ready)
        if not prepared:
            return
        verdicts = self._decide([p.question for p in prepared])
        for ready, verdict in zip(prepared, verdicts, strict=True):
            with self._failures_logged(ready.stored):
                self._conclude(ready, verdict)

    @contextlib.contextmanager
    def _failures_logged(self, stored: StoredAlert) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # the alert stays pending and is retried at the next start
            log.exception("processing alert %s failed", stored.id)
            self.metrics.errors.labels(type(exc).__name__).inc()

    def _prepare(self, stored: StoredAlert) -> _Prepared | None:
        """Close a resolved alert, skip one resolved before it was decided; else gather its context."""
        alert = stored.alert
        if alert.status == "resolved":
            self.store.close_incident(stored)
            self.audit.append("resolved", {"alert_id": stored.id, "fingerprint": alert.fingerprint})
            return None
        if self.store.close_if_resolved(stored):
            self.audit.append(
                "skipped",
                {
                    "alert_id": stored.id,
                    "fingerprint": alert.fingerprint,
                    "reason": "the alert resolved before it was decided; nothing to act on",
                },
            )
            return None
        context = gather(alert, self.clock(), self.sources)
        policy_input = context.policy_input()
        return _Prepared(stored, context, Question(policy_input, context.health_ceiling, context.problems))

    def _conclude(self, ready: _Prepared, verdict: Verdict) -> None:
        """Record the decision, then dispatch it and record the outcome."""
        stored, context, policy_input = ready.stored, ready.context, ready.question.policy_input
        alert = stored.alert
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

    def _decide(self, questions: list[Question]) -> list[Verdict]:
        started = time.perf_counter()
        verdicts = decide_many(self.opa, questions)
        self.metrics.opa_latency.observe(time.perf_counter() - started)
        self.metrics.opa_batch.observe(len(questions))
        for verdict in verdicts:
            self.metrics.decisions.labels(str(verdict.decision.level)).inc()
            for trigger in verdict.decision.triggers:
                self.metrics.triggers.labels(trigger.id).inc()
            if verdict.fallback:
                self.metrics.errors.labels(verdict.fallback).inc()
        return verdicts

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
