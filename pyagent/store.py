"""Durable intake: every alert is written to SQLite before Alertmanager gets its 2xx.

A re-delivery (same group key, fingerprint, startsAt and status) is acknowledged and
changes nothing. Alerts recorded but not yet decided stay ``pending`` and are picked up
again when the agent restarts.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyagent.alerts import Alert, Delivery
from pyagent.errors import StoreUnavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    group_key TEXT NOT NULL, fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL, status TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (group_key, fingerprint, starts_at, status)
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL, status TEXT NOT NULL, starts_at TEXT NOT NULL,
    alert TEXT NOT NULL, received_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'decided', 'closed')),
    decision_id TEXT
);
CREATE INDEX IF NOT EXISTS alerts_pending ON alerts (state) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL, alert_name TEXT NOT NULL,
    opened_at TEXT NOT NULL, closed_at TEXT,
    UNIQUE (fingerprint, starts_at)
);
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY, alert_id INTEGER NOT NULL UNIQUE REFERENCES alerts (id),
    incident_id INTEGER REFERENCES incidents (id),
    level INTEGER NOT NULL, decision TEXT NOT NULL, input_hash TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY, decision_id TEXT NOT NULL REFERENCES decisions (id),
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected', 'expired')),
    created_at TEXT NOT NULL, expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS change_records (
    id TEXT PRIMARY KEY, decision_id TEXT NOT NULL REFERENCES decisions (id),
    record TEXT NOT NULL, created_at TEXT NOT NULL
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class StoredAlert:
    """An alert as recorded at intake, with its row id."""

    id: int
    alert: Alert


class Store:
    """SQLite in WAL mode with full fsync; one connection guarded by a lock (writes are short)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"store {path}: {exc}") from exc
        self._lock = threading.Lock()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"store {self.path}: {exc}") from exc

    def record_delivery(self, delivery: Delivery) -> list[StoredAlert]:
        """Record every alert of a delivery; return those not seen before (re-deliveries are skipped)."""
        new: list[StoredAlert] = []
        received = _now()
        with self._transaction() as db:
            for alert in delivery.alerts:
                inserted = db.execute(
                    "INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?, ?, ?)", (*alert.delivery_key, received)
                ).rowcount
                if not inserted:
                    continue
                cursor = db.execute(
                    "INSERT INTO alerts (fingerprint, status, starts_at, alert, received_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (alert.fingerprint, alert.status, alert.starts_at, json.dumps(alert.to_json()), received),
                )
                new.append(StoredAlert(int(cursor.lastrowid or 0), alert))
        return new

    def pending(self) -> list[StoredAlert]:
        """Alerts recorded but not yet decided or closed, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT id, alert FROM alerts WHERE state = 'pending' ORDER BY id"
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"store {self.path}: {exc}") from exc
        return [StoredAlert(row[0], Alert.from_json(json.loads(row[1]))) for row in rows]

    def open_incident(self, alert: Alert) -> tuple[int, bool]:
        """The incident for a firing alert (one per fingerprint and startsAt) and whether it is new."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO incidents (fingerprint, starts_at, alert_name, opened_at)"
                " VALUES (?, ?, ?, ?)",
                (alert.fingerprint, alert.starts_at, alert.name, _now()),
            )
            row = db.execute(
                "SELECT id FROM incidents WHERE fingerprint = ? AND starts_at = ?",
                (alert.fingerprint, alert.starts_at),
            ).fetchone()
        return int(row[0]), cursor.rowcount == 1

    def close_incident(self, stored: StoredAlert) -> None:
        """A resolved alert closes its incident; nothing is decided for it."""
        alert = stored.alert
        with self._transaction() as db:
            db.execute(
                "UPDATE incidents SET closed_at = ?"
                " WHERE fingerprint = ? AND starts_at = ? AND closed_at IS NULL",
                (_now(), alert.fingerprint, alert.starts_at),
            )
            db.execute("UPDATE alerts SET state = 'closed' WHERE id = ?", (stored.id,))

    def record_decision(
        self, stored: StoredAlert, incident_id: int | None, decision: dict[str, Any], input_hash: str
    ) -> str | None:
        """Record the decision for an alert once; None when the alert already has one."""
        decision_id = str(uuid.uuid4())
        with self._transaction() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    decision_id,
                    stored.id,
                    incident_id,
                    decision["level"],
                    json.dumps(decision),
                    input_hash,
                    _now(),
                ),
            ).rowcount
            if not inserted:
                return None
            db.execute(
                "UPDATE alerts SET state = 'decided', decision_id = ? WHERE id = ?", (decision_id, stored.id)
            )
        return decision_id

    def create_approval(self, decision_id: str, timeout_seconds: int) -> str:
        """A pending approval request that expires after the timeout."""
        approval_id = str(uuid.uuid4())
        created = datetime.now(UTC)
        expires = created.timestamp() + timeout_seconds
        with self._transaction() as db:
            db.execute(
                "INSERT INTO approvals VALUES (?, ?, 'pending', ?, ?)",
                (
                    approval_id,
                    decision_id,
                    created.isoformat(),
                    datetime.fromtimestamp(expires, UTC).isoformat(),
                ),
            )
        return approval_id

    def record_change(self, decision_id: str, record: dict[str, Any]) -> str:
        change_id = f"CHG-{uuid.uuid4().hex[:10].upper()}"
        with self._transaction() as db:
            db.execute(
                "INSERT INTO change_records VALUES (?, ?, ?, ?)",
                (change_id, decision_id, json.dumps(record), _now()),
            )
        return change_id

    def counts(self) -> dict[str, int]:
        """Row counts per table, for health and tests."""
        with self._lock:
            tables = ("deliveries", "alerts", "incidents", "decisions", "approvals", "change_records")
            return {t: int(self._db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}  # noqa: S608

    def healthy(self) -> bool:
        with self._lock:
            try:
                self._db.execute("SELECT 1").fetchone()
            except sqlite3.Error:
                return False
            return True

    def close(self) -> None:
        with self._lock:
            self._db.close()
