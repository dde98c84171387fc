"""History source, embedded default: incidents, proposed actions and their outcomes in SQLite.

One connection per call (so any thread may call), WAL journal so readers do not
block the writer. Times are stored as RFC 3339 UTC text to the second
(``2026-11-26T12:00:00Z``), which sorts as it compares.

:meth:`HistorySQLite.stats` answers for the policy, counting only what was known at
``now`` so a decision can be replayed:

- ``occurrences``: incidents of the pattern that started before ``now``;
- ``consistent_outcomes``: false when any outcome of this pattern and action is not
  ``success`` (true when none is recorded: ``early_occurrence`` and
  ``insufficient_history`` already cover that case);
- ``last_suboptimal_at``: the latest ``verification_failed``, ``aborted``,
  ``rolled_back`` or ``error`` outcome of this pattern and action;
- ``false_positive_rate_7d``: outcomes that show the diagnosis or its remedy was wrong
  (``false_positive``, and the suboptimal outcomes of executed actions: a failed
  verification, a rollback, an abort) over all outcomes, of any pattern, recorded in the
  7 days before ``now`` (0.0 when there are none). An executor ``error`` is a tool
  failure, not evidence against the diagnosis: it counts in the total only.

A database error there gives :meth:`HistoryFacts.worst_case`; the recording methods
raise :class:`pyagent.errors.HistoryError`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

from pyagent.encoders import SORTED
from pyagent.errors import HistoryError
from pyagent.sources import HistoryFacts
from pyagent.sources.novelty import IncidentRecord
from pyagent.sqlite_schema import add_missing_columns

OutcomeKind = Literal["success", "verification_failed", "aborted", "rolled_back", "error", "false_positive"]

SUBOPTIMAL = ("verification_failed", "aborted", "rolled_back", "error")
WRONG = ("false_positive", "verification_failed", "aborted", "rolled_back")
AUTONOMOUS_MIN_LEVEL = 3
FALSE_POSITIVE_WINDOW = timedelta(days=7)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    pattern_id TEXT NOT NULL,
    alert_name TEXT NOT NULL,
    started_at TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    annotations TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS incidents_by_pattern ON incidents (pattern_id, started_at);
CREATE INDEX IF NOT EXISTS incidents_by_fingerprint ON incidents (fingerprint, started_at);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    action_type TEXT NOT NULL,
    decided_level INTEGER NOT NULL CHECK (decided_level BETWEEN 0 AND 4),
    executed_at TEXT
);
CREATE INDEX IF NOT EXISTS actions_by_execution ON actions (executed_at);
CREATE INDEX IF NOT EXISTS actions_by_incident ON actions (incident_id, action_type);
CREATE TABLE IF NOT EXISTS outcomes (
    action_id INTEGER NOT NULL REFERENCES actions (id),
    outcome TEXT NOT NULL CHECK (outcome IN
        ('success', 'verification_failed', 'aborted', 'rolled_back', 'error', 'false_positive')),
    recorded_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_by_time ON outcomes (recorded_at);
CREATE INDEX IF NOT EXISTS outcomes_by_action ON outcomes (action_id);
"""

# Created after the added columns exist. An outcome carries its incident's pattern and its
# action's type, so what a pattern's action led to is a few index seeks, however long the
# pattern's history: read through the joins, it cost 77 ms with 25,000 outcomes.
_INDEXES = """
CREATE INDEX IF NOT EXISTS outcomes_by_pattern_action
    ON outcomes (pattern_id, action_type, outcome, recorded_at);
"""

# Each pattern's number of incidents, kept by triggers in the file itself, so every writer
# keeps it exact, an earlier release included. Counting a pattern's incidents walked its whole
# index range instead: 7.4 ms with 50,000 incidents, for each pattern in every batch. A
# history without the triggers is counted once, in the transaction that creates them.
_COUNTED = """
CREATE TABLE IF NOT EXISTS pattern_incidents (
    pattern_id TEXT PRIMARY KEY,
    incidents INTEGER NOT NULL
) WITHOUT ROWID;
DELETE FROM pattern_incidents;
INSERT INTO pattern_incidents SELECT pattern_id, COUNT(*) FROM incidents GROUP BY pattern_id;
CREATE TRIGGER IF NOT EXISTS incident_counted AFTER INSERT ON incidents BEGIN
    INSERT INTO pattern_incidents (pattern_id, incidents) VALUES (NEW.pattern_id, 1)
        ON CONFLICT (pattern_id) DO UPDATE SET incidents = incidents + 1;
END;
CREATE TRIGGER IF NOT EXISTS incident_uncounted AFTER DELETE ON incidents BEGIN
    UPDATE pattern_incidents SET incidents = incidents - 1 WHERE pattern_id = OLD.pattern_id;
END;
"""

