"""PagerDuty pages through the outbox, and the deadlines that trigger them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyagent.audit import AuditLog
from pyagent.notifiers.outbox import Notice, Outbox, history
from pyagent.notifiers.pagerduty import PagerDutyChannel
from pyagent.store import Store
from pyagent.timers import Deadlines
from tests.fakes import FakePagerDuty
from tests.humans import wait_until

EVENT: dict[str, Any] = {
    "event_action": "trigger",
    "dedup_key": "pyagent-approval-a1",
    "payload": {"summary": "Approval needed (timeout): rolling_restart", "source": "shop/checkout",
                "severity": "error"},
}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "agent.db")
    yield opened
    opened.close()


def _outbox(store: Store, tmp_path: Path, fake: FakePagerDuty, routing_key: str) -> tuple[Outbox, AuditLog]:
    audit = AuditLog(tmp_path / "audit.jsonl", "test")
    outbox = Outbox(store, {"pagerduty": PagerDutyChannel(routing_key, fake.url)}, audit)
    outbox.start()
    return outbox, audit


def test_a_page_refused_with_400_is_not_retried(store: Store, tmp_path: Path) -> None:
    fake = FakePagerDuty()
    outbox, audit = _outbox(store, tmp_path, fake, "not-the-routing-key")
    try:
        outbox.post(Notice("pagerduty", "escalation", "a1", EVENT))
        assert wait_until(lambda: history(store, "a1")[0]["state"] == "failed")
    finally:
        outbox.stop()
        audit.close()
        fake.close()
    [row] = history(store, "a1")
    assert (1, "PagerDuty: HTTP 400") == (row["attempts"], row["last_error"][:19])
    assert 1 == len(fake.received())


def test_the_same_page_queued_twice_is_sent_once(store: Store, tmp_path: Path) -> None:
    fake = FakePagerDuty()
    outbox, audit = _outbox(store, tmp_path, fake, FakePagerDuty.ROUTING_KEY)
    try:
        outbox.post(Notice("pagerduty", "escalation", "a1", EVENT))
        outbox.post(Notice("pagerduty", "escalation", "a1", {**EVENT, "payload": {**EVENT["payload"]}}))
        assert wait_until(lambda: history(store, "a1")[0]["state"] == "sent")
    finally:
        outbox.stop()
        audit.close()
        fake.close()
    [event] = fake.events()
    assert FakePagerDuty.ROUTING_KEY == event["routing_key"]
    assert "pyagent-approval-a1" == event["dedup_key"]


def test_deadlines_fire_in_due_order_and_never_early() -> None:
    fired: list[tuple[str, float, float]] = []
    done = threading.Event()

    def fire(key: str, due: float) -> None:
        fired.append((key, due, time.time()))
        if len(fired) == 3:
            done.set()

    deadlines = Deadlines(fire)
    deadlines.start()
    now = time.time()
    deadlines.add("late", now + 0.6)
    deadlines.add("early", now + 0.2)  # added after a later one: wakes the timer thread
    deadlines.add("middle", now + 0.4)
    deadlines.add("early", now + 0.2)  # a key already scheduled is not added twice
    assert done.wait(30)
    deadlines.stop()
    assert ["early", "middle", "late"] == [key for key, _, _ in fired]
    assert all(at >= due for _, due, at in fired)
