"""What every console, API and Slack handler works with, and the answers they share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyagent.access import Identity
from pyagent.approvals import Approval
from pyagent.console.auth import Gate
from pyagent.errors import ApprovalRefused, PyagentError
from pyagent.notifiers.messages import Messages
from pyagent.notifiers.outbox import Outbox
from pyagent.store import Store
from pyagent.supervision import Supervisor

Aborter = Callable[[str, Identity], dict[str, Any]]


@dataclass(frozen=True)
class Desk:
    """The humans' side of a running agent."""

    supervisor: Supervisor
    store: Store
    gate: Gate
    outbox: Outbox
    messages: Messages
    audit_path: Path
    policy_dir: Path
    slack_signing_secret: str | None
    abort: Aborter | None = None  # the executors' abort, bound to the agent's hands
    clock: Callable[[], float] = field(default=time.time)

    def decide(
        self, approval_id: str, verdict: str, plan_hash: str, identity: Identity
    ) -> tuple[int, str, Approval | None]:
        """(HTTP status, message, the approval) for one person's answer; refusals change nothing."""
        try:
            approval = self.supervisor.decide(approval_id, verdict, plan_hash, identity)
        except ApprovalRefused as refused:
            return refused.status, str(refused), None
        return 200, f"{verdict} by {identity.name}", approval

    def abort_action(self, decision_id: str, identity: Identity) -> tuple[int, str]:
        """Abort a level-3 action through the executors' abort; (HTTP status, message)."""
        if self.abort is None:
            return 501, "abort is not available: no executor with an abort window is configured"
        try:
            result = self.abort(decision_id, identity)
        except PyagentError as exc:
            return 409, str(exc)
        return 200, str(result.get("detail", "aborted"))
