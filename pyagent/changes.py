"""Change records for regulated assets, in ServiceNow's change-request fields.

A record is built before anything executes: the justification from the decision's
triggers, the implementation, backout and test plans from the action catalog
(``implementation_plan``, ``backout_plan`` and ``test_plan`` of the action's entry in the
policy data, filled with the target), risk and impact from the blast radius, the
configuration item from the target's service, and a start and end from the catalog's
rollback and verification times. It is written to the store and the audit log, and,
when ``servicenow_url`` is set, POSTed to that Table API URL (``.../api/now/table/
change_request``). When the change system is configured but cannot take the record,
the record stays ``unfiled`` and nothing may execute on the asset until filing succeeds.

Every record ends, once, in one of two ways, audited and marked in the store before the
change system is told:

- **closed** with the outcome of the change made under it: ``successful`` when it was
  verified, ``unsuccessful`` when it failed, was rolled back or aborted, or ended unknown
  after a restart (ServiceNow's state Closed, 3, with ``close_code`` and ``close_notes``);
- **cancelled** when nothing was changed under it: its approval was rejected or expired,
  the action was not executed (the policy or the plan changed, the guardrails refused it,
  the record could not be filed, the agent stopped before sending it), or its decision was
  dropped at a restart and decided anew (state Canceled, 4, with a work note saying why).

The change system is told on the desk's own thread, so no caller waits for it; an ending it
cannot take is audited and sent again with the next ending and at the next start.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pyagent.briefing import Briefing
from pyagent.contract import Trigger
from pyagent.errors import ChangeSystemUnavailable
from pyagent.executors import ProposedAction
from pyagent.servicenow import ServiceNow, build_fields, outcome_notes
from pyagent.sources.catalog import policy_data
from pyagent.sqlite_schema import add_missing_columns
from pyagent.store import Store

log = logging.getLogger(__name__)

TABLE = """
CREATE TABLE IF NOT EXISTS change_records (
    id TEXT PRIMARY KEY, decision_id TEXT NOT NULL UNIQUE, record TEXT NOT NULL, created_at REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('recorded', 'filed', 'unfiled')),
    external_number TEXT, external_id TEXT, last_error TEXT,
    cancelled_at REAL, cancel_reason TEXT, cancel_filed INTEGER NOT NULL DEFAULT 0,
    closed_at REAL, close_code TEXT, close_notes TEXT, close_filed INTEGER NOT NULL DEFAULT 0
)
"""
# Columns added since the first release, for stores created before them.
ADDED_COLUMNS = {
    ("change_records", "cancelled_at"): "ALTER TABLE change_records ADD COLUMN cancelled_at REAL",
    ("change_records", "cancel_reason"): "ALTER TABLE change_records ADD COLUMN cancel_reason TEXT",
    ("change_records", "cancel_filed"): (
        "ALTER TABLE change_records ADD COLUMN cancel_filed INTEGER NOT NULL DEFAULT 0"
    ),
    ("change_records", "closed_at"): "ALTER TABLE change_records ADD COLUMN closed_at REAL",
    ("change_records", "close_code"): "ALTER TABLE change_records ADD COLUMN close_code TEXT",
    ("change_records", "close_notes"): "ALTER TABLE change_records ADD COLUMN close_notes TEXT",
    ("change_records", "close_filed"): (
        "ALTER TABLE change_records ADD COLUMN close_filed INTEGER NOT NULL DEFAULT 0"
    ),
}
# An execution's outcome as its record's close code. ``refused`` changed nothing: its record
# is cancelled. ``duplicate`` is a decision executed before, whose record that execution ended.
CLOSE_CODE = {
    "success": "successful",
    "verification_failed": "unsuccessful",
    "rolled_back": "unsuccessful",
    "aborted": "unsuccessful",
    "error": "unsuccessful",
}
# how long closing the desk waits for the change system to be told what ended; the rest is
# told at the next start
CLOSE_WAIT_SECONDS = 10.0
# a record still open: neither cancelled nor closed
OPEN = "cancelled_at IS NULL AND closed_at IS NULL"
# a record an abort ends: open, or closed as successful before the abort undid the change
REVERSED = "cancelled_at IS NULL AND (closed_at IS NULL OR close_code = 'successful')"
# a record that ended here and that the change system has and was not yet told of
UNTOLD = (
    "external_id IS NOT NULL"
    " AND ((cancelled_at IS NOT NULL AND cancel_filed = 0) OR (closed_at IS NOT NULL AND close_filed = 0))"
)


class Auditor(Protocol):
    def append(self, kind: str, fields: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True)
class ChangeRecord:
    """One change record: ServiceNow's fields, and where it was filed."""

    id: str
    decision_id: str
    fields: Mapping[str, str]
    state: str  # recorded (no change system configured), filed, unfiled
    external_number: str | None = None
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "decision_id": self.decision_id,
            "fields": dict(self.fields),
            "state": self.state,
            "external_number": self.external_number,
            "last_error": self.last_error,
        }

    @property
    def executable(self) -> bool:
        """Whether the asset may be changed under this record."""
        return self.state in {"recorded", "filed"}


