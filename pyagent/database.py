"""SQLite with group commit: many writers' transactions committed with one fsync.

The agent's own tables (intake, approvals, the ledger, change records, the outbox) live in
one database file, written through :class:`Database` so that callers on different threads
share commits under load, and read on per-thread connections without waiting for them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from pyagent.errors import StoreUnavailable

T = TypeVar("T")


@dataclass
class _Op(Generic[T]):
    """One unit of work queued for a commit, and its result once committed."""

    run: Callable[[sqlite3.Connection], T]
    done: bool = False
    result: T | None = None
    error: BaseException | None = None


class Database:
    """SQLite in WAL mode with full fsync, with group commit.

    A caller queues its operation, then takes the commit lock: if a caller before it has
    already committed the operation, it returns at once; otherwise it runs every operation
    queued so far in one transaction, each inside its own savepoint, and commits (one
    fsync) for all of them. An operation that raises is rolled back to its savepoint
    alone; a commit that fails fails every operation of the batch with
    :class:`StoreUnavailable`. So each caller returns only once its write is durable, and
    under load many callers share one fsync.
    """

    def __init__(self, path: Path, setup: Callable[[sqlite3.Connection], None]) -> None:
        """Open (creating) the file at ``path`` and run ``setup`` on it: its schema."""
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            setup(self._db)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"store {path}: {exc}") from exc
        self._queued: list[_Op[Any]] = []
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._closed = False
        self._readers = threading.local()
        self._all_readers: list[sqlite3.Connection] = []

    def _run(self, run: Callable[[sqlite3.Connection], T], timeout: float = -1) -> T:
        """``run(connection)`` in a committed transaction; its result, or what it raised."""
        [op] = self._run_all([run], timeout)
        if op.error is not None:
            raise op.error
        return cast("T", op.result)

    def _run_all(self, runs: list[Callable[[sqlite3.Connection], T]], timeout: float = -1) -> list[_Op[T]]:
        """Each of ``runs`` as its own operation, all queued at once so that one commit usually
        takes them all; each op holds its result or its error, independent of the others."""
        ops: list[_Op[T]] = [_Op(run) for run in runs]
        with self._queue_lock:
            self._queued.extend(ops)
        if not self._commit_lock.acquire(timeout=timeout):
            raise StoreUnavailable(f"store {self.path}: no answer within {timeout} s")
        try:
            if not all(op.done for op in ops):
                if self._closed:
                    raise StoreUnavailable(f"store {self.path}: closed")
                with self._queue_lock:
                    batch, self._queued = self._queued, []
                self._commit(batch)
        finally:
            self._commit_lock.release()
        return ops

    def _commit(self, batch: list[_Op[Any]]) -> None:
        """Run the batch in one transaction. Almost every batch succeeds whole, so it runs
        first without savepoints; when an operation raises, the transaction is rolled back
        and the batch runs again with each operation in a savepoint of its own, so only the
        failing one fails."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            if not self._all_succeed(db, batch):
                db.execute("ROLLBACK")
                db.execute("BEGIN IMMEDIATE")
                self._each_isolated(db, batch)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            for op in batch:
                op.error, op.result = StoreUnavailable(f"store {self.path}: {exc}"), None
        finally:
            for op in batch:
                op.done = True

    @staticmethod
    def _all_succeed(db: sqlite3.Connection, batch: list[_Op[Any]]) -> bool:
        for op in batch:
            try:
                op.result = op.run(db)
            except Exception:  # noqa: BLE001 - the batch runs again, isolated, and the op's error is kept then
                return False
        return True

    def _each_isolated(self, db: sqlite3.Connection, batch: list[_Op[Any]]) -> None:
        for op in batch:
            op.result = None
            db.execute("SAVEPOINT op")
            try:
                op.result = op.run(db)
            except Exception as exc:  # noqa: BLE001 - handed to the caller, not swallowed
                db.execute("ROLLBACK TO op")
                op.error = (
                    StoreUnavailable(f"store {self.path}: {exc}") if isinstance(exc, sqlite3.Error) else exc
                )
            db.execute("RELEASE op")

    def read(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """``run(connection)`` on this thread's read-only connection: what is committed, without
        waiting for the writers' commit lock. WAL lets readers and the writer run at once, so
        a question that changes nothing never queues behind other callers' fsyncs."""
        reader: sqlite3.Connection | None = getattr(self._readers, "db", None)
        try:
            if reader is None:
                if self._closed:
                    raise StoreUnavailable(f"store {self.path}: closed")
                reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5)
                reader.execute("PRAGMA query_only = ON")
                self._readers.db = reader
                with self._queue_lock:
                    self._all_readers.append(reader)
            return run(reader)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"store {self.path}: {exc}") from exc

    def transact(self, run: Callable[[sqlite3.Connection], T], timeout: float = -1) -> T:
        """``run(connection)`` in a committed transaction (group-committed with other callers);
        its result, or what it raised. For the modules that keep their own tables here."""
        return self._run(run, timeout)

    def transact_each(self, runs: list[Callable[[sqlite3.Connection], T]]) -> list[T | Exception]:
        """Each of ``runs`` as its own operation, committed together (usually one fsync); per
        run its result, or the exception it raised, which rolled back that run alone."""
        return [
            op.error if isinstance(op.error, Exception) else cast("T", op.result)
            for op in self._run_all(runs)
        ]

    def healthy(self) -> bool:
        try:
            self._run(lambda db: db.execute("SELECT 1").fetchone(), timeout=2.0)
        except StoreUnavailable:
            return False
        return True

    def close(self) -> None:
        with self._commit_lock:
            if not self._closed:
                self._closed = True
                self._db.close()
                with self._queue_lock:
                    readers, self._all_readers = self._all_readers, []
                for reader in readers:
                    reader.close()
