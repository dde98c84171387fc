"""Durable intake: every alert is written to SQLite before Alertmanager gets its 2xx.

A re-delivery (same group key, fingerprint, startsAt and status) is acknowledged and
changes nothing. Alerts recorded but not yet decided stay ``pending`` and are picked up
again when the agent restarts.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyagent.alerts import Alert, Delivery
from pyagent.database import Database
from pyagent.sqlite_schema import add_missing_columns

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
-- each decision first asks whether the alert's resolved notification is already recorded
CREATE INDEX IF NOT EXISTS alerts_by_identity ON alerts (fingerprint, starts_at, status);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL, alert_name TEXT NOT NULL,
    opened_at TEXT NOT NULL, closed_at TEXT,
    UNIQUE (fingerprint, starts_at)
);
-- carried_out: 0 from the decision's commit until its first durable step (its approval,
-- its execution, or its outcome) is recorded; decisions older than the column were carried out
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY, alert_id INTEGER NOT NULL UNIQUE REFERENCES alerts (id),
    incident_id INTEGER REFERENCES incidents (id),
    level INTEGER NOT NULL, decision TEXT NOT NULL, input_hash TEXT NOT NULL, created_at TEXT NOT NULL,
    carried_out INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS executions (
    decision_id TEXT PRIMARY KEY, action TEXT NOT NULL, level INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('started', 'executed', 'succeeded', 'rolling_back',
        'rolled_back', 'verification_failed', 'error', 'aborted', 'abort_failed')),
    history_action_id INTEGER, change TEXT, started_at TEXT NOT NULL, executed_at TEXT,
    abort_deadline TEXT, abort_requested_by TEXT, abort_requested_via TEXT, abort_requested_at TEXT,
    finished_at TEXT
);
"""
# Columns added since the first release, for stores created before them.
ADDED_COLUMNS = {
    ("decisions", "carried_out"): "ALTER TABLE decisions ADD COLUMN carried_out INTEGER NOT NULL DEFAULT 1",
}
INDEXES = """
CREATE INDEX IF NOT EXISTS decisions_not_carried_out ON decisions (alert_id) WHERE carried_out = 0;
"""


def _now() -> str:
    return datetime.now(UTC).isoformat()


class _AlreadyDecided(Exception):
    """Another worker recorded this alert's decision first."""


@dataclass(frozen=True)
class StoredAlert:
    """An alert as recorded at intake, with its row id."""

    id: int
    alert: Alert
    received_at: str  # ISO 8601, UTC


def _create(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)
    add_missing_columns(db, ADDED_COLUMNS)
    db.executescript(INDEXES)