# whether the triggers exist; two processes opening an uncounted history at once each count
# it in their own transaction, and both counts are exact
_IS_COUNTED = "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'incident_counted'"

# the pattern's incidents that started before a moment: all of them, less the few (usually
# none, unless replaying the past) that started at it or after
_OCCURRENCES = """
SELECT COALESCE((SELECT incidents FROM pattern_incidents WHERE pattern_id = ?), 0)
    - (SELECT COUNT(*) FROM incidents WHERE pattern_id = ? AND started_at >= ?)
"""

# columns added after the first release: a database created before them gets them on open
_ADDED_COLUMNS = {
    ("incidents", "labels"): "ALTER TABLE incidents ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'",
    ("incidents", "annotations"): "ALTER TABLE incidents ADD COLUMN annotations TEXT NOT NULL DEFAULT '{}'",
    ("outcomes", "pattern_id"): "ALTER TABLE outcomes ADD COLUMN pattern_id TEXT",
    ("outcomes", "action_type"): "ALTER TABLE outcomes ADD COLUMN action_type TEXT",
}

# an outcome recorded before its pattern and action type were copied onto it gets them
_BACKFILL = """
UPDATE outcomes SET
    pattern_id = (SELECT i.pattern_id FROM actions a JOIN incidents i ON i.id = a.incident_id
                  WHERE a.id = outcomes.action_id),
    action_type = (SELECT a.action_type FROM actions a WHERE a.id = outcomes.action_id)
WHERE pattern_id IS NULL
"""

# every outcome but success, named so the query below seeks them in the index
_NOT_SUCCESS = tuple(kind for kind in get_args(OutcomeKind) if kind != "success")

# whether the pattern's action ever ended other than in success, up to a moment
_ANY_NOT_SUCCESS = f"""
SELECT EXISTS (SELECT 1 FROM outcomes
WHERE pattern_id = ? AND action_type = ? AND outcome IN ({", ".join("?" * len(_NOT_SUCCESS))})
    AND recorded_at <= ?)
"""  # noqa: S608 - placeholders only, one per outcome

# the last suboptimal outcome of the pattern's action, up to a moment
_LAST_SUBOPTIMAL = """
SELECT MAX(recorded_at) FROM outcomes
WHERE pattern_id = ? AND action_type = ? AND outcome IN (?, ?, ?, ?) AND recorded_at <= ?
"""


@dataclass(frozen=True)
class FalsePositiveRates:
    """Outcomes that show the AI was wrong over all outcomes, in the 7 days to a moment."""

    overall: float
    by_pattern: Mapping[str, float]


def _mapping(text: str) -> Mapping[str, str]:
    """A JSON object of strings, as stored; anything else reads as empty."""
    try:
        loaded = json.loads(text)
    except ValueError:
        return MappingProxyType({})
    if not isinstance(loaded, dict):
        return MappingProxyType({})
    return MappingProxyType({str(k): str(v) for k, v in loaded.items()})


