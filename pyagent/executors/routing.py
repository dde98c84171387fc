"""The executor for each target, chosen by configuration.

``executor_routes`` maps shell-style patterns over a target's ``Kind/namespace/name`` to an
executor name; the first pattern that matches wins, and any other target goes to the
default ``executor`` (dry-run unless configured otherwise)::

    executor: dry-run
    executor_routes:
      "Deployment/shop/*": kubernetes
      "ComposeService/edge/*": docker
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from pyagent.executors import Change, Deadline, Executor, ProposedAction, StepResult


class ExecutorRoutes:
    """An :class:`Executor` that hands each call to the executor configured for its target."""

    def __init__(self, default: Executor, routes: Sequence[tuple[str, Executor]] = ()) -> None:
        self.default = default
        self.routes = tuple(routes)

    @classmethod
    def named(
        cls, executors: Mapping[str, Executor], default: str, routes: Mapping[str, str]
    ) -> ExecutorRoutes:
        """Routes from executor names (every name must be in ``executors``)."""
        return cls(executors[default], [(pattern, executors[name]) for pattern, name in routes.items()])

    def pick(self, action: ProposedAction) -> Executor:
        target = action.target
        return next((ex for pattern, ex in self.routes if fnmatchcase(target, pattern)), self.default)

    def plan(self, action: ProposedAction) -> str:
        return self.pick(action).plan(action)

    def execute(self, action: ProposedAction, decision_id: str) -> Change:
        return self.pick(action).execute(action, decision_id)

    def verify(self, action: ProposedAction, change: Change, deadline: Deadline) -> StepResult:
        return self.pick(action).verify(action, change, deadline)

    def rollback(self, action: ProposedAction, change: Change) -> StepResult:
        return self.pick(action).rollback(action, change)
