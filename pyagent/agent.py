"""The pipeline, wired: validate -> gather context -> ask OPA -> clamp -> dispatch -> audit.

``intake`` records alerts durably and queues them; a worker thread decides whatever is
queued as one batch and dispatches it. Levels 3 and 4 are carried out on execution threads
of their own (as many as ``max_concurrent_actions``), so verifying a rollout never holds up
deciding the next alerts. Alerts recorded but not decided when the agent stopped are queued
again on ``start``.
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
from pyagent.audit import AuditLog, rfc3339
from pyagent.briefing import Briefing
from pyagent.context import Context, Sources, gather_many
from pyagent.dispatch import Case, Hands, acts_without_asking, dispatch_many
from pyagent.errors import HistoryError
from pyagent.executors import ProposedAction
from pyagent.metrics import Metrics
from pyagent.opa import OpaClient
from pyagent.policy import Question, Verdict, decide_many
from pyagent.sources.history_sqlite import NewIncident
from pyagent.store import Store, StoredAlert

log = logging.getLogger("pyagent.agent")


def _intake_record(stored: StoredAlert) -> tuple[str, dict[str, Any]]:
    """The audit record of an alert taken in: written with the first record of what was done
    with it, so that the webhook's answer waits for one fsync (the store's), not two."""
    alert = stored.alert
    return (
        "intake",
        {
            "alert_id": stored.id,
            "fingerprint": alert.fingerprint,
            "group_key": alert.group_key,
            "status": alert.status,
            "truncated_alerts": alert.truncated_alerts,
            "received_at": rfc3339(datetime.fromisoformat(stored.received_at)),
        },
    )


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
        workers: int = 1,
        batch_size: int = 64,
        executions: int = 4,
    ) -> None:
        self.store, self.audit, self.opa, self.sources = store, audit, opa, sources
        self.hands, self.metrics, self.clock, self.workers = hands, metrics, clock, workers
        self.batch_size = batch_size  # alerts decided with one OPA request, at most
        # levels 3 and 4 execute and verify on threads of their own, so a rollout that takes
        # minutes to verify never holds up deciding the alerts behind it
        self.executions = executions
        self._to_execute: queue.Queue[tuple[Case, str | None] | None] = queue.Queue()
        self._queue: queue.Queue[StoredAlert | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._executors: list[threading.Thread] = []
        self._idle = threading.Condition()
        self._busy = 0

    def intake(self, delivery: Delivery) -> tuple[int, int]:
        """Record a delivery durably, queue its new alerts; (accepted, duplicates)."""
        new = self.store.record_delivery(delivery)
        for stored in new:
            self._put(stored)
        return len(new), len(delivery.alerts) - len(new)

    def _put(self, stored: StoredAlert) -> None:
        self._busy_more(1)
        self._queue.put(stored)

    def _busy_more(self, count: int) -> None:
        """Count alerts queued, being decided or executing; :meth:`drain` waits for none."""
        with self._idle:
            self._busy += count
            if not self._busy:
                self._idle.notify_all()

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
        for index in range(self.executions):
            thread = threading.Thread(target=self._execute, name=f"pyagent-execution-{index}", daemon=True)
            thread.start()
            self._executors.append(thread)

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
        for _ in self._executors:
            self._to_execute.put(None)
        for thread in self._executors:  # one still verifying is resumed at the next start
            thread.join(timeout=10)
        self._executors.clear()

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
            except Exception as exc:  # noqa: BLE001 - a bug must not end the worker thread
                for stored in batch:
                    self._failed(stored.id, exc)
            finally:
                self._busy_more(-len(batch))
            if stop:
                return

    def process_batch(self, batch: list[StoredAlert]) -> None:
        """Decide the alerts with one question to OPA, then act on each in order.

        Each durable step is taken once for the whole batch: the decisions are recorded with
        one commit and audited with one fsync before any is acted on, the new incidents go
        to history in one transaction, and the outcomes are audited together at the end.
        An alert whose processing fails before its decision is recorded stays pending (it
        is retried at the next start); a failure after that is logged and counted as an
        error. Neither stops the others."""
        prepared = self._prepare(batch)
        if not prepared:
            return
        try:
            cases = self._record(prepared, self._decide([p.question for p in prepared]))
        except Exception as exc:  # noqa: BLE001 - e.g. the audit log failed: nothing is acted on
            for ready in prepared:
                self._failed(ready.stored.id, exc)
            return
        executing = [(c, p) for c, p in cases if acts_without_asking(c)]
        for case, history_problem in executing:
            self._busy_more(1)
            self._to_execute.put((case, history_problem))
        telling = [(c, p) for c, p in cases if not acts_without_asking(c)]
        done = dispatch_many([case for case, _ in telling], self.hands)
        self._audit_outcomes(list(zip(telling, done, strict=True)))

    def _execute(self) -> None:
        """Carry out level-3 and level-4 cases one at a time; executions record their own
        outcome in history, and the audit gets the outcome record when it is known."""
        while (item := self._to_execute.get()) is not None:
            case, history_problem = item
            try:
                [outcome] = dispatch_many([case], self.hands)
                self._audit_outcomes([((case, history_problem), outcome)])
            finally:
                self._busy_more(-1)

    def _audit_outcomes(self, done: list[tuple[tuple[Case, str | None], str | Exception]]) -> None:
        outcomes: list[tuple[str, dict[str, Any]]] = []
        for (case, history_problem), outcome in done:
            if isinstance(outcome, Exception):
                self._failed(case.alert_id, outcome)
                continue
            outcomes.append(
                (
                    "outcome",
                    {
                        "decision_id": case.decision_id,
                        "fingerprint": case.alert.fingerprint,
                        "outcome": outcome,
                        "level": case.verdict.decision.level,
                        "history_problem": history_problem,
                    },
                )
            )
        try:
            self.audit.append_many(outcomes)
        except Exception as exc:  # noqa: BLE001 - the actions are done; their outcomes are not audited
            for (case, _), _outcome in done:
                self._failed(case.alert_id, exc)

    def _record(self, prepared: list[_Prepared], verdicts: list[Verdict]) -> list[tuple[Case, str | None]]:
        """Record and audit the batch's decisions and open their incidents in history; the
        cases to dispatch, each with the problem history had, if any."""
        recorded = self.store.record_decisions(
            [(p.stored, v.decision.to_json(), v.input_hash) for p, v in zip(prepared, verdicts, strict=True)]
        )
        decided: list[tuple[_Prepared, Verdict, str, bool]] = []
        for ready, verdict, result in zip(prepared, verdicts, recorded, strict=True):
            if isinstance(result, Exception):
                self._failed(ready.stored.id, result)
            elif result is not None:  # None: decided by another worker already
                decided.append((ready, verdict, *result))
        self.audit.append_many(
            [
                record
                for ready, verdict, decision_id, _ in decided
                for record in (
                    _intake_record(ready.stored),
                    self._decision_record(ready, verdict, decision_id),
                )
            ]
        )
        incidents, problem = self._open_incidents([r for r, _, _, opened in decided if opened])
        cases = []
        for ready, verdict, decision_id, opened in decided:
            context, stored = ready.context, ready.stored
            case = Case(
                stored.alert,
                decision_id,
                verdict,
                ProposedAction.from_policy_input(ready.question.policy_input),
                context.diagnosis.summary,
                Briefing.from_context(context),
                stored.id,
                incidents.get(stored.id),
            )
            cases.append((case, problem if opened else None))
        return cases

    def _open_incidents(self, opened: list[_Prepared]) -> tuple[dict[int, int], str | None]:
        """The history incident of each newly opened alert, by alert id, and the problem if
        history could not record them."""
        if not opened:
            return {}, None
        new = [
            NewIncident(
                p.stored.alert.fingerprint,
                p.context.diagnosis.pattern_id,
                p.stored.alert.name,
                p.context.now,
                p.stored.alert.labels,
                p.stored.alert.annotations,
            )
            for p in opened
        ]
        try:
            ids = self.sources.history.record_incidents(new)
        except HistoryError as exc:
            self.metrics.errors.labels("history").inc()
            return {}, str(exc)
        return {p.stored.id: incident_id for p, incident_id in zip(opened, ids, strict=True)}, None

    @contextlib.contextmanager
    def _failures_logged(self, alert_id: int) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - logged and counted; the batch goes on
            self._failed(alert_id, exc)

    def _failed(self, alert_id: int, exc: Exception) -> None:
        log.error("processing alert %s failed", alert_id, exc_info=exc)
        self.metrics.errors.labels(type(exc).__name__).inc()

    def _prepare(self, batch: list[StoredAlert]) -> list[_Prepared]:
        """Close resolved alerts, skip those resolved before they were decided; gather the
        context of the others, at one moment."""
        firing: list[StoredAlert] = []
        for stored in batch:
            with self._failures_logged(stored.id):
                if self._still_firing(stored):
                    firing.append(stored)
        try:
            contexts = gather_many([stored.alert for stored in firing], self.clock(), self.sources)
        except Exception as exc:  # noqa: BLE001 - a bug in a source: these stay pending, the worker goes on
            for stored in firing:
                self._failed(stored.id, exc)
            return []
        return [
            _Prepared(
                stored, context, Question(context.policy_input(), context.health_ceiling, context.problems)
            )
            for stored, context in zip(firing, contexts, strict=True)
        ]

    def _still_firing(self, stored: StoredAlert) -> bool:
        """False for a resolved alert (its incident is closed) and for one whose resolved
        notification is already recorded (nothing to act on); both are audited."""
        alert = stored.alert
        if alert.status == "resolved":
            self.store.close_incident(stored)
            closed = {"alert_id": stored.id, "fingerprint": alert.fingerprint}
            self.audit.append_many([_intake_record(stored), ("resolved", closed)])
            return False
        if self.store.close_if_resolved(stored):
            skipped = {
                "alert_id": stored.id,
                "fingerprint": alert.fingerprint,
                "reason": "the alert resolved before it was decided; nothing to act on",
            }
            self.audit.append_many([_intake_record(stored), ("skipped", skipped)])
            return False
        return True

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

    @staticmethod
    def _decision_record(ready: _Prepared, verdict: Verdict, decision_id: str) -> tuple[str, dict[str, Any]]:
        stored, context, policy_input = ready.stored, ready.context, ready.question.policy_input
        alert, decision = stored.alert, verdict.decision
        return (
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
