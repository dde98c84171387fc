"""Executors carry out a catalogued action on a target. One file per system.

An executor answers four calls, each about one :class:`ProposedAction`:

- ``plan``: what exactly would change (for dry-run, ``pyagent evaluate`` and approval
  messages); never changes anything;
- ``execute``: make the change, at most once per decision id, and return a
  :class:`Change` that says how to undo it;
- ``verify``: poll until the change took effect, the :class:`Deadline` passes, or an abort
  cancels it;
- ``rollback``: undo a :class:`Change`.

``execute`` raises :class:`pyagent.errors.ActionRefused` when it refuses before changing
anything and :class:`pyagent.errors.ExecutorError` when a call failed; nobody retries it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol


@dataclass(frozen=True)
class ProposedAction:
    """What the decision is about: an action type on one target."""

    type: str
    kind: str
    namespace: str
    name: str
    replicas_delta: int = 0

    @classmethod
    def from_policy_input(cls, policy_input: dict[str, Any]) -> ProposedAction:
        action = policy_input["action"]
        target = action["target"]
        return cls(
            action["type"], target["kind"], target["namespace"], target["name"], action["replicas_delta"]
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProposedAction:
        target = data["target"]
        return cls(
            data["type"], target["kind"], target["namespace"], target["name"], int(data["replicas_delta"])
        )

    @property
    def target(self) -> str:
        """``Kind/namespace/name``: what the per-target lock and executor routes match."""
        return f"{self.kind}/{self.namespace}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "target": {"kind": self.kind, "namespace": self.namespace, "name": self.name},
            "replicas_delta": self.replicas_delta,
        }


@dataclass(frozen=True)
class StepResult:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Change:
    """What ``execute`` did. ``undo`` is the executor's own JSON record of the state to return
    to; it is persisted with the execution so that an abort after an agent restart can still
    roll back. ``sent`` is False when nothing was sent because the change was already made for
    this decision. ``simulated`` changes are not evidence and are kept out of the history."""

    detail: str
    undo: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    sent: bool = True
    simulated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "detail": self.detail,
            "undo": dict(self.undo),
            "sent": self.sent,
            "simulated": self.simulated,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Change:
        return cls(
            str(data["detail"]),
            MappingProxyType(dict(data["undo"])),
            bool(data["sent"]),
            bool(data["simulated"]),
        )


@dataclass(frozen=True)
class Deadline:
    """When verification must have succeeded (``time.monotonic()``), and how to notice an abort."""

    at: float
    cancelled: threading.Event = field(default_factory=threading.Event)
    poll_seconds: float = 0.5

    @classmethod
    def after(cls, seconds: float, cancelled: threading.Event | None = None, poll: float = 0.5) -> Deadline:
        return cls(time.monotonic() + seconds, cancelled or threading.Event(), poll)

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def pause(self) -> bool:
        """Wait one poll interval (never past the deadline); True when an abort cancelled it."""
        left = max(0.0, min(self.poll_seconds, self.at - time.monotonic()))
        return self.cancelled.wait(left)


def poll(deadline: Deadline, check: Callable[[], StepResult | str], what: str) -> StepResult:
    """Call ``check`` until it gives a result, the deadline passes or an abort cancels.

    ``check`` answers a :class:`StepResult` when it is done, or a string saying what it waits for."""
    while True:
        answer = check()
        if isinstance(answer, StepResult):
            return answer
        if deadline.cancelled.is_set() or deadline.pause():
            return StepResult(ok=False, detail=f"verification of {what} stopped by an abort ({answer})")
        if deadline.expired():
            return StepResult(ok=False, detail=f"{what} not done by the verification deadline: {answer}")


class Executor(Protocol):
    """Carries out actions on the systems it knows."""

    def plan(self, action: ProposedAction) -> str: ...

    def execute(self, action: ProposedAction, decision_id: str) -> Change: ...

    def verify(self, action: ProposedAction, change: Change, deadline: Deadline) -> StepResult: ...

    def rollback(self, action: ProposedAction, change: Change) -> StepResult: ...
