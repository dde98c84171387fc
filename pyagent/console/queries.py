"""What the console reads: recent decisions, one decision's audit trail, the policy's state."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pyagent.store import Store

SERVICE_LABELS = ("service", "deployment", "job", "app")


@dataclass(frozen=True)
class DecisionRow:
    id: str
    created_at: str
    level: int
    name: str
    alert_name: str
    fingerprint: str
    service: str
    triggers: tuple[str, ...]
    policy_version: str


def decisions(
    store: Store, level: int | None = None, service: str = "", trigger: str = "", limit: int = 200
) -> list[DecisionRow]:
    """Recent decisions, newest first, filtered by level, service (substring) and trigger id."""

    def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = db.execute(
            "SELECT d.id, d.created_at, d.level, d.decision, a.alert FROM decisions d"
            " JOIN alerts a ON a.id = d.alert_id ORDER BY d.created_at DESC LIMIT 2000"
        ).fetchall()
        return rows

    found: list[DecisionRow] = []
    for decision_id, created, row_level, decision_json, alert_json in store.transact(read):
        decision, alert = json.loads(decision_json), json.loads(alert_json)
        labels = alert.get("labels", {})
        row = DecisionRow(
            decision_id,
            created,
            row_level,
            decision["name"],
            labels.get("alertname", ""),
            alert.get("fingerprint", ""),
            next((labels[k] for k in SERVICE_LABELS if labels.get(k)), ""),
            tuple(t["id"] for t in decision["triggers"]),
            decision["policy"]["version"],
        )
        if level is not None and row.level != level:
            continue
        if service and service.lower() not in row.service.lower():
            continue
        if trigger and trigger not in row.triggers:
            continue
        found.append(row)
        if len(found) >= limit:
            break
    return found


def audit_trail(
    audit_path: Path, decision_id: str, approval_ids: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Every audit record about a decision (or its approval), in order."""
    trail: list[dict[str, Any]] = []
    try:
        with audit_path.open("rb") as lines:
            for raw in lines:
                if decision_id.encode() not in raw and not any(a.encode() in raw for a in approval_ids):
                    continue
                record = json.loads(raw)
                if (
                    record.get("decision_id") == decision_id
                    or record.get("subject") in approval_ids
                    or (record.get("approval_id") in approval_ids)
                ):
                    trail.append(record)
    except (OSError, ValueError):
        return trail
    return trail


@dataclass(frozen=True)
class PolicyState:
    version: str
    next_review: str
    expiring: tuple[dict[str, Any], ...]  # qualifications expiring soon or expired


def policy_state(policy_dir: Path, now: datetime, within_days: int = 14) -> PolicyState:
    """The policy version and the level-4 qualifications that expire within ``within_days``."""
    try:
        policy = json.loads((policy_dir / "escalation" / "policy.json").read_text())["policy"]
        qualifications = json.loads((policy_dir / "escalation" / "qualifications.json").read_text())
    except (OSError, ValueError, KeyError):
        return PolicyState("unknown", "unknown", ())
    days = int(policy.get("requalification_days", 90))
    expiring = []
    for qualification in qualifications.get("qualifications", []):
        qualified = datetime.fromisoformat(qualification["qualified_at"].replace("Z", "+00:00"))
        expires = qualified + timedelta(days=days)
        left = (expires - now).total_seconds() / 86400
        if left <= within_days:
            expiring.append(
                {
                    **qualification,
                    "expires_at": expires.astimezone(UTC).strftime("%Y-%m-%d"),
                    "days_left": int(left // 1),
                }
            )
    return PolicyState(
        policy["version"], policy["next_review"], tuple(sorted(expiring, key=lambda q: q["days_left"]))
    )
