"""The pipeline, wired: validate -> gather context -> ask OPA -> clamp -> dispatch -> audit.

``intake`` records alerts durably and queues them; a worker thread decides whatever is
queued as one batch and dispatches it. When a worker is idle, a delivery's firing alerts
are handed to it before their commit: it gathers their context and asks OPA while intake
fsyncs, and decides each only once intake says it is recorded and new. Levels 3 and 4 are
carried out on execution threads of their own (as many as ``max_concurrent_actions``), so
verifying a rollout never holds up deciding the next alerts. Alerts recorded but not decided
when the agent stopped are queued again on ``start``, and so are those decided whose
decision took no durable step (no approval, execution or outcome recorded): their decision
is dropped, and audited as such.

The alerts of one batch are gathered before any of them is recorded, so they do not see
each other in history: fewer occurrences and a pattern still novel only lower autonomy. The
rate limit, where a missing count would raise it, counts every autonomous decision not yet
in history, and the batch's own in order (see :mod:`pyagent.inflight`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyagent.alerts import Alert, Delivery
from pyagent.audit import AuditLog
from pyagent.batching import take_batch
from pyagent.briefing import Briefing
from pyagent.context import Context, Sources, gather_many
from pyagent.dispatch import Case, Hands, autonomous, dispatch_many
from pyagent.errors import HistoryError
from pyagent.executors import ProposedAction
from pyagent.metrics import Metrics
from pyagent.opa import OpaClient
from pyagent.policy import Question, Verdict, decide_many
from pyagent.records import decision_record, intake_record
from pyagent.sources.history_sqlite import NewIncident
from pyagent.store import Store, StoredAlert

log = logging.getLogger("pyagent.agent")


@dataclass(frozen=True)
class _Prepared:
    """An alert ready to be decided: its context and the question for OPA."""

    stored: StoredAlert
    context: Context
    question: Question

    @classmethod
    def of(cls, stored: StoredAlert, context: Context) -> _Prepared:
        return cls(stored, context, _question(context))

    def counting_also(self, decided: int) -> _Prepared:
        """Asked again with ``decided`` more autonomous actions in the rate-limit window."""
        return self if not decided else _Prepared.of(self.stored, self.context.counting_also(decided))


_Decided = tuple[_Prepared, Verdict]


@dataclass(frozen=True)
class _Arriving:
    """A firing alert handed to an idle worker while intake commits its delivery. The worker
    gathers its context and asks OPA meanwhile, then waits for ``recorded``: the alert as
    stored once the commit is durable, or None when there is nothing to decide (a
    re-delivery, or a commit that failed, for which the webhook answered 503)."""

    alert: Alert
    recorded: Future[StoredAlert | None]


# what the workers take off the queue: an alert recorded, or one still being committed
_Item = StoredAlert | _Arriving
_take_batch: Callable[[queue.Queue[_Item | None], int], tuple[list[_Item], bool]] = take_batch


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
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._in_flight = hands.in_flight  # dispatch releases an action once history has it
        self._threads: list[threading.Thread] = []
        self._executors: list[threading.Thread] = []
        self._idle = threading.Condition()
        self._busy = 0
        self._deciding = 0  # alerts queued or being decided; at 0, a delivery is handed over early
        metrics.waiting.set_function(lambda: self._deciding)

    def intake(self, delivery: Delivery) -> tuple[int, int]:
        """Record a delivery durably, queue its new alerts; (accepted, duplicates)."""
        early = self._hand_over_early(delivery)
        try:
            new = self.store.record_delivery(delivery)
        except BaseException:
            for arriving in early:
                arriving.recorded.set_result(None)
            raise
        by_key = {stored.alert.delivery_key: stored for stored in new}
        for arriving in early:  # a second copy of an alert in one delivery gets None: nothing new
            arriving.recorded.set_result(by_key.pop(arriving.alert.delivery_key, None))
        for stored in by_key.values():
            self._put(stored)
        return len(new), len(delivery.alerts) - len(new)

    def _hand_over_early(self, delivery: Delivery) -> list[_Arriving]:
        """Queue the delivery's firing alerts before their commit when nothing else is queued or
        being decided: the commit's fsync and the webhook's answer then overlap the worker's
        gathering and its wait for OPA, instead of coming before them. Under load, alerts are
        queued once recorded, so a re-delivery never costs a question to OPA then."""
        with self._idle:
            if self._deciding:
                return []
        early = [_Arriving(alert, Future()) for alert in delivery.alerts if alert.status == "firing"]
        for arriving in early:
            self._put(arriving)
        return early

    def _put(self, item: _Item) -> None:
        self._busy_more(1, deciding=True)
        self._queue.put(item)

    def _busy_more(self, count: int, *, deciding: bool = False) -> None:
        """Count alerts queued, being decided or executing; :meth:`drain` waits for none."""
        with self._idle:
            self._busy += count
            if deciding:  # queued or being decided, not executing
                self._deciding += count
            if not self._busy:
                self._idle.notify_all()

    def health(self) -> dict[str, bool]:
        return {"opa": self.opa.healthy(), "store": self.store.healthy()}

    def start(self) -> None:
        """Start the workers and queue every alert recorded but not yet decided, and every
        alert whose decision was never carried out (see :meth:`_decide_again`); the change
        system is told of the change records cancelled and not yet filed as such."""
        self._decide_again()
        self.hands.changes.file_cancellations()
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

    def _decide_again(self) -> None:
        """Drop the decisions the agent recorded but never carried out, so that their alerts
        are decided anew: it stopped, or the audit failed, between a decision's commit and its
        first durable step (an approval, an execution, an outcome). Nothing was done for
        them, and the audit says so before the alert's new decision; a change record opened
        for one is cancelled."""
        unfinished = self.store.not_carried_out()
        if not unfinished:
            return
        self.audit.append_many(
            [
                (
                    "decision_abandoned",
                    {
                        "decision_id": decision_id,
                        "alert_id": stored.id,
                        "fingerprint": stored.alert.fingerprint,
                        "level": level,
                        "reason": "recorded but never carried out before the agent stopped; decided again",
                    },
                )
                for stored, decision_id, level in unfinished
            ]
        )
        dropped = [decision_id for _, decision_id, _ in unfinished]
        self.hands.changes.cancel_for(dropped, "its decision was dropped before anything was done under it")
        self.store.reopen(dropped)
        log.warning("%d decisions were never carried out; their alerts are decided again", len(unfinished))

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
        """Take whatever is queued (up to ``batch_size``), decide it with one OPA request, and
        carry it out."""
        stop = False
        while not stop:
            batch, stop = _take_batch(self._queue, self.batch_size)
            try:
                self._carry_out(self._decide(self._prepare(batch)))
            except Exception as exc:  # noqa: BLE001 - a bug must not end the worker thread
                for item in batch:  # one decided stays counted as in flight: the safe side of a bug
                    self._failed(_label(item), exc)
            finally:
                self._busy_more(-len(batch), deciding=True)

    def _carry_out(self, decided: list[_Decided]) -> None:
        """Record the decisions, then act on each in order.

        Each durable step is taken once for the whole batch: the decisions are recorded with
        one commit and audited with one fsync before any is acted on, the new incidents go
        to history in one transaction, and the outcomes are audited together at the end.
        An alert whose processing fails before its decision is recorded stays pending (it
        is retried at the next start); a failure after that is logged and counted as an
        error, and a decision that never took its first durable step is decided again at
        the next start. Neither stops the others."""
        if not decided:
            return
        try:
            cases = self._record(decided)
        except Exception as exc:  # noqa: BLE001 - e.g. the audit log failed: nothing is acted on
            for ready, _ in decided:
                self._failed(ready.stored.id, exc)
                self._in_flight.done(ready.stored.id)
            return
        recorded = {case.alert_id for case, _ in cases}
        for ready, _ in decided:
            if ready.stored.id not in recorded:  # failed, or decided by another worker: never executed
                self._in_flight.done(ready.stored.id)
        executing = [(c, p) for c, p in cases if c.autonomous]
        for case, history_problem in executing:
            self._busy_more(1)
            self._to_execute.put((case, history_problem))
        telling = [(c, p) for c, p in cases if not c.autonomous]
        done = dispatch_many([case for case, _ in telling], self.hands)
        self._audit_outcomes(list(zip(telling, done, strict=True)))

    def _execute(self) -> None:
        """Carry out level-3 and level-4 cases one at a time; executions record their own
        outcome in history, and the audit gets the outcome record when it is known."""
        while (item := self._to_execute.get()) is not None:
            case, history_problem = item
            try:
                [outcome] = dispatch_many([case], self.hands)
                self._in_flight.done(case.alert_id)  # refused, or history could not record it
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
            # a level-2 decision was marked by the transaction that created its approval
            self.store.carried_out([str(f["decision_id"]) for _, f in outcomes if f["level"] != 2])
        except Exception as exc:  # noqa: BLE001 - the actions are done; a restart decides those not marked again
            for (case, _), _outcome in done:
                self._failed(case.alert_id, exc)

    def _record(self, batch: list[_Decided]) -> list[tuple[Case, str | None]]:
        """Record and audit the batch's decisions and open their incidents in history; the
        cases to dispatch, each with the problem history had, if any."""
        recorded = self.store.record_decisions(
            [(p.stored, v.decision.to_json(), v.input_hash) for p, v in batch]
        )
        decided: list[tuple[_Prepared, Verdict, str, bool]] = []
        for (ready, verdict), result in zip(batch, recorded, strict=True):
            if isinstance(result, Exception):
                self._failed(ready.stored.id, result)
            elif result is not None:  # None: decided by another worker already
                decided.append((ready, verdict, *result))
        records: list[tuple[str, dict[str, Any]]] = []
        for ready, verdict, decision_id, _ in decided:
            records.append(intake_record(ready.stored))
            records.append(
                decision_record(
                    ready.stored, ready.context, ready.question.policy_input, verdict, decision_id
                )
            )
        self.audit.append_many(records)
        audited = time.time()
        for ready, *_ in decided:
            self.metrics.decision_latency.observe(audited - _epoch(ready.stored.received_at))
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
    def _failures_logged(self, alert_id: int | str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - logged and counted; the batch goes on
            self._failed(alert_id, exc)

    def _failed(self, alert: int | str, exc: Exception) -> None:
        log.error("processing alert %s failed", alert, exc_info=exc)
        self.metrics.errors.labels(type(exc).__name__).inc()

    def _prepare(self, batch: list[_Item]) -> list[tuple[_Item, Context]]:
        """Close resolved alerts, skip those resolved before they were decided; gather the
        context of the others, at one moment, counting in the rate limit the autonomous
        decisions made and not yet in history (history counts an action once executed).
        An alert still being committed is checked once it is recorded (:meth:`_settled`)."""
        firing: list[_Item] = []
        for item in batch:
            if isinstance(item, _Arriving):
                firing.append(item)
                continue
            with self._failures_logged(item.id):
                if self._still_firing(item):
                    firing.append(item)
        # counted before history is read: an action leaves this count only once history has
        # it, so read in this order it is counted at least once, never missed
        already = self._in_flight.count()
        try:
            contexts = gather_many([item.alert for item in firing], self.clock(), self.sources)
        except Exception as exc:  # noqa: BLE001 - a bug in a source: these stay pending, the worker goes on
            for item in firing:
                self._failed(_label(item), exc)
            return []
        return [
            (item, context.counting_also(already)) for item, context in zip(firing, contexts, strict=True)
        ]

    def _settled(self, item: _Item) -> StoredAlert | None:
        """The alert as recorded, once its commit is durable; None when there is nothing to
        decide: a re-delivery, a delivery that could not be recorded, an alert resolved."""
        if isinstance(item, StoredAlert):
            return item
        stored = item.recorded.result()
        if stored is None:
            return None
        with self._failures_logged(stored.id):
            if self._still_firing(stored):
                return stored
        return None

    def _still_firing(self, stored: StoredAlert) -> bool:
        """False for a resolved alert (its incident is closed) and for one whose resolved
        notification is already recorded (nothing to act on); both are audited."""
        alert = stored.alert
        if alert.status == "resolved":
            self.store.close_incident(stored)
            closed = {"alert_id": stored.id, "fingerprint": alert.fingerprint}
            self.audit.append_many([intake_record(stored), ("resolved", closed)])
            return False
        if self.store.close_if_resolved(stored):
            skipped = {
                "alert_id": stored.id,
                "fingerprint": alert.fingerprint,
                "reason": "the alert resolved before it was decided; nothing to act on",
            }
            self.audit.append_many([intake_record(stored), ("skipped", skipped)])
            return False
        return True

    def _decide(self, gathered: list[tuple[_Item, Context]]) -> list[_Decided]:
        """One OPA request for the batch, with the decisions made as if one after another:
        each autonomous decision this batch makes counts in the rate limit of the alerts
        after it, which are asked again (rarely: only when a batch has two or more
        autonomous decisions). An alert handed over before its commit is decided only once
        recorded, and not at all when it is not new."""
        questions = [_question(context) for _, context in gathered]
        verdicts = self._ask(questions)
        settled: list[_Decided] = []
        for (item, context), question, verdict in zip(gathered, questions, verdicts, strict=True):
            stored = self._settled(item)
            if stored is not None:
                settled.append((_Prepared(stored, context, question), verdict))
        decided: list[_Decided] = []
        earlier = 0
        for asked, first in settled:
            ready, verdict = asked, first
            if earlier and autonomous(first.decision):
                ready = asked.counting_also(earlier)
                [verdict] = self._ask([ready.question])
            if autonomous(verdict.decision):
                earlier += 1
                self._in_flight.add(ready.stored.id)
            decided.append((ready, verdict))
        for _, verdict in decided:
            self.metrics.decisions.labels(str(verdict.decision.level)).inc()
            for trigger in verdict.decision.triggers:
                self.metrics.triggers.labels(trigger.id).inc()
            if verdict.fallback:
                self.metrics.errors.labels(verdict.fallback).inc()
        return decided

    def _ask(self, questions: list[Question]) -> list[Verdict]:
        if not questions:
            return []
        started = time.perf_counter()
        verdicts = decide_many(self.opa, questions)
        self.metrics.opa_latency.observe(time.perf_counter() - started)
        self.metrics.opa_batch.observe(len(questions))
        return verdicts


def _epoch(stamp: str) -> float:
    """Seconds since the epoch of a store timestamp (ISO 8601, UTC)."""
    return datetime.fromisoformat(stamp).timestamp()


def _question(context: Context) -> Question:
    return Question(context.policy_input(), context.health_ceiling, context.problems)


def _label(item: _Item) -> int | str:
    """How a log line names a queued alert: its row id, or its fingerprint before it has one."""
    return item.id if isinstance(item, StoredAlert) else item.alert.fingerprint
