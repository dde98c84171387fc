"""The pipeline, wired: validate -> gather context -> ask OPA -> clamp -> dispatch -> audit.

``intake`` records alerts durably and queues them; a worker thread decides whatever is
queued as one batch and dispatches it; under load, once the next batch is asked about, so
that the dispatch runs while OPA evaluates. When a worker is idle, a delivery's firing alerts
are handed to it before their commit: it gathers their context and asks OPA while intake
fsyncs, and decides each only once intake says it is recorded and new. Levels 3 and 4 are
carried out on execution threads of their own (as many as ``max_concurrent_actions``), so
verifying a rollout never holds up deciding the next alerts. Alerts recorded but not decided
when the agent stopped are queued again on ``start``, and so are those decided whose
decision took no durable step (no approval, execution or outcome recorded): their decision
is dropped, and audited as such (:mod:`pyagent.recovery`). Gathering and asking OPA for a batch is
:mod:`pyagent.deciding`; recording and dispatching it is here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyagent.alerts import Delivery
from pyagent.audit import AuditLog
from pyagent.batching import take_batch, take_queued
from pyagent.briefing import Briefing
from pyagent.context import Sources
from pyagent.deciding import Arriving, Asked, Decided, Decider, Item, Prepared, count_failure, label
from pyagent.dispatch import dispatch_many, opens_change_record
from pyagent.errors import HistoryError
from pyagent.executors import ProposedAction
from pyagent.hands import Case, Hands
from pyagent.metrics import Metrics
from pyagent.opa import OpaClient
from pyagent.policy import Verdict
from pyagent.records import decision_record, intake_record
from pyagent.recovery import decide_again
from pyagent.sources.history_sqlite import NewIncident
from pyagent.store import Store, StoredAlert

log = logging.getLogger("pyagent.agent")
# the batching functions for the worker's queue: mypy cannot infer their type parameter from
# a union of items
_take_batch: Callable[[queue.Queue[Item | None], int], tuple[list[Item], bool]] = take_batch
_take_queued: Callable[[queue.Queue[Item | None], int], tuple[list[Item], bool]] = take_queued


@dataclass(frozen=True)
class _Recorded:
    """A batch whose decisions are recorded and audited: the cases it has left to dispatch."""

    batch: list[Item]
    telling: list[tuple[Case, str | None]]


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
        # a change record is filed with the change system before its approval is asked for:
        # on a thread of its own, behind neither the deciding nor a verification under way
        self._to_file: queue.Queue[tuple[Case, str | None] | None] = queue.Queue()
        self._queue: queue.Queue[Item | None] = queue.Queue()
        self._in_flight = hands.in_flight  # dispatch releases an action once history has it
        self._threads: list[threading.Thread] = []
        self._executors: list[threading.Thread] = []
        self._filing: threading.Thread | None = None
        self._idle = threading.Condition()
        self._busy = 0
        self._deciding = 0  # alerts queued or being decided; at 0, a delivery is handed over early
        metrics.waiting.set_function(lambda: self._deciding)
        self.decider = Decider(store, audit, opa, sources, metrics, self._in_flight, self._now, workers)

    def _now(self) -> datetime:
        """The agent's clock, read at each batch: contexts are gathered at ``self.clock``'s time."""
        return self.clock()

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

    def _hand_over_early(self, delivery: Delivery) -> list[Arriving]:
        """Queue the delivery's firing alerts before their commit when nothing else is queued or
        being decided: the commit's fsync and the webhook's answer then overlap the worker's
        gathering and its wait for OPA, instead of coming before them. Under load, alerts are
        queued once recorded, so a re-delivery never costs a question to OPA then."""
        with self._idle:
            if self._deciding:
                return []
        early = [Arriving(alert, Future()) for alert in delivery.alerts if alert.status == "firing"]
        for arriving in early:
            self._put(arriving)
        return early

    def queue_recorded(self, stored: StoredAlert) -> None:
        """Queue an alert already recorded in the store for deciding, as :meth:`start` does
        for every alert still pending."""
        self._put(stored)

    def _put(self, item: Item) -> None:
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
        alert whose decision was never carried out (see :func:`pyagent.recovery.decide_again`);
        the change system is told, on the change desk's thread, of the records that ended and
        that it was not yet told of."""
        decide_again(self.store, self.audit, self.hands.changes)
        self.hands.changes.tell_later()
        for stored in self.store.pending():
            self.queue_recorded(stored)
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"pyagent-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        for index in range(self.executions):
            thread = threading.Thread(
                target=self._execute, args=(self._to_execute,), name=f"pyagent-execution-{index}", daemon=True
            )
            thread.start()
            self._executors.append(thread)
        self._filing = threading.Thread(
            target=self._execute, args=(self._to_file,), name="pyagent-filing", daemon=True
        )
        self._filing.start()

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
        self.decider.close()
        for _ in self._executors:
            self._to_execute.put(None)
        for thread in self._executors:  # one still verifying is resumed at the next start
            thread.join(timeout=10)
        self._executors.clear()
        if self._filing is not None:  # one still filing is decided again at the next start
            self._to_file.put(None)
            self._filing.join(timeout=10)
            self._filing = None

    def _work(self) -> None:
        """Take whatever is queued (up to ``batch_size``), decide it with one OPA request, and
        carry it out. Under load, a batch's decisions are recorded, the next batch is taken
        and OPA asked about it, and only then is the first batch dispatched: dispatching
        runs while OPA evaluates, instead of after it. An idle worker dispatches at once."""
        stop = False
        recorded: _Recorded | None = None  # decided and audited, not yet dispatched
        while not stop:
            if recorded is None:
                batch, stop = _take_batch(self._queue, self.batch_size)
            else:
                batch, stop = _take_queued(self._queue, self.batch_size)
            asked = self._ask(batch, meanwhile=recorded is not None)
            if recorded is not None:
                self._dispatch(recorded)
            recorded = self._record_asked(batch, asked) if asked is not None else None
        if recorded is not None:
            self._dispatch(recorded)

    def _ask(self, batch: list[Item], *, meanwhile: bool) -> Asked | None:
        """The batch gathered and asked about; None when it is empty or could not be."""
        if not batch:
            return None
        try:
            return self.decider.ask(self.decider.prepare(batch), meanwhile=meanwhile)
        except Exception as exc:  # noqa: BLE001 - a bug must not end the worker thread
            self._batch_failed(batch, exc)
            return None

    def _record_asked(self, batch: list[Item], asked: Asked) -> _Recorded | None:
        try:
            return _Recorded(batch, self._record_and_route(self.decider.decide(asked)))
        except Exception as exc:  # noqa: BLE001 - a bug must not end the worker thread
            self._batch_failed(batch, exc)
            return None

    def _dispatch(self, recorded: _Recorded) -> None:
        """Dispatch a recorded batch's cases that only tell (levels 0 to 2) and audit their outcomes."""
        try:
            done = dispatch_many([case for case, _ in recorded.telling], self.hands)
            self._audit_outcomes(list(zip(recorded.telling, done, strict=True)))
        except Exception as exc:  # noqa: BLE001 - a bug must not end the worker thread
            for case, _ in recorded.telling:  # one decided stays counted as in flight: the safe side of a bug
                self._failed(case.alert_id, exc)
        finally:
            self._busy_more(-len(recorded.batch), deciding=True)

    def _batch_failed(self, batch: list[Item], exc: Exception) -> None:
        for item in batch:  # one decided stays counted as in flight: the safe side of a bug
            self._failed(label(item), exc)
        self._busy_more(-len(batch), deciding=True)

    def _record_and_route(self, decided: list[Decided]) -> list[tuple[Case, str | None]]:
        """Record the decisions, hand the batch's executions and change records to their
        threads; the cases left to dispatch here, in order.

        Each durable step is taken once for the whole batch: the decisions are recorded with
        one commit and audited with one fsync before any is acted on, the new incidents go
        to history in one transaction, and the outcomes are audited together at the end.
        An alert whose processing fails before its decision is recorded stays pending (it
        is retried at the next start); a failure after that is logged and counted as an
        error, and a decision that never took its first durable step is decided again at
        the next start. Neither stops the others."""
        if not decided:
            return []
        try:
            cases = self._record(decided)
        except Exception as exc:  # noqa: BLE001 - e.g. the audit log failed: nothing is acted on
            for ready, _ in decided:
                self._failed(ready.stored.id, exc)
                self._in_flight.done(ready.stored.id)
            return []
        recorded = {case.alert_id for case, _ in cases}
        for ready, _ in decided:
            if ready.stored.id not in recorded:  # failed, or decided by another worker: never executed
                self._in_flight.done(ready.stored.id)
        # an execution, or a change record filed with the change system, waits on the network:
        # on threads of their own, a slow target or ServiceNow delays no other alert's decision
        telling = []
        for case, history_problem in cases:
            if case.autonomous:
                self._busy_more(1)
                self._to_execute.put((case, history_problem))
            elif opens_change_record(case.verdict.decision):
                self._busy_more(1)
                self._to_file.put((case, history_problem))
            else:
                telling.append((case, history_problem))
        return telling

    def _execute(self, work: queue.Queue[tuple[Case, str | None] | None]) -> None:
        """Carry out the cases of ``work`` one at a time: level-3 and level-4 cases, or the
        cases that file a change record; executions record their own outcome in history, and
        the audit gets the outcome record when it is known."""
        while (item := work.get()) is not None:
            case, history_problem = item
            try:
                [outcome] = dispatch_many([case], self.hands)
                self._in_flight.done(case.alert_id)  # refused, or history could not record it
                self._audit_outcomes([((case, history_problem), outcome)])
                if isinstance(outcome, str) and outcome != "aborted":  # an abort ends the record itself
                    self.hands.changes.end(case.decision_id, case.action, outcome)
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

    def _record(self, batch: list[Decided]) -> list[tuple[Case, str | None]]:
        """Record and audit the batch's decisions and open their incidents in history; the
        cases to dispatch, each with the problem history had, if any."""
        recorded = self.store.record_decisions(
            [(p.stored, v.decision.to_json(), v.input_hash) for p, v in batch]
        )
        decided: list[tuple[Prepared, Verdict, str, bool]] = []
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

    def _open_incidents(self, opened: list[Prepared]) -> tuple[dict[int, int], str | None]:
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

    def _failed(self, alert: int | str, exc: Exception) -> None:
        count_failure(self.metrics, alert, exc)


def _epoch(stamp: str) -> float:
    """Seconds since the epoch of a store timestamp (ISO 8601, UTC)."""
    return datetime.fromisoformat(stamp).timestamp()