class Store(Database):
    """The agent's database: intake, decisions and executions here, and the tables of the
    modules that keep theirs in the same file, all written with group commit."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, _create)

    def record_delivery(self, delivery: Delivery) -> list[StoredAlert]:
        """Record every alert of a delivery; return those not seen before (re-deliveries are skipped)."""
        received = _now()

        def record(db: sqlite3.Connection) -> list[StoredAlert]:
            new: list[StoredAlert] = []
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
                new.append(StoredAlert(int(cursor.lastrowid or 0), alert, received))
            return new

        return self._run(record)

    def pending(self) -> list[StoredAlert]:
        """Alerts recorded but not yet decided or closed, oldest first."""
        rows = self._run(
            lambda db: db.execute(
                "SELECT id, alert, received_at FROM alerts WHERE state = 'pending' ORDER BY id"
            ).fetchall()
        )
        return [StoredAlert(row[0], Alert.from_json(json.loads(row[1])), row[2]) for row in rows]

    def close_incident(self, stored: StoredAlert) -> None:
        """A resolved alert closes its incident; nothing is decided for it."""
        alert = stored.alert

        def close(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE incidents SET closed_at = ?"
                " WHERE fingerprint = ? AND starts_at = ? AND closed_at IS NULL",
                (_now(), alert.fingerprint, alert.starts_at),
            )
            db.execute("UPDATE alerts SET state = 'closed' WHERE id = ?", (stored.id,))

        self._run(close)

    def close_if_resolved(self, stored: StoredAlert) -> bool:
        """Close a firing alert whose resolved notification is already recorded (deliveries can
        be processed out of order); True when it was closed, so nothing must be decided."""
        alert = stored.alert

        def resolved(db: sqlite3.Connection) -> bool:
            return (
                db.execute(
                    "SELECT 1 FROM alerts WHERE fingerprint = ? AND starts_at = ? AND status = 'resolved'",
                    (alert.fingerprint, alert.starts_at),
                ).fetchone()
                is not None
            )

        if not self.read(resolved):  # almost always: no write, no commit to wait for
            return False
        self._run(lambda db: db.execute("UPDATE alerts SET state = 'closed' WHERE id = ?", (stored.id,)))
        return True

    def record_decisions(
        self, decided: list[tuple[StoredAlert, dict[str, Any], str]]
    ) -> list[tuple[str, bool] | Exception | None]:
        """Record each alert's decision once, opening its incident (one per fingerprint and
        startsAt) in the same transaction, the alerts queued together so that one commit
        usually records them all; per alert (decision id, whether the incident is new), None
        when the alert already has a decision, or the exception that kept it from being
        recorded (the others are recorded)."""
        ids = [str(uuid.uuid4()) for _ in decided]
        results = self.transact_each(
            [
                _decision_writer(stored, decision, digest, id_)
                for (stored, decision, digest), id_ in zip(decided, ids, strict=True)
            ]
        )
        out: list[tuple[str, bool] | Exception | None] = []
        for result, decision_id in zip(results, ids, strict=True):
            if isinstance(result, _AlreadyDecided):
                out.append(None)  # decided by another worker already
            elif isinstance(result, Exception):
                out.append(result)
            else:
                out.append((decision_id, result))
        return out

    def carried_out(self, decision_ids: list[str]) -> None:
        """Record that these decisions' outcomes are known (see :meth:`not_carried_out`)."""
        if decision_ids:
            self._run(lambda db: mark_carried_out(db, decision_ids))

    def not_carried_out(self) -> list[tuple[StoredAlert, str, int]]:
        """Alerts decided whose decision was never carried out, oldest first, each with its
        decision id and level: the agent stopped, or the audit failed, after the decision's
        commit and before its approval, execution or outcome was recorded."""
        rows = self._run(
            lambda db: db.execute(
                "SELECT a.id, a.alert, a.received_at, d.id, d.level FROM decisions d"
                " JOIN alerts a ON a.id = d.alert_id"
                " WHERE d.carried_out = 0 AND a.state = 'decided' ORDER BY a.id"
            ).fetchall()
        )
        return [
            (StoredAlert(row[0], Alert.from_json(json.loads(row[1])), row[2]), row[3], row[4]) for row in rows
        ]

    def reopen(self, decision_ids: list[str]) -> None:
        """Drop decisions never carried out and make their alerts pending again, to be decided
        anew; a decision carried out meanwhile is kept."""

        def reopen(db: sqlite3.Connection) -> None:
            for decision_id in decision_ids:
                row = db.execute(
                    "SELECT alert_id FROM decisions WHERE id = ? AND carried_out = 0", (decision_id,)
                ).fetchone()
                if row is not None:
                    db.execute("DELETE FROM decisions WHERE id = ?", (decision_id,))
                    db.execute(
                        "UPDATE alerts SET state = 'pending', decision_id = NULL WHERE id = ?", (row[0],)
                    )

        self._run(reopen)

    def counts(self) -> dict[str, int]:
        """Row counts per table, for health and tests."""
        tables = ("deliveries", "alerts", "incidents", "decisions", "executions")
        return self._run(
            lambda db: {t: int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}  # noqa: S608
        )


def _decision_writer(
    stored: StoredAlert, decision: dict[str, Any], input_hash: str, decision_id: str
) -> Callable[[sqlite3.Connection], bool]:
    """The write of one alert's decision and its incident; True when the incident is new.
    Raises :class:`_AlreadyDecided` (rolling the incident back) when the alert has a decision."""
    alert = stored.alert

    def decide(db: sqlite3.Connection) -> bool:
        opened = db.execute(
            "INSERT OR IGNORE INTO incidents (fingerprint, starts_at, alert_name, opened_at)"
            " VALUES (?, ?, ?, ?)",
            (alert.fingerprint, alert.starts_at, alert.name, _now()),
        ).rowcount
        (incident_id,) = db.execute(
            "SELECT id FROM incidents WHERE fingerprint = ? AND starts_at = ?",
            (alert.fingerprint, alert.starts_at),
        ).fetchone()
        inserted = db.execute(
            "INSERT OR IGNORE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
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
            raise _AlreadyDecided
        db.execute(
            "UPDATE alerts SET state = 'decided', decision_id = ? WHERE id = ?", (decision_id, stored.id)
        )
        return opened == 1

    return decide


def mark_carried_out(db: sqlite3.Connection, decision_ids: list[str]) -> None:
    """In the caller's transaction: these decisions have taken their first durable step, so a
    restart must not decide their alerts again."""
    db.executemany(
        "UPDATE decisions SET carried_out = 1 WHERE id = ? AND carried_out = 0", [(i,) for i in decision_ids]
    )
