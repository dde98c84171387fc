"""Approvals (level 2), persisted in the store: each binds one decision to one exact plan.

An approval carries the hash of the planned action (type, target and parameters); a
decision on it must name the same hash, so nobody can approve something else than what
they were shown. Every transition out of ``pending`` is one conditional UPDATE
(``WHERE state = 'pending'`` and the right side of the deadline), so of a click, a
replay, a second click and the timeout exactly one wins and the rest change nothing.
The notices that go with a transition (the Slack update, the page to on-call) are queued
in the same transaction, so a restart can neither lose nor repeat them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyagent.access import Identity
from pyagent.briefing import Briefing
from pyagent.contract import Trigger
from pyagent.encoders import CANONICAL_ASCII
from pyagent.errors import ApprovalClosed, ApprovalNotFound, PlanMismatch
from pyagent.executors import ProposedAction
from pyagent.notifiers.outbox import Notice, enqueue
from pyagent.store import Store, mark_carried_out

TABLE = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY, decision_id TEXT NOT NULL UNIQUE, alert_id INTEGER NOT NULL,
    plan_hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected', 'expired')),
    created_at REAL NOT NULL, expires_at REAL NOT NULL, request TEXT NOT NULL,
    decided_by TEXT, decided_at REAL, fired_at REAL, execution TEXT
)
"""
COLUMNS = (
    "id, decision_id, alert_id, plan_hash, state, created_at, expires_at, request,"
    " decided_by, decided_at, fired_at, execution"
)


def plan_hash(action: ProposedAction) -> str:
    """SHA-256 of the canonical JSON of the action: its type, target and parameters."""
    return hashlib.sha256(CANONICAL_ASCII.encode(action.to_json()).encode()).hexdigest()


def _action(data: dict[str, Any]) -> ProposedAction:
    target = data["target"]
    return ProposedAction(
        data["type"], target["kind"], target["namespace"], target["name"], data["replicas_delta"]
    )


@dataclass(frozen=True)
class Request:
    """What the approver is asked, fixed when the approval is created."""

    action: ProposedAction
    plan: str
    summary: str
    level: int
    triggers: tuple[Trigger, ...]
    policy_version: str
    briefing: Briefing
    asset_classes: tuple[str, ...]
    change_id: str | None
    fingerprint: str

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.to_json(),
            "plan": self.plan,
            "summary": self.summary,
            "level": self.level,
            "triggers": [t.to_json() for t in self.triggers],
            "policy_version": self.policy_version,
            "briefing": self.briefing.to_json(),
            "asset_classes": list(self.asset_classes),
            "change_id": self.change_id,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        return cls(
            action=_action(data["action"]),
            plan=data["plan"],
            summary=data["summary"],
            level=data["level"],
            triggers=tuple(Trigger(**t) for t in data["triggers"]),
            policy_version=data["policy_version"],
            briefing=Briefing.from_json(data["briefing"]),
            asset_classes=tuple(data["asset_classes"]),
            change_id=data["change_id"],
            fingerprint=data["fingerprint"],
        )


@dataclass(frozen=True)
class Approval:
    """One approval request and, once decided, who decided it, when and through what."""

    id: str
    decision_id: str
    alert_id: int
    plan_hash: str
    state: str
    created_at: float
    expires_at: float
    request: Request
    decided_by: Identity | None
    decided_at: float | None
    fired_at: float | None
    execution: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Approval:
        who = json.loads(row[8]) if row[8] else None
        identity = (
            Identity(who["name"], frozenset(who["groups"]), who["via"], who["verified_by"]) if who else None
        )
        return cls(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            Request.from_json(json.loads(row[7])),
            identity,
            row[9],
            row[10],
            row[11],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "decision_id": self.decision_id,
            "plan_hash": self.plan_hash,
            "state": self.state,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "request": self.request.to_json(),
            "decided_by": self.decided_by.to_json() if self.decided_by else None,
            "decided_at": self.decided_at,
            "fired_at": self.fired_at,
            "execution": self.execution,
        }