class ChangeDesk:
    """Builds, stores, audits and files change records."""

    def __init__(  # noqa: PLR0913, PLR0917 - the record's homes, the clock, the wait at close
        self,
        store: Store,
        audit: Auditor,
        policy_file: Path,
        servicenow: ServiceNow | None = None,
        assignment_group: str = "sre",
        clock: Callable[[], float] = time.time,
        close_wait: float = CLOSE_WAIT_SECONDS,
    ) -> None:
        self.store, self.audit, self.servicenow = store, audit, servicenow
        self.catalog: dict[str, Any] = policy_data(policy_file)["catalog"]
        self.assignment_group, self.clock, self.close_wait = assignment_group, clock, close_wait
        self._courier = ThreadPoolExecutor(1, thread_name_prefix="pyagent-changes")
        self._telling = threading.Lock()
        self._told_soon = False  # a run of file_endings is queued and has not started
        self._closing = threading.Event()

        def create(db: sqlite3.Connection) -> None:
            db.execute(TABLE)
            add_missing_columns(db, ADDED_COLUMNS)

        store.transact(create)

    def open(
        self,
        decision_id: str,
        action: ProposedAction,
        triggers: tuple[Trigger, ...],
        briefing: Briefing,
        summary: str,
    ) -> ChangeRecord:
        """Write the record (once per decision), audit it, and file it when a system is configured.

        Returns the record, ``unfiled`` with the reason when the change system failed."""
        existing = self.for_decision(decision_id)
        if existing is not None:
            return existing
        now = datetime.fromtimestamp(self.clock(), UTC)
        entry = self.catalog.get(action.type, {})
        fields = build_fields(action, triggers, briefing, summary, entry, self.assignment_group, now)
        record = ChangeRecord(f"CHG-{uuid.uuid4().hex[:10].upper()}", decision_id, fields, "recorded")
        if self.servicenow is not None:
            record = ChangeRecord(record.id, decision_id, fields, "unfiled", last_error="not yet filed")
        row = (record.id, decision_id, json.dumps(fields), now.timestamp(), record.state, record.last_error)
        self.store.transact(
            lambda db: db.execute(
                "INSERT INTO change_records (id, decision_id, record, created_at, state, last_error)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
        )
        self.audit.append(
            "change_record",
            {"decision_id": decision_id, "change_id": record.id, "fields": fields, "state": record.state},
        )
        return self.file(record) if self.servicenow is not None else record

    def file(self, record: ChangeRecord) -> ChangeRecord:
        """File an unfiled record with the change system; the record as it now stands."""
        if self.servicenow is None or record.state != "unfiled":
            return record
        try:
            number, sys_id = self.servicenow.file(record.fields)
        except ChangeSystemUnavailable as exc:
            self._update(record.id, "unfiled", None, None, str(exc))
            self.audit.append(
                "change_record_unfiled",
                {"decision_id": record.decision_id, "change_id": record.id, "error": str(exc)},
            )
            return ChangeRecord(record.id, record.decision_id, record.fields, "unfiled", last_error=str(exc))
        self._update(record.id, "filed", number, sys_id, None)
        self.audit.append(
            "change_record_filed",
            {"decision_id": record.decision_id, "change_id": record.id, "number": number, "sys_id": sys_id},
        )
        return ChangeRecord(record.id, record.decision_id, record.fields, "filed", number)

    def ready(self, decision_id: str) -> ChangeRecord:
        """The decision's record, filed now if it was not; raises ChangeSystemUnavailable when
        there is none or it still cannot be filed, so nothing executes."""
        record = self.for_decision(decision_id)
        if record is None:
            raise ChangeSystemUnavailable(f"no change record exists for decision {decision_id}")
        record = self.file(record)
        if not record.executable:
            raise ChangeSystemUnavailable(f"change record {record.id} is not filed: {record.last_error}")
        return record

    def _update(
        self, change_id: str, state: str, number: str | None, sys_id: str | None, error: str | None
    ) -> None:
        self.store.transact(
            lambda db: db.execute(
                "UPDATE change_records SET state = ?, external_number = ?, external_id = ?, last_error = ?"
                " WHERE id = ?",
                (state, number, sys_id, error, change_id),
            )
        )

    def for_decision(self, decision_id: str) -> ChangeRecord | None:
        def read(db: sqlite3.Connection) -> tuple[Any, ...] | None:
            found: tuple[Any, ...] | None = db.execute(
                "SELECT id, record, state, external_number, last_error FROM change_records"
                " WHERE decision_id = ?",
                (decision_id,),
            ).fetchone()
            return found

        row = self.store.read(read)
        if row is None:
            return None
        return ChangeRecord(row[0], decision_id, json.loads(row[1]), row[2], row[3], row[4])

    def cancel_for(self, decision_ids: Sequence[str], reason: str) -> None:
        """Cancel the open records of decisions under which nothing was changed, here; the
        change system is told on the desk's thread. Each is audited before the store marks
        it, so a stop in between audits it again at the next start rather than never."""
        wanted = list(decision_ids)

        def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            marks = ",".join("?" * len(wanted))
            return db.execute(
                "SELECT id, decision_id, external_number FROM change_records"  # noqa: S608 - placeholders only
                f" WHERE {OPEN} AND decision_id IN ({marks})",
                wanted,
            ).fetchall()

        rows = self.store.read(read) if wanted else []
        if not rows:
            return
        for change_id, decision_id, number in rows:
            self.audit.append(
                "change_record_cancelled",
                {"decision_id": decision_id, "change_id": change_id, "number": number, "reason": reason},
            )
        cancelled = [(self.clock(), reason, change_id) for change_id, *_ in rows]
        self.store.transact(
            lambda db: db.executemany(
                "UPDATE change_records SET cancelled_at = ?, cancel_reason = ? WHERE id = ?", cancelled
            )
        )
        self.tell_later()

    def conclude(self, decision_id: str, outcome: str, notes: str) -> None:
        """End the decision's open record, if it has one, after its execution: closed with the
        outcome's close code (:data:`CLOSE_CODE`) and ``notes``, or cancelled when the
        execution was ``refused``; any other outcome leaves it as it is. An abort inside a
        level-3 window comes after the execution was verified: it closes again, as
        ``unsuccessful``, a record closed ``successful``, and the change system is told again."""
        if outcome == "refused":
            self.cancel_for([decision_id], notes)
            return
        code = CLOSE_CODE.get(outcome)
        if code is None:
            return
        still = REVERSED if outcome == "aborted" else OPEN
        found = self.store.read(
            lambda db: db.execute(
                f"SELECT id, external_number FROM change_records WHERE {still} AND decision_id = ?",  # noqa: S608 - constants
                (decision_id,),
            ).fetchone()
        )
        if found is None:
            return
        change_id, number = found
        self.audit.append(
            "change_record_closed",
            {
                "decision_id": decision_id,
                "change_id": change_id,
                "number": number,
                "outcome": outcome,
                "close_code": code,
                "close_notes": notes,
            },
        )
        closed = (self.clock(), code, notes, change_id)
        self.store.transact(
            lambda db: db.execute(
                "UPDATE change_records SET closed_at = ?, close_code = ?, close_notes = ?, close_filed = 0"
                " WHERE id = ?",
                closed,
            )
        )
        self.tell_later()

    def end(self, decision_id: str, action: ProposedAction, outcome: str, detail: str = "") -> None:
        """:meth:`conclude`, with notes saying what was done, how it ended and why
        (:func:`pyagent.servicenow.outcome_notes`)."""
        self.conclude(decision_id, outcome, outcome_notes(decision_id, action, outcome, detail))

    def backlog(self) -> dict[str, int]:
        """How many records the change system does not know as they stand: ``unfiled``, open
        and not taken (nothing executes under them); ``ending``, ended here and not told."""
        unfiled, ending = self.store.read(
            lambda db: db.execute(
                f"SELECT COUNT(*) FILTER (WHERE state = 'unfiled' AND {OPEN}),"  # noqa: S608 - constants
                f" COUNT(*) FILTER (WHERE {UNTOLD}) FROM change_records"
            ).fetchone()
        )
        return {"unfiled": int(unfiled), "ending": int(ending)}

    def tell_later(self) -> None:
        """Tell the change system of the endings it was not yet told of, on the desk's thread.
        Endings that come while a run is queued are told by that run."""
        if self.servicenow is None or self._closing.is_set():
            return
        with self._telling:
            if self._told_soon:
                return
            self._told_soon = True
        try:
            self._courier.submit(self._tell_logged)
        except RuntimeError:  # closed meanwhile: told at the next start
            log.info("the change desk is closed; ended records are told at the next start")

    def _tell_logged(self) -> None:
        with self._telling:
            self._told_soon = False
        try:
            self.file_endings()
        except Exception:  # e.g. the store closed: what was not told is told at the next start
            log.exception("telling the change system of ended records failed")

    def file_endings(self) -> None:
        """Cancel or close in the change system every record that ended here and that it has
        and was not yet told of; one it cannot take now is audited and sent again later."""
        if self.servicenow is None:
            return
        rows = self.store.read(
            lambda db: db.execute(
                "SELECT id, decision_id, external_id, external_number, cancelled_at IS NOT NULL,"  # noqa: S608 - a constant
                f" cancel_reason, closed_at, close_code, close_notes FROM change_records WHERE {UNTOLD}"
            ).fetchall()
        )
        for change_id, decision_id, sys_id, number, cancelled, reason, closed_at, code, notes in rows:
            if self._closing.is_set():
                return  # the rest at the next start
            what = {"decision_id": decision_id, "change_id": change_id, "number": number}
            ending = "cancel" if cancelled else "close"
            try:
                if cancelled:
                    self.servicenow.cancel(sys_id, f"Cancelled by pyagent: {reason}")
                else:
                    self.servicenow.close(sys_id, code, notes)
            except ChangeSystemUnavailable as exc:
                self.audit.append(f"change_record_{ending}_unfiled", {**what, "error": str(exc)})
                continue
            self._mark_filed(change_id, ending, closed_at)
            self.audit.append(f"change_record_{ending}_filed", what)

    def _mark_filed(self, change_id: str, ending: str, closed_at: float | None) -> None:
        """Mark the ending told, unless the record was closed again meanwhile (an abort after
        a verified change): that closing is told by the run its conclusion queued."""
        self.store.transact(
            lambda db: db.execute(
                f"UPDATE change_records SET {ending}_filed = 1 WHERE id = ? AND closed_at IS ?",  # noqa: S608 - cancel or close
                (change_id, closed_at),
            )
        )

    def close(self) -> None:
        """Finish telling the change system what ended, waiting up to ``close_wait`` seconds
        and then for the request under way, if any; then let go of it."""
        try:
            self._courier.submit(lambda: None).result(timeout=self.close_wait)
        except TimeoutError:
            log.warning("the change system was not told of every ended record; the rest at the next start")
        self._closing.set()
        self._courier.shutdown(wait=True, cancel_futures=True)
        if self.servicenow is not None:
            self.servicenow.shutdown()
