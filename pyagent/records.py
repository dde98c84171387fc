"""The audit records of the deciding stage: an alert taken in, and its decision."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pyagent.audit import rfc3339
from pyagent.context import Context
from pyagent.policy import Verdict
from pyagent.store import StoredAlert


def intake_record(stored: StoredAlert) -> tuple[str, dict[str, Any]]:
    """The audit record of an alert taken in: written with the first record of what was done
    with it, so that the webhook's answer waits for one fsync (the store's), not two."""
    alert = stored.alert
    return (
        "intake",
        {
            "alert_id": stored.id,
            "fingerprint": alert.fingerprint,
            "group_key": alert.group_key,
            "status": alert.status,
            "truncated_alerts": alert.truncated_alerts,
            "received_at": rfc3339(datetime.fromisoformat(stored.received_at)),
        },
    )


def decision_record(
    stored: StoredAlert, context: Context, policy_input: Mapping[str, Any], verdict: Verdict, decision_id: str
) -> tuple[str, dict[str, Any]]:
    """The audit record of a decision: what was decided, on which input, and why."""
    alert, decision = stored.alert, verdict.decision
    return (
        "decision",
        {
            "decision_id": decision_id,
            "alert_id": stored.id,
            "fingerprint": alert.fingerprint,
            "group_key": alert.group_key,
            "alert_name": alert.name,
            "target": policy_input["action"]["target"],
            "action": policy_input["action"],
            "input_hash": verdict.input_hash,
            "level": decision.level,
            "name": decision.name,
            "triggers": [t.to_json() for t in decision.triggers],
            "policy_version": decision.policy.version,
            "fallback": verdict.fallback,
            "clamped_from": verdict.clamped_from,
            "context_problems": list(context.problems),
            "diagnosis": context.diagnosis.summary,
            "confidence": context.diagnosis.confidence_record(),
            "analysis": context.diagnosis.analysis,
            "diagnosis_notes": list(context.diagnosis.notes),
            "inventory": dict(context.inventory.details),
            "novelty": context.novelty.record(),
        },
    )
