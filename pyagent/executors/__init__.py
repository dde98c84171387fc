"""Executors carry out a catalogued action on a target. One file per system."""

from __future__ import annotations

from dataclasses import dataclass
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


class Executor(Protocol):
    """Carries out actions. ``simulated`` executors change nothing, so their outcomes are
    not evidence: the agent keeps them out of the history's outcome record."""

    simulated: bool

    def plan(self, action: ProposedAction) -> str: ...

    def execute(self, action: ProposedAction) -> StepResult: ...

    def verify(self, action: ProposedAction) -> StepResult: ...
