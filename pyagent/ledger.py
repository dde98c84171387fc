"""The execution ledger: one row per decision that executed, in the agent's store.

The row is the guard that makes "one decision, at most one execution" hold across retries
and agent restarts: :meth:`Ledger.begin` inserts it or finds it there. Its state moves only
forward, by conditional updates, so a worker finishing a verification and a human aborting
it can never both roll back:

    started -> executed -> succeeded
                        -> rolling_back -> rolled_back | verification_failed
            -> error
    executed | succeeded -> (abort claimed) -> aborted | abort_failed

The change's undo record is kept in the row, so an abort after a restart can still undo it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyagent.errors import AbortRefused
from pyagent.executors import Change, ProposedAction
from pyagent.store import Store, mark_carried_out

ABORTABLE = ("executed", "succeeded")
ABORT_LEVEL = 3

_COLUMNS = (
    "decision_id, action, level, state, history_action_id, change, executed_at, abort_deadline,"
    " abort_requested_by, abort_requested_via"
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@dataclass(frozen=True)
class Execution:
    """One decision's execution as the ledger records it."""

    decision_id: str
    action: ProposedAction
    level: int
    state: str
    history_action_id: int | None
    change: Change | None
    executed_at: str | None
    abort_deadline: str | None
    abort_requested_by: str | None
    abort_requested_via: str | None

    @classmethod
    def from_row(cls, row: tuple[object, ...]) -> Execution:
        decision_id, action, level, state, action_id, change, executed, deadline, by, via = row
        return cls(
            str(decision_id),
            ProposedAction.from_json(json.loads(str(action))),
            int(str(level)),
            str(state),
            None if action_id is None else int(str(action_id)),
            None if change is None else Change.from_json(json.loads(str(change))),
            None if executed is None else str(executed),
            None if deadline is None else str(deadline),
            None if by is None else str(by),
            None if via is None else str(via),
        )


class Ledger:
    """Execution rows in the agent's :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def begin(self, decision_id: str, action: ProposedAction, level: int) -> bool:
        """Record that ``decision_id`` starts executing; False when it already did (do nothing)."""
        row = (decision_id, json.dumps(action.to_json()), level, _iso(datetime.now(UTC)))

        def begin(db: sqlite3.Connection) -> bool:
            started = db.execute(
                "INSERT OR IGNORE INTO executions (decision_id, action, level, state, started_at)"
                " VALUES (?, ?, ?, 'started', ?)",
                row,
            ).rowcount
            mark_carried_out(db, [decision_id])  # from here on, a restart recovers it, never repeats it
            return started == 1

        return self.store.transact(begin)

    def executed(
        self,
        decision_id: str,
        change: Change,
        at: datetime,
        abort_window: float | None,
        history_action_id: int | None,
    ) -> None:
        """The change is made; with an abort window, humans may abort until it closes."""
        deadline = None if abort_window is None else _iso(at + timedelta(seconds=abort_window))
        row = (json.dumps(change.to_json()), _iso(at), deadline, history_action_id, decision_id)
        self.store.transact(
            lambda db: db.execute(
                "UPDATE executions SET state = 'executed', change = ?, executed_at = ?, abort_deadline = ?,"
                " history_action_id = ? WHERE decision_id = ? AND state = 'started'",
                row,
            )
        )

    def move(self, decision_id: str, to: str, *, from_states: tuple[str, ...]) -> bool:
        """Move to state ``to`` from one of ``from_states``, unless an abort was claimed;
        False when the row was not in such a state (an abort got there first)."""
        marks = ", ".join("?" for _ in from_states)
        params = (to, _iso(datetime.now(UTC)), decision_id, *from_states)
        return self.store.transact(
            lambda db: (
                db.execute(
                    f"UPDATE executions SET state = ?, finished_at = ? WHERE decision_id = ?"  # noqa: S608
                    f" AND state IN ({marks}) AND abort_requested_at IS NULL",
                    params,
                ).rowcount
                == 1
            )
        )

    def abort_done(self, decision_id: str, rolled_back: bool) -> None:
        state = "aborted" if rolled_back else "abort_failed"
        params = (state, _iso(datetime.now(UTC)), decision_id)
        self.store.transact(
            lambda db: db.execute(
                "UPDATE executions SET state = ?, finished_at = ? WHERE decision_id = ?", params
            )
        )

    def get(self, decision_id: str) -> Execution | None:
        row = self.store.transact(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM executions WHERE decision_id = ?",  # noqa: S608
                (decision_id,),
            ).fetchone()
        )
        return None if row is None else Execution.from_row(row)

    def unfinished(self) -> list[Execution]:
        """Executions a stopped agent left between ``started`` and an outcome, oldest first."""
        rows = self.store.transact(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM executions"  # noqa: S608
                " WHERE state IN ('started', 'executed', 'rolling_back') ORDER BY started_at"
            ).fetchall()
        )
        return [Execution.from_row(row) for row in rows]

    def claim_abort(self, decision_id: str, by: str, via: str, now: datetime) -> Execution:
        """Claim the abort of ``decision_id`` (once); raises :class:`AbortRefused` saying why not."""

        def claim(db: sqlite3.Connection) -> Execution:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM executions WHERE decision_id = ?",  # noqa: S608
                (decision_id,),
            ).fetchone()
            if row is None:
                raise AbortRefused(
                    decision_id, "unknown", f"no action was executed for decision {decision_id}"
                )
            execution = Execution.from_row(row)
            _check_abortable(execution, now)
            db.execute(
                "UPDATE executions SET abort_requested_by = ?, abort_requested_via = ?,"
                " abort_requested_at = ? WHERE decision_id = ?",
                (by, via, _iso(now), decision_id),
            )
            return execution

        return self.store.transact(claim)


def _check_abortable(execution: Execution, now: datetime) -> None:
    """Raise :class:`AbortRefused` unless ``execution`` may be aborted at ``now``."""
    decision_id = execution.decision_id
    if execution.level != ABORT_LEVEL:
        raise AbortRefused(
            decision_id,
            "no_window",
            f"decision {decision_id} was level {execution.level}: only level 3 actions have an abort window",
        )
    if execution.abort_requested_by is not None:
        raise AbortRefused(
            decision_id,
            "finished",
            f"decision {decision_id} was already aborted by {execution.abort_requested_by}"
            f" ({execution.abort_requested_via})",
        )
    if execution.state not in ABORTABLE or execution.abort_deadline is None:
        reason = "not_executed" if execution.state in {"started", "error"} else "finished"
        raise AbortRefused(
            decision_id, reason, f"decision {decision_id} cannot be aborted: its action is {execution.state}"
        )
    if now > datetime.fromisoformat(execution.abort_deadline):
        raise AbortRefused(
            decision_id,
            "window_closed",
            f"the abort window of decision {decision_id} closed at {execution.abort_deadline}"
            f" (the action ran at {execution.executed_at}); roll it back by hand or through a new"
            " decision",
        )
