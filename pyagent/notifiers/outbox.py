"""Reliable notifications: a durable outbox in the store, delivered by one thread per channel.

A notice is written to the ``notifications`` table (in the caller's transaction when it
must go with a state change, such as an approval expiring), and a courier thread per
channel delivers it. A failure the channel calls retryable is tried again with
exponential backoff (1 s doubling to 60 s, or the channel's ``Retry-After``) until
``give_up_after`` seconds have passed; a permanent one is recorded as failed. Nothing here
runs on the webhook's thread, so a slow or dead channel never delays intake, and each
channel has its own thread, so a dead Slack never delays a page.

A notice is unique per (channel, kind, subject): enqueuing the same escalation twice (a
timeout after Slack already failed) sends it once. A notice can update an earlier one
(``update_of``): it waits until that one is delivered and is handed its receipt (Slack's
channel and ``ts``), or is sent as a new message when the earlier one failed for good.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyagent.errors import DeliveryFailed, PyagentError
from pyagent.store import Store

log = logging.getLogger("pyagent.outbox")

TABLE = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL, payload TEXT NOT NULL,
    update_of TEXT,
    state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, next_at REAL NOT NULL,
    sent_at REAL, receipt TEXT, last_error TEXT,
    UNIQUE (channel, kind, subject)
)
"""
# the couriers ask for the next due notice of their channel after every delivery: without
# this the question reads every notice the channel ever sent
QUEUE_INDEX = """
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (channel, next_at, id) WHERE state = 'queued'
"""
FIRST_BACKOFF, MAX_BACKOFF = 1.0, 60.0
POSTPONE = 0.2  # waiting for the notice this one updates


@dataclass(frozen=True)
class Notice:
    """One message for one channel; ``subject`` is what it is about (an approval or decision id)."""

    channel: str
    kind: str
    subject: str
    payload: Mapping[str, Any]
    update_of: str | None = None  # the kind of an earlier notice (same channel, subject) to update


@dataclass(frozen=True)
class Delivery:
    """A notice as the courier hands it to its channel."""

    id: int
    notice: Notice
    attempts: int
    previous: Mapping[str, Any] | None = None  # the receipt of the notice this one updates


@dataclass(frozen=True)
class Failure:
    """A failed attempt, for whoever watches deliveries (the first Slack failure pages on-call)."""

    notice: Notice
    attempts: int
    error: str
    final: bool


class Channel(Protocol):
    """Sends one notice; returns a receipt (e.g. Slack's channel and ts) or raises DeliveryFailed."""

    def deliver(self, delivery: Delivery) -> dict[str, Any]: ...


class Auditor(Protocol):
    def append(self, kind: str, fields: Mapping[str, Any]) -> Any: ...


def create_table(store: Store) -> None:
    store.transact(lambda db: (db.execute(TABLE), db.execute(QUEUE_INDEX)))


def enqueue(db: sqlite3.Connection, notice: Notice, now: float) -> bool:
    """Queue ``notice`` in the caller's transaction; False when it was queued before."""
    return (
        int(
            db.execute(
                "INSERT OR IGNORE INTO notifications (channel, kind, subject, payload, update_of, created_at,"
                " next_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    notice.channel,
                    notice.kind,
                    notice.subject,
                    json.dumps(notice.payload),
                    notice.update_of,
                    now,
                    now,
                ),
            ).rowcount
        )
        == 1
    )


def backoff(attempts: int, retry_after: float | None) -> float:
    """Seconds before attempt ``attempts + 1``: 1, 2, 4, ... 60, or at least ``Retry-After``."""
    delay: float = min(MAX_BACKOFF, FIRST_BACKOFF * 2.0 ** max(0, attempts - 1))
    return max(delay, retry_after or 0.0)


