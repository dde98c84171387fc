"""Group commit: callers share a transaction, and one caller's failure is only its own."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from pyagent.store import Store


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
