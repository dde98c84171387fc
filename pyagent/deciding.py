"""Stages 2 and 3 for a batch: gather context, ask OPA, clamp; as if decided one at a time.

The alerts of one batch are gathered at one moment, before any of them is recorded, so they
do not see each other in history: fewer occurrences and a pattern still novel only lower
autonomy. The rate limit, where a missing count would raise it, counts every autonomous
decision not yet in history, and the batch's own in order (see :mod:`pyagent.inflight`).

A batch may be asked about on the asking thread while the worker dispatches the batch before
it (:meth:`Decider.ask`). That batch's decisions and incidents are recorded by then, and its
autonomous decisions counted as in flight, so the batch asked about sees them; dispatching
the levels 0 to 2 changes nothing a context is gathered from.

An alert handed over while intake still commits it (:class:`Arriving`) is gathered and
asked about at once, and decided only once intake says it is recorded and new.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from pyagent.alerts import Alert
from pyagent.audit import AuditLog
from pyagent.context import Context, Sources, gather_many
from pyagent.hands import autonomous
from pyagent.inflight import InFlight
from pyagent.metrics import Metrics
from pyagent.opa import OpaClient
from pyagent.policy import Question, Verdict, decide_many
from pyagent.records import intake_record
from pyagent.store import Store, StoredAlert

log = logging.getLogger("pyagent.agent")


@dataclass(frozen=True)
class Prepared:
    """An alert ready to be decided: its context and the question for OPA."""

    stored: StoredAlert
    context: Context
    question: Question

    @classmethod
    def of(cls, stored: StoredAlert, context: Context) -> Prepared:
        return cls(stored, context, _question(context))

    def counting_also(self, decided: int) -> Prepared:
        """Asked again with ``decided`` more autonomous actions in the rate-limit window."""
        return self if not decided else Prepared.of(self.stored, self.context.counting_also(decided))


Decided = tuple[Prepared, Verdict]


@dataclass(frozen=True)
class Arriving:
    """A firing alert handed to an idle worker while intake commits its delivery. The worker
    gathers its context and asks OPA meanwhile, then waits for ``recorded``: the alert as
    stored once the commit is durable, or None when there is nothing to decide (a
    re-delivery, or a commit that failed, for which the webhook answered 503)."""

    alert: Alert
    recorded: Future[StoredAlert | None]


# what the workers take off the queue: an alert recorded, or one still being committed
Item = StoredAlert | Arriving


@dataclass(frozen=True)
class Asked:
    """A batch's questions, asked of OPA: its verdicts, in order, once OPA has answered."""

    gathered: list[tuple[Item, Context]]
    questions: list[Question]
    verdicts: Future[list[Verdict]]


def label(item: Item) -> int | str:
    """How a log line names a queued alert: its row id, or its fingerprint before it has one."""
    return item.id if isinstance(item, StoredAlert) else item.alert.fingerprint


def count_failure(metrics: Metrics, alert: int | str, exc: Exception) -> None:
    """Log a failure to process an alert and count it by the exception's class."""
    log.error("processing alert %s failed", alert, exc_info=exc)
    metrics.errors.labels(type(exc).__name__).inc()


class Decider:
    """Gathers a batch's context and asks OPA for its decisions; every source is passed in."""

    def __init__(  # noqa: PLR0913, PLR0917 - the stage's sources, passed in
        self,
        store: Store,
        audit: AuditLog,
        opa: OpaClient,
        sources: Sources,
        metrics: Metrics,
        in_flight: InFlight,
        clock: Callable[[], datetime],
        workers: int = 1,
    ) -> None:
        self.store, self.audit, self.opa, self.sources = store, audit, opa, sources
        self.metrics, self.in_flight, self.clock = metrics, in_flight, clock
        # asks OPA about a batch while a worker carries out the one before (see :meth:`ask`):
        # one thread per worker, so no worker's question waits behind another's
        self._asking = ThreadPoolExecutor(max(1, workers), thread_name_prefix="pyagent-ask")

    def close(self) -> None:
        """Stop the asking threads; call once no worker asks any more."""
        self._asking.shutdown(wait=True)

    @contextlib.contextmanager
    def _failures_counted(self, alert_id: int | str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - logged and counted; the batch goes on
            count_failure(self.metrics, alert_id, exc)

    def prepare(self, batch: list[Item]) -> list[tuple[Item, Context]]:
        """Close resolved alerts, skip those resolved before they were decided; gather the
        context of the others, at one moment, counting in the rate limit the autonomous
        decisions made and not yet in history (history counts an action once executed).
        An alert still being committed is checked once it is recorded (:meth:`_settled`)."""
        firing: list[Item] = []
        for item in batch:
            if isinstance(item, Arriving):
                firing.append(item)
                continue
            with self._failures_counted(item.id):
                if self._still_firing(item):
                    firing.append(item)
        # counted before history is read: an action leaves this count only once history has
        # it, so read in this order it is counted at least once, never missed
        already = self.in_flight.count()
        try:
            contexts = gather_many([item.alert for item in firing], self.clock(), self.sources)
        except Exception as exc:  # noqa: BLE001 - a bug in a source: these stay pending, the worker goes on
            for item in firing:
                count_failure(self.metrics, label(item), exc)
            return []
        return [
            (item, context.counting_also(already)) for item, context in zip(firing, contexts, strict=True)
        ]

    def _settled(self, item: Item) -> StoredAlert | None:
        """The alert as recorded, once its commit is durable; None when there is nothing to
        decide: a re-delivery, a delivery that could not be recorded, an alert resolved."""
        if isinstance(item, StoredAlert):
            return item
        stored = item.recorded.result()
        if stored is None:
            return None
        with self._failures_counted(stored.id):
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

    def ask(self, gathered: list[tuple[Item, Context]], *, meanwhile: bool = False) -> Asked:
        """Ask OPA about the batch in one request: on this thread, or with ``meanwhile`` on
        the asking thread, so that this one can do other work while OPA evaluates."""
        questions = [_question(context) for _, context in gathered]
        if meanwhile and questions:
            return Asked(gathered, questions, self._asking.submit(self._ask, questions))
        verdicts: Future[list[Verdict]] = Future()
        verdicts.set_result(self._ask(questions))
        return Asked(gathered, questions, verdicts)

    def decide(self, asked: Asked) -> list[Decided]:
        """The batch's decisions, made as if one after another: each autonomous decision
        this batch makes counts in the rate limit of the alerts after it, which are asked
        again (rarely: only when a batch has two or more autonomous decisions). An alert
        handed over before its commit is decided only once recorded, and not at all when it
        is not new."""
        verdicts = asked.verdicts.result()
        settled: list[Decided] = []
        for (item, context), question, verdict in zip(asked.gathered, asked.questions, verdicts, strict=True):
            stored = self._settled(item)
            if stored is not None:
                settled.append((Prepared(stored, context, question), verdict))
        decided: list[Decided] = []
        earlier = 0
        for prepared, first in settled:
            ready, verdict = prepared, first
            if earlier and autonomous(first.decision):
                ready = prepared.counting_also(earlier)
                [verdict] = self._ask([ready.question])
            if autonomous(verdict.decision):
                earlier += 1
                self.in_flight.add(ready.stored.id)
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


def _question(context: Context) -> Question:
    return Question(context.policy_input(), context.health_ceiling, context.problems)