def rfc3339(moment: datetime) -> str:
    """``2026-11-26T12:00:00Z`` for an aware datetime. Raises ``ValueError`` for a naive one."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: pass a timezone-aware one")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class NewIncident:
    """An incident to record: the alert it is, and its pattern."""

    fingerprint: str
    pattern_id: str
    alert_name: str
    started_at: datetime
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


class HistorySQLite:
    """:class:`pyagent.sources.HistorySource` backed by a SQLite file, plus the writes that fill it."""

    def __init__(self, path: Path, timeout_seconds: float = 5.0) -> None:
        self._path = path
        self._timeout = timeout_seconds
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._ready = False
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened (and the schema created) on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=self._timeout)
            conn.execute("PRAGMA foreign_keys = ON")
            with self._lock:
                if not self._ready:
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.executescript(_SCHEMA)
                    add_missing_columns(conn, _ADDED_COLUMNS)
                    conn.execute(_BACKFILL)
                    conn.commit()
                    conn.executescript(_INDEXES)
                    if conn.execute(_IS_COUNTED).fetchone() is None:
                        conn.executescript(f"BEGIN IMMEDIATE; {_COUNTED} COMMIT;")
                    self._ready = True
            self._local.conn = conn
        return conn

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection in a transaction, committed on success, rolled back on error;
        any database error is raised as :class:`HistoryError`.

        A connection that raised is closed and reopened on next use, so a file that went
        away or was replaced is picked up again."""
        try:
            conn = self._connection()
            with conn:
                yield conn
        except sqlite3.Error as exc:
            self._drop()
            raise HistoryError(f"history {self._path}: {exc}") from exc

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        """Every row ``sql`` answers. Raises :class:`HistoryError`."""
        with self._connect() as conn:
            return conn.execute(sql, params).fetchall()

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _write(self, sql: str, params: tuple[object, ...]) -> int:
        [row_id] = self._write_many(sql, [params])
        return row_id

    def _write_many(self, sql: str, rows: list[tuple[object, ...]]) -> list[int]:
        """``sql`` once per row in one transaction; the rows' ids. The agent's threads take
        turns here rather than in SQLite, whose busy handler sleeps a millisecond or more."""
        with self._write_lock, self._connect() as conn:
            return [conn.execute(sql, params).lastrowid or 0 for params in rows]

    def record_incident(  # noqa: PLR0913 - the incident's columns
        self,
        fingerprint: str,
        pattern_id: str,
        alert_name: str,
        started_at: datetime,
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> int:
        """Record an incident, with the alert's labels and annotations; returns its id."""
        new = NewIncident(fingerprint, pattern_id, alert_name, started_at, labels or {}, annotations or {})
        [incident_id] = self.record_incidents([new])
        return incident_id

    def record_incidents(self, incidents: list[NewIncident]) -> list[int]:
        """Record several incidents in one transaction; their ids, in order."""
        return self._write_many(
            "INSERT INTO incidents (fingerprint, pattern_id, alert_name, started_at, labels, annotations)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    new.fingerprint,
                    new.pattern_id,
                    new.alert_name,
                    rfc3339(new.started_at),
                    SORTED.encode(dict(new.labels)),
                    SORTED.encode(dict(new.annotations)),
                )
                for new in incidents
            ],
        )

    def incidents_since(self, after_id: int) -> list[IncidentRecord]:
        """The incidents recorded after the one with id ``after_id``, in id order.

        Raises :class:`HistoryError` when the database cannot be read."""
        rows = self._rows(
            "SELECT id, fingerprint, pattern_id, alert_name, started_at, labels, annotations"
            " FROM incidents WHERE id > ? ORDER BY id",
            (after_id,),
        )
        return [
            IncidentRecord(
                id=row[0],
                fingerprint=row[1],
                pattern_id=row[2],
                alert_name=row[3],
                started_at=row[4],
                labels=_mapping(row[5]),
                annotations=_mapping(row[6]),
            )
            for row in rows
        ]

    def has_incident(self, fingerprint: str, started_at: datetime) -> bool:
        """Whether an incident with this fingerprint and start is recorded."""
        return bool(
            self._rows(
                "SELECT 1 FROM incidents WHERE fingerprint = ? AND started_at = ?",
                (fingerprint, rfc3339(started_at)),
            )
        )

    def latest_incident(self, fingerprint: str) -> int | None:
        """The id of the latest incident recorded for an alert fingerprint, if any."""
        rows = self._rows(
            "SELECT id FROM incidents WHERE fingerprint = ? ORDER BY started_at DESC, id DESC LIMIT 1",
            (fingerprint,),
        )
        return int(rows[0][0]) if rows else None

    def record_action(
        self, incident_id: int, action_type: str, decided_level: int, executed_at: datetime | None = None
    ) -> int:
        """Record an action proposed for an incident, with the level decided; returns its id."""
        executed = None if executed_at is None else rfc3339(executed_at)
        return self._write(
            "INSERT INTO actions (incident_id, action_type, decided_level, executed_at) VALUES (?, ?, ?, ?)",
            (incident_id, action_type, decided_level, executed),
        )

    def record_outcome(self, action_id: int, outcome: OutcomeKind, recorded_at: datetime) -> None:
        """Record how an action ended."""
        with self._write_lock, self._connect() as conn:
            inserted = conn.execute(
                "INSERT INTO outcomes (action_id, outcome, recorded_at, pattern_id, action_type)"
                " SELECT a.id, ?, ?, i.pattern_id, a.action_type"
                " FROM actions a JOIN incidents i ON i.id = a.incident_id WHERE a.id = ?",
                (outcome, rfc3339(recorded_at), action_id),
            ).rowcount
        if inserted != 1:
            raise HistoryError(f"history {self._path}: no action {action_id} to record an outcome for")

    def stats(self, pattern_id: str, action_type: str, now: datetime) -> HistoryFacts:
        at = rfc3339(now)
        since = rfc3339(now - FALSE_POSITIVE_WINDOW)
        try:
            with self._connect() as conn:
                (occurrences,) = conn.execute(_OCCURRENCES, (pattern_id, pattern_id, at)).fetchone()
                (any_not_success,) = conn.execute(
                    _ANY_NOT_SUCCESS, (pattern_id, action_type, *_NOT_SUCCESS, at)
                ).fetchone()
                (last_suboptimal,) = conn.execute(
                    _LAST_SUBOPTIMAL, (pattern_id, action_type, *SUBOPTIMAL, at)
                ).fetchone()
                total, false_positives = conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(outcome IN (?, ?, ?, ?)), 0) FROM outcomes"
                    " WHERE recorded_at > ? AND recorded_at <= ?",
                    (*WRONG, since, at),
                ).fetchone()
        except HistoryError as exc:
            return HistoryFacts.worst_case(str(exc))
        return HistoryFacts(
            occurrences=occurrences,
            consistent_outcomes=not any_not_success,
            last_suboptimal_at=last_suboptimal,
            false_positive_rate_7d=false_positives / total if total else 0.0,
        )

    def outcome_counts(self) -> list[tuple[str, str, int]]:
        """``(pattern, outcome, count)`` of every outcome ever recorded, for ``/metrics``.

        Raises :class:`HistoryError` when the database cannot be read."""
        rows = self._rows(
            "SELECT i.pattern_id, o.outcome, COUNT(*) FROM outcomes o"
            " JOIN actions a ON a.id = o.action_id JOIN incidents i ON i.id = a.incident_id"
            " GROUP BY i.pattern_id, o.outcome ORDER BY i.pattern_id, o.outcome"
        )
        return [(str(pattern), str(outcome), int(count)) for pattern, outcome, count in rows]

    def false_positive_rates(self, now: datetime) -> FalsePositiveRates:
        """The 7-day false-positive rate at ``now``, overall and per pattern (as ``stats`` counts).

        Raises :class:`HistoryError` when the database cannot be read."""
        rows = self._rows(
            "SELECT i.pattern_id, COUNT(*), COALESCE(SUM(o.outcome IN (?, ?, ?, ?)), 0)"
            " FROM outcomes o JOIN actions a ON a.id = o.action_id"
            " JOIN incidents i ON i.id = a.incident_id"
            " WHERE o.recorded_at > ? AND o.recorded_at <= ? GROUP BY i.pattern_id",
            (*WRONG, rfc3339(now - FALSE_POSITIVE_WINDOW), rfc3339(now)),
        )
        total = sum(count for _, count, _ in rows)
        wrong = sum(bad for _, _, bad in rows)
        return FalsePositiveRates(
            overall=wrong / total if total else 0.0,
            by_pattern=MappingProxyType({str(p): bad / count for p, count, bad in rows}),
        )

    def count_autonomous_actions(self, since: datetime) -> int:
        """Actions decided at level 3 or 4 and executed at or after ``since``.

        Raises :class:`HistoryError` when the database cannot be read.
        """
        [(count,)] = self._rows(
            "SELECT COUNT(*) FROM actions WHERE decided_level >= ? AND executed_at >= ?",
            (AUTONOMOUS_MIN_LEVEL, rfc3339(since)),
        )
        return int(count)