def _create(db: sqlite3.Connection) -> None:
    """The table; one from a version that did not bind approvals to a plan is kept aside."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(approvals)")}
    if columns and "plan_hash" not in columns:
        db.execute("ALTER TABLE approvals RENAME TO approvals_unbound")
    db.execute(TABLE)


SELECT_ONE = f"SELECT {COLUMNS} FROM approvals WHERE id = ?"  # noqa: S608 - constant column list
INSERT = f"INSERT INTO approvals ({COLUMNS}) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, NULL, NULL, NULL, NULL)"  # noqa: S608


def _one(db: sqlite3.Connection, approval_id: str) -> Approval | None:
    row = db.execute(SELECT_ONE, (approval_id,)).fetchone()
    return Approval.from_row(row) if row else None


def _changed(db: sqlite3.Connection, approval_id: str) -> Approval:
    """The approval just updated in this transaction (so it exists)."""
    return Approval.from_row(db.execute(SELECT_ONE, (approval_id,)).fetchone())


NoticesFor = Callable[[Approval], Sequence[Notice]]


@dataclass(frozen=True)
class Ask:
    """One approval to create: the decision, its alert, what is asked, for how long, and the
    notices that announce it (queued in the same transaction)."""

    decision_id: str
    alert_id: int
    request: Request
    timeout_seconds: float
    notices: NoticesFor


class Approvals:
    """The approvals table and its atomic transitions."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.transact(_create)

    def create_many(self, asks: list[Ask], now: float) -> list[Approval | Exception]:
        """A pending approval per ask, each with the notices that announce it queued in the same
        transaction, committed together; one that fails gets its exception in its place."""
        approvals = [
            Approval(
                str(uuid.uuid4()),
                ask.decision_id,
                ask.alert_id,
                plan_hash(ask.request.action),
                "pending",
                now,
                now + ask.timeout_seconds,
                ask.request,
                None,
                None,
                None,
                None,
            )
            for ask in asks
        ]

        def inserter(approval: Approval, notices: NoticesFor) -> Callable[[sqlite3.Connection], Approval]:
            def insert(db: sqlite3.Connection) -> Approval:
                db.execute(
                    INSERT,
                    (
                        approval.id,
                        approval.decision_id,
                        approval.alert_id,
                        approval.plan_hash,
                        now,
                        approval.expires_at,
                        json.dumps(approval.request.to_json()),
                    ),
                )
                for notice in notices(approval):
                    enqueue(db, notice, now)
                # from here on a restart finds the approval, and asks no one again
                mark_carried_out(db, [approval.decision_id])
                return approval

            return insert

        return self.store.transact_each(
            [inserter(approval, ask.notices) for approval, ask in zip(approvals, asks, strict=True)]
        )

    def get(self, approval_id: str) -> Approval | None:
        row = self.store.transact(lambda db: db.execute(SELECT_ONE, (approval_id,)).fetchone())
        return Approval.from_row(row) if row else None

    def for_decision(self, decision_id: str) -> Approval | None:
        row = self.store.transact(
            lambda db: db.execute(
                f"SELECT {COLUMNS} FROM approvals WHERE decision_id = ?",  # noqa: S608
                (decision_id,),
            ).fetchone()
        )
        return Approval.from_row(row) if row else None

    def listed(self, state: str | None = None, limit: int = 100) -> list[Approval]:
        """Approvals in ``state`` (all when None): pending ones by deadline, others newest first."""
        order = "expires_at" if state == "pending" else "created_at DESC"
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        rows = self.store.transact(
            lambda db: db.execute(
                f"SELECT {COLUMNS} FROM approvals {where} ORDER BY {order} LIMIT ?",  # noqa: S608
                (*args, limit),
            ).fetchall()
        )
        return [Approval.from_row(row) for row in rows]

    def decide(  # noqa: PLR0913, PLR0917 - the click: what, which plan, by whom, when
        self,
        approval_id: str,
        verdict: str,
        seen_plan_hash: str,
        identity: Identity,
        now: float,
        notices: NoticesFor,
    ) -> Approval:
        """Approve or reject once; raises ApprovalNotFound, PlanMismatch or ApprovalClosed,
        each having changed nothing."""
        if verdict not in {"approved", "rejected"}:
            raise ValueError(f"verdict must be approved or rejected, not {verdict!r}")

        def run(db: sqlite3.Connection) -> Approval:
            current = _one(db, approval_id)
            if current is None:
                raise ApprovalNotFound(f"no approval {approval_id}")
            if seen_plan_hash != current.plan_hash:
                raise PlanMismatch(
                    f"approval {approval_id} is for plan {current.plan_hash[:12]}, not the one shown"
                )
            changed = db.execute(
                "UPDATE approvals SET state = ?, decided_by = ?, decided_at = ?"
                " WHERE id = ? AND state = 'pending' AND expires_at > ?",
                (verdict, json.dumps(identity.to_json()), now, approval_id, now),
            ).rowcount
            if not changed:
                state = "expired" if current.state == "pending" else current.state
                raise ApprovalClosed(f"approval {approval_id} is already {state}; nothing changed")
            decided = _changed(db, approval_id)
            for notice in notices(decided):
                enqueue(db, notice, now)
            return decided

        return self.store.transact(run)

    def expire(self, approval_id: str, now: float, notices: NoticesFor) -> Approval | None:
        """Expire a pending approval whose deadline has passed; None when it was decided first."""

        def run(db: sqlite3.Connection) -> Approval | None:
            changed = db.execute(
                "UPDATE approvals SET state = 'expired', fired_at = ?"
                " WHERE id = ? AND state = 'pending' AND expires_at <= ?",
                (now, approval_id, now),
            ).rowcount
            if not changed:
                return None
            expired = _changed(db, approval_id)
            for notice in notices(expired):
                enqueue(db, notice, now)
            return expired

        return self.store.transact(run)

    def claim_execution(self, approval_id: str) -> bool:
        """Mark an approved approval as executing; False when another thread or run already did."""
        return (
            self.store.transact(
                lambda db: (
                    db.execute(
                        "UPDATE approvals SET execution = 'running' WHERE id = ? AND state = 'approved'"
                        " AND execution IS NULL",
                        (approval_id,),
                    ).rowcount
                )
            )
            == 1
        )

    def finish_execution(self, approval_id: str, outcome: str) -> None:
        self.store.transact(
            lambda db: db.execute("UPDATE approvals SET execution = ? WHERE id = ?", (outcome, approval_id))
        )

    def unexecuted(self) -> list[Approval]:
        """Approved approvals whose execution never started or never finished (a restart cut it)."""
        rows = self.store.transact(
            lambda db: db.execute(
                f"SELECT {COLUMNS} FROM approvals WHERE state = 'approved'"  # noqa: S608
                " AND (execution IS NULL OR execution = 'running')"
            ).fetchall()
        )
        return [Approval.from_row(row) for row in rows]