@dataclass
class Outbox:
    """The couriers. ``channels`` maps a channel name to its sender; notices for a channel
    that is not configured are never enqueued by their callers."""

    store: Store
    channels: Mapping[str, Channel]
    audit: Auditor
    on_failure: Callable[[Failure], None] = lambda _failure: None
    unaudited: frozenset[str] = frozenset()  # channels whose deliveries are not worth an audit record
    # channels that only write locally (the log): delivered on the caller's thread, since
    # there is nothing to retry; a queued write per notice would only add three transactions
    # to every alert. With a state change they are written once it is committed (``queued``
    # and ``deliver_local``): the change itself is in the store and the audit log, so a stop
    # between the commit and the write loses a log line, never a fact.
    immediate: frozenset[str] = frozenset()
    give_up_after: float = 3600.0
    clock: Callable[[], float] = time.time
    _wake: threading.Condition = field(default_factory=threading.Condition)
    _stopping: bool = False
    _threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        create_table(self.store)

    def post(self, *notices: Notice) -> None:
        """Queue notices in a transaction of their own and wake the couriers; deliver those for
        an immediate channel here instead."""
        now = self.clock()
        self.deliver_local(list(notices))
        queued = self.queued(list(notices))
        if queued:
            self.store.transact(lambda db: [enqueue(db, n, now) for n in queued])
            self.wake()

    def queued(self, notices: list[Notice]) -> list[Notice]:
        """The notices that go through the table, for a caller enqueuing them with a state change."""
        return [n for n in notices if n.channel in self.channels and n.channel not in self.immediate]

    def deliver_local(self, notices: list[Notice]) -> None:
        """Deliver the notices of the immediate channels now: the other half of :meth:`queued`,
        called once the state change is committed."""
        for notice in notices:
            if notice.channel in self.immediate and notice.channel in self.channels:
                self._deliver_now(notice)

    def _deliver_now(self, notice: Notice) -> None:
        try:
            self.channels[notice.channel].deliver(Delivery(0, notice, 0))
        except Exception:  # a local write that failed is logged; the other channels still go
            log.exception("outbox %s: %s failed", notice.channel, notice.kind)

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def start(self) -> None:
        """A courier per channel that queues; the immediate channels have nothing queued but
        what an older version left, delivered here once."""
        for name, channel in self.channels.items():
            if name in self.immediate:
                self._drain(name, channel)
                continue
            thread = threading.Thread(
                target=self._courier, args=(name, channel), name=f"pyagent-outbox-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def _courier(self, name: str, channel: Channel) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
            try:
                delivery, wait = self._next(name)
            except PyagentError:
                log.exception("outbox %s: store unavailable", name)
                delivery, wait = None, 1.0
            if delivery is None:
                with self._wake:
                    if not self._stopping:
                        self._wake.wait(timeout=wait)
                continue
            self._attempt(channel, delivery)

    def _drain(self, name: str, channel: Channel) -> None:
        try:
            while (delivery := self._next(name)[0]) is not None:
                self._attempt(channel, delivery)
        except PyagentError:
            log.exception("outbox %s: store unavailable", name)

    def _next(self, name: str) -> tuple[Delivery | None, float]:
        """The next due delivery of channel ``name``, or None and how long to wait."""
        now = self.clock()

        def pick(db: sqlite3.Connection) -> tuple[Delivery | None, float]:
            row = db.execute(
                "SELECT id, kind, subject, payload, update_of, attempts FROM notifications"
                " WHERE channel = ? AND state = 'queued' AND next_at <= ? ORDER BY next_at, id LIMIT 1",
                (name, now),
            ).fetchone()
            if row is None:
                (due,) = db.execute(
                    "SELECT min(next_at) FROM notifications WHERE channel = ? AND state = 'queued'", (name,)
                ).fetchone()
                return None, 30.0 if due is None else max(0.0, due - now)
            notice = Notice(name, row[1], row[2], json.loads(row[3]), row[4])
            previous: dict[str, Any] | None = None
            if notice.update_of is not None:
                earlier = db.execute(
                    "SELECT state, receipt, next_at FROM notifications"
                    " WHERE channel = ? AND kind = ? AND subject = ?",
                    (name, notice.update_of, notice.subject),
                ).fetchone()
                if earlier is not None and earlier[0] == "queued":  # after the earlier one's next try
                    later = max(now, earlier[2]) + POSTPONE
                    db.execute("UPDATE notifications SET next_at = ? WHERE id = ?", (later, row[0]))
                    return None, POSTPONE
                if earlier is not None and earlier[0] == "sent":
                    previous = json.loads(earlier[1] or "{}")
            return Delivery(row[0], notice, row[5], previous), 0.0

        return self.store.transact(pick)

    def _attempt(self, channel: Channel, delivery: Delivery) -> None:
        notice, attempts = delivery.notice, delivery.attempts + 1
        try:
            receipt = channel.deliver(delivery)
        except DeliveryFailed as exc:
            self._failed(delivery, attempts, str(exc), exc.retryable, exc.retry_after)
            return
        except Exception as exc:
            log.exception("outbox %s: %s failed", notice.channel, notice.kind)
            self._failed(delivery, attempts, f"{type(exc).__name__}: {exc}", False, None)
            return
        now = self.clock()
        self.store.transact(
            lambda db: db.execute(
                "UPDATE notifications SET state = 'sent', attempts = ?, sent_at = ?, receipt = ?,"
                " last_error = NULL WHERE id = ?",
                (attempts, now, json.dumps(receipt), delivery.id),
            )
        )
        if notice.channel not in self.unaudited:
            self._audit(notice, attempts, delivered=True, receipt=receipt)

    def _audit(self, notice: Notice, attempts: int, **outcome: Any) -> None:
        self.audit.append(
            "notification",
            {
                "channel": notice.channel,
                "notice": notice.kind,
                "subject": notice.subject,
                "attempts": attempts,
                **outcome,
            },
        )

    def _failed(
        self, delivery: Delivery, attempts: int, error: str, retryable: bool, retry_after: float | None
    ) -> None:
        notice, now = delivery.notice, self.clock()

        def record(db: sqlite3.Connection) -> bool:
            (created,) = db.execute(
                "SELECT created_at FROM notifications WHERE id = ?", (delivery.id,)
            ).fetchone()
            final = not retryable or now - created >= self.give_up_after
            db.execute(
                "UPDATE notifications SET state = ?, attempts = ?, next_at = ?, last_error = ? WHERE id = ?",
                (
                    "failed" if final else "queued",
                    attempts,
                    now + backoff(attempts, retry_after),
                    error,
                    delivery.id,
                ),
            )
            return final

        final = self.store.transact(record)
        log.warning("outbox %s: %s attempt %d failed: %s", notice.channel, notice.kind, attempts, error)
        if final:
            self._audit(notice, attempts, delivered=False, error=error)
        self.on_failure(Failure(notice, attempts, error, final))


def history(store: Store, subject: str) -> list[dict[str, Any]]:
    """Every notice about ``subject``, oldest first, for the console and tests."""

    def read(db: sqlite3.Connection) -> list[dict[str, Any]]:
        rows = db.execute(
            "SELECT channel, kind, state, attempts, created_at, sent_at, last_error, receipt"
            " FROM notifications WHERE subject = ? ORDER BY id",
            (subject,),
        ).fetchall()
        keys = ("channel", "kind", "state", "attempts", "created_at", "sent_at", "last_error", "receipt")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    return store.transact(read)
