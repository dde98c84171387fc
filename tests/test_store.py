"""The store: group commit, where one caller's failure is only its own; reads beside it; and
the notification outbox built on it."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pyagent.alerts import Delivery as AlertGroup
from pyagent.audit import AuditLog
from pyagent.errors import StoreUnavailable
from pyagent.notifiers.outbox import Delivery, Notice, Outbox, enqueue
from pyagent.store import Store
from tests.builders import firing_alert


def _insert(value: str) -> Callable[[sqlite3.Connection], str]:
    def run(db: sqlite3.Connection) -> str:
        db.execute("INSERT INTO probe (value) VALUES (?)", (value,))
        return value

    return run


def _fail(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO probe (value) VALUES ('half-done')")
    raise ValueError("refused")


def test_a_failing_operation_in_a_shared_commit_fails_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    store.transact(lambda db: db.execute("CREATE TABLE probe (value TEXT NOT NULL)"))
    holding, release = threading.Event(), threading.Event()

    def hold(db: sqlite3.Connection) -> str:
        holding.set()
        release.wait(10)
        db.execute("INSERT INTO probe (value) VALUES ('first')")
        return "first"

    with ThreadPoolExecutor(max_workers=8) as pool:
        first = pool.submit(store.transact, hold)
        holding.wait(10)
        # these queue up behind the held commit and are committed together after it
        results: list[Future[str]] = [pool.submit(store.transact, _insert(f"ok-{n}")) for n in range(3)]
        failing = pool.submit(store.transact, _fail)
        results += [pool.submit(store.transact, _insert(f"ok-{n}")) for n in range(3, 6)]
        time.sleep(0.2)
        release.set()
        assert "first" == first.result(10)
        assert [f"ok-{n}" for n in range(6)] == [r.result(10) for r in results]
        with pytest.raises(ValueError, match="refused"):
            failing.result(10)
    stored = store.transact(lambda db: sorted(v for (v,) in db.execute("SELECT value FROM probe")))
    store.close()
    assert sorted(["first", *(f"ok-{n}" for n in range(6))]) == stored


def test_a_batch_that_succeeds_commits_every_operation(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    store.transact(lambda db: db.execute("CREATE TABLE probe (value TEXT NOT NULL)"))
    with ThreadPoolExecutor(max_workers=8) as pool:
        done: list[str] = list(pool.map(lambda n: store.transact(_insert(str(n))), range(50)))
    count = store.transact(lambda db: db.execute("SELECT count(*) FROM probe").fetchone()[0])
    store.close()
    assert [str(n) for n in range(50)] == done
    assert 50 == count


def test_a_read_does_not_wait_for_a_commit_in_progress(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    store.transact(lambda db: db.execute("CREATE TABLE probe (value TEXT NOT NULL)"))
    store.transact(_insert("committed"))
    holding, release = threading.Event(), threading.Event()

    def hold(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO probe (value) VALUES ('uncommitted')")
        holding.set()
        release.wait(30)

    with ThreadPoolExecutor(max_workers=2) as pool:
        writer = pool.submit(store.transact, hold)
        holding.wait(10)
        reader = pool.submit(store.read, lambda db: [v for (v,) in db.execute("SELECT value FROM probe")])
        try:
            seen = reader.result(10)  # the writer still holds its transaction open
        finally:
            release.set()
        writer.result(10)
    after = store.read(lambda db: sorted(v for (v,) in db.execute("SELECT value FROM probe")))
    store.close()
    assert ["committed"] == seen
    assert ["committed", "uncommitted"] == after


def test_a_read_only_connection_refuses_writes(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    store.transact(lambda db: db.execute("CREATE TABLE probe (value TEXT NOT NULL)"))
    with pytest.raises(StoreUnavailable):
        store.read(lambda db: db.execute("INSERT INTO probe (value) VALUES ('x')"))
    store.close()


class _Recorder:
    def __init__(self) -> None:
        self.delivered: list[str] = []

    def deliver(self, delivery: Delivery) -> dict[str, Any]:
        self.delivered.append(delivery.notice.kind)
        return {}


def test_an_immediate_channel_is_delivered_at_post_and_never_queued(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    log, remote = _Recorder(), _Recorder()
    audit = AuditLog(tmp_path / "audit.jsonl", "test")
    outbox = Outbox(store, {"log": log, "remote": remote}, audit, immediate=frozenset({"log"}))
    outbox.post(Notice("log", "context", "d-1", {}), Notice("remote", "context", "d-1", {}))
    assert ["context"] == log.delivered  # before any courier runs
    queued = store.read(lambda db: [c for (c,) in db.execute("SELECT channel FROM notifications")])
    audit.close()
    store.close()
    assert ["remote"] == queued
    assert [] == remote.delivered


def test_an_immediate_channel_notice_left_queued_is_delivered_once_at_start(tmp_path: Path) -> None:
    """A log notice queued in the table (as an older version did) goes out once when the
    outbox starts."""
    store = Store(tmp_path / "agent.db")
    log = _Recorder()
    audit = AuditLog(tmp_path / "audit.jsonl", "test")
    outbox = Outbox(store, {"log": log}, audit, immediate=frozenset({"log"}))
    store.transact(lambda db: enqueue(db, Notice("log", "approval_request", "a-1", {"text": "old"}), 0.0))
    outbox.start()
    outbox.stop()
    states = store.read(lambda db: [s for (s,) in db.execute("SELECT state FROM notifications")])
    audit.close()
    store.close()
    assert ["approval_request"] == log.delivered
    assert ["sent"] == states


def test_decisions_recorded_together_stand_alone(tmp_path: Path) -> None:
    """One commit records a batch's decisions; an alert decided before gets None and does not
    keep the others from being recorded, each with its own incident."""
    store = Store(tmp_path / "agent.db")
    alerts = tuple(firing_alert({"alertname": "X"}, fingerprint=f"fp-{n}") for n in range(3))
    stored = store.record_delivery(AlertGroup("{}:{}", "firing", "pyagent", 0, alerts))
    decision = {"level": 2}
    [first] = store.record_decisions([(stored[1], decision, "h1")])
    recorded = store.record_decisions([(s, decision, f"h{n}") for n, s in enumerate(stored)])
    counts = store.counts()
    store.close()
    assert first is not None
    assert None is recorded[1]
    assert [True, True] == [r[1] for r in (recorded[0], recorded[2]) if isinstance(r, tuple)]
    assert 3 == counts["decisions"]
    assert 3 == counts["incidents"]


def test_a_store_from_before_carried_out_counts_its_decisions_as_carried_out(tmp_path: Path) -> None:
    """Opening a store made before decisions had ``carried_out`` adds the column, and the
    decisions already there are not decided again."""
    path = tmp_path / "agent.db"
    store = Store(path)
    stored = store.record_delivery(
        AlertGroup("{}:{}", "firing", "pyagent", 0, (firing_alert({"alertname": "X"}),))
    )
    store.record_decisions([(stored[0], {"level": 1}, "h")])
    store.close()
    with sqlite3.connect(path) as db:  # the table as it was
        db.execute("DROP INDEX decisions_not_carried_out")
        db.execute("ALTER TABLE decisions DROP COLUMN carried_out")
    reopened = Store(path)
    left = reopened.not_carried_out()
    reopened.close()
    assert [] == left
