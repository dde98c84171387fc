"""Autonomous decisions whose actions history has not recorded yet, for the policy's rate limit.

The rate limit (``guardrails.autonomous_actions_in_window``) counts the autonomous actions
history has recorded, and history records an action when it is executed. Decisions at
levels 3 and 4 wait for an execution thread, and a batch's alerts are all gathered before
any of them is decided, so history alone would let a burst of autonomous decisions through
past the limit. The agent adds the ones counted here: decided at level 3 or 4 in this
process and not yet in history. Dispatch removes an action from here as soon as history has
recorded it, not when its verification ends: a rollout verified for minutes would otherwise
count twice, and the agent would allow fewer autonomous actions than the policy says. An
execution that ends without history recording it (refused, or history failing) is removed
when it ends.
"""

from __future__ import annotations

import threading


class InFlight:
    """The alert ids whose autonomous decision is made and whose action history has not
    recorded yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[int] = set()

    def add(self, alert_id: int) -> None:
        with self._lock:
            self._ids.add(alert_id)

    def done(self, alert_id: int) -> None:
        """History has the action, or it will never have it; a second call changes nothing."""
        with self._lock:
            self._ids.discard(alert_id)

    def count(self) -> int:
        with self._lock:
            return len(self._ids)
