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

A record whose decision is dropped before anything was done under it (the agent stopped
in between; the alert is decided anew) is cancelled: audited, marked in the store, and
set to Canceled (state 4) in ServiceNow with a work note saying why. A cancellation the
change system could not take is sent again at the next start.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pyagent.briefing import Briefing
from pyagent.contract import Trigger
from pyagent.errors import ChangeSystemUnavailable
from pyagent.executors import ProposedAction
from pyagent.sources.catalog import policy_data
from pyagent.sqlite_schema import add_missing_columns
from pyagent.store import Store

TABLE = """
CREATE TABLE IF NOT EXISTS change_records (
    id TEXT PRIMARY KEY, decision_id TEXT NOT NULL UNIQUE, record TEXT NOT NULL, created_at REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('recorded', 'filed', 'unfiled')),
    external_number TEXT, external_id TEXT, last_error TEXT,
    cancelled_at REAL, cancel_reason TEXT, cancel_filed INTEGER NOT NULL DEFAULT 0
)
"""
# Columns added since the first release, for stores created before them.
ADDED_COLUMNS = {
    ("change_records", "cancelled_at"): "ALTER TABLE change_records ADD COLUMN cancelled_at REAL",
    ("change_records", "cancel_reason"): "ALTER TABLE change_records ADD COLUMN cancel_reason TEXT",
    ("change_records", "cancel_filed"): (
        "ALTER TABLE change_records ADD COLUMN cancel_filed INTEGER NOT NULL DEFAULT 0"
    ),
}
# ServiceNow's change_request state Canceled: allowed from every state but Closed and Review
CANCELED = "4"
GENERIC_PLANS = {
    "implementation_plan": "{type} of {kind} {namespace}/{name} by the agent after a human's approval",
    "backout_plan": "undo {type} on {kind} {namespace}/{name} (the executor's rollback)",
    "test_plan": "verify {kind} {namespace}/{name} is healthy and the alert resolves",
}
SERVICENOW_TIME = "%Y-%m-%d %H:%M:%S"


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


def _risk_impact(briefing: Briefing, reversible: bool) -> tuple[str, str, str]:
    """ServiceNow risk (2 high, 3 moderate, 4 low), impact (1 high, 2 medium, 3 low), and why."""
    wide = briefing.services > 1 or briefing.shared_infrastructure or len(briefing.namespaces) > 1
    impact = "1" if wide else "2" if briefing.replica_fraction > 0.2 else "3"
    risk = {"1": 2, "2": 3, "3": 4}[impact] - (0 if reversible else 1)
    why = (
        f"blast radius: {briefing.blast_radius}; error budget {briefing.error_budget_remaining:.0%} left; "
        f"{'reversible' if reversible else 'not reversible'}; "
        f"frameworks: {', '.join(briefing.frameworks) or 'none'}"
    )
    return str(risk), impact, why


def build_fields(  # noqa: PLR0913, PLR0917 - a change record is made of these
    action: ProposedAction,
    triggers: tuple[Trigger, ...],
    briefing: Briefing,
    summary: str,
    catalog_entry: Mapping[str, Any],
    assignment_group: str,
    now: datetime,
) -> dict[str, str]:
    """The change request's fields for ``action`` on its target."""
    names = {
        "type": action.type,
        "kind": action.kind,
        "namespace": action.namespace,
        "name": action.name,
        "replicas_delta": str(action.replicas_delta),
    }
    plans = {
        key: str(catalog_entry.get(key, generic)).format(**names) for key, generic in GENERIC_PLANS.items()
    }
    risk, impact, why = _risk_impact(briefing, bool(catalog_entry.get("reversible", False)))
    window = float(catalog_entry.get("verify_seconds", 600)) + float(
        catalog_entry.get("rollback_seconds", 600)
    )
    end = datetime.fromtimestamp(now.timestamp() + window, UTC)
    return {
        "short_description": f"{action.type} of {action.kind} {action.namespace}/{action.name}",
        "description": f"{briefing.alert_name}: {summary}",
        "justification": "; ".join(f"{t.id}: {t.message}" for t in triggers) or "policy decision",
        **plans,
        "risk_impact_analysis": why,
        "risk": risk,
        "impact": impact,
        "cmdb_ci": briefing.service,
        "assignment_group": assignment_group,
        "start_date": now.strftime(SERVICENOW_TIME),
        "end_date": end.strftime(SERVICENOW_TIME),
        "type": "normal",
    }


class ServiceNow:
    """The Table API: ``POST {url}`` with the record's fields, basic auth, answered 201."""

    def __init__(self, url: str, user: str | None, password: str | None, timeout: float = 5.0) -> None:
        self.url = url
        self.session = requests.Session()
        if user and password:
            self.session.auth = (user, password)
        retry = Retry(
            total=2,
            backoff_factor=0.3,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=None,
            raise_on_status=False,
        )
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        self.timeout = timeout

    def file(self, fields: Mapping[str, str]) -> tuple[str, str]:
        """(number, sys_id) of the new change request; raises ChangeSystemUnavailable."""
        try:
            response = self.session.post(
                self.url, json=dict(fields), headers={"Accept": "application/json"}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise ChangeSystemUnavailable(f"ServiceNow {self.url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code not in {200, 201}:
            raise ChangeSystemUnavailable(f"ServiceNow {self.url}: HTTP {response.status_code}")
        try:
            result = response.json()["result"]
            return str(result["number"]), str(result["sys_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ChangeSystemUnavailable(f"ServiceNow {self.url}: unexpected answer: {exc}") from exc

    def cancel(self, sys_id: str, note: str) -> None:
        """Set a filed change request to Canceled, with ``note`` as a work note; raises
        ChangeSystemUnavailable."""
        url = f"{self.url}/{sys_id}"
        try:
            response = self.session.patch(
                url,
                json={"state": CANCELED, "work_notes": note},
                headers={"Accept": "application/json"},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise ChangeSystemUnavailable(f"ServiceNow {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise ChangeSystemUnavailable(f"ServiceNow {url}: HTTP {response.status_code}")

    def close(self) -> None:
        self.session.close()


class ChangeDesk:
    """Builds, stores, audits and files change records."""

    def __init__(  # noqa: PLR0913, PLR0917 - the record's homes and the clock
        self,
        store: Store,
        audit: Auditor,
        policy_file: Path,
        servicenow: ServiceNow | None = None,
        assignment_group: str = "sre",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.audit, self.servicenow = store, audit, servicenow
        self.catalog: dict[str, Any] = policy_data(policy_file)["catalog"]
        self.assignment_group, self.clock = assignment_group, clock

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
        """Cancel the records of decisions dropped before anything was done under them, here;
        :meth:`file_cancellations` tells the change system. Each is audited before the store
        marks it, so a stop in between audits it again at the next start rather than never."""
        wanted = list(decision_ids)

        def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            marks = ",".join("?" * len(wanted))
            return db.execute(
                "SELECT id, decision_id, external_number FROM change_records"  # noqa: S608 - placeholders only
                f" WHERE cancelled_at IS NULL AND decision_id IN ({marks})",
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

    def file_cancellations(self) -> None:
        """Set every cancelled record the change system has, and was not yet told of, to
        Canceled there; one it cannot take now is audited and sent again at the next start."""
        if self.servicenow is None:
            return
        rows = self.store.read(
            lambda db: db.execute(
                "SELECT id, decision_id, external_id, external_number, cancel_reason FROM change_records"
                " WHERE cancelled_at IS NOT NULL AND external_id IS NOT NULL AND cancel_filed = 0"
            ).fetchall()
        )
        for change_id, decision_id, sys_id, number, reason in rows:
            what = {"decision_id": decision_id, "change_id": change_id, "number": number}
            try:
                self.servicenow.cancel(sys_id, f"Cancelled by pyagent: {reason}")
            except ChangeSystemUnavailable as exc:
                self.audit.append("change_record_cancel_unfiled", {**what, "error": str(exc)})
                continue
            self._mark_cancel_filed(change_id)
            self.audit.append("change_record_cancel_filed", what)

    def _mark_cancel_filed(self, change_id: str) -> None:
        self.store.transact(
            lambda db: db.execute("UPDATE change_records SET cancel_filed = 1 WHERE id = ?", (change_id,))
        )

    def close(self) -> None:
        if self.servicenow is not None:
            self.servicenow.close()
