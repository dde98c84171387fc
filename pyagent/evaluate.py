"""The pipeline without its side effects: what the agent would decide for a webhook payload.

Used by ``pyagent evaluate``: validate, gather context, ask OPA, clamp; then, instead of
dispatching, say what dispatch would do. Nothing is recorded and nothing executes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyagent.alerts import Alert, Delivery
from pyagent.context import Context, Sources, gather
from pyagent.executors import Executor, ProposedAction
from pyagent.hands import plan_of
from pyagent.opa import OpaClient
from pyagent.policy import Verdict, decide


@dataclass(frozen=True)
class Evaluation:
    alert: Alert
    context: Context
    verdict: Verdict
    plan: str | None  # the executor's plan when the level would act or ask for approval

    def to_json(self) -> dict[str, Any]:
        return {
            "alert": {
                "name": self.alert.name,
                "fingerprint": self.alert.fingerprint,
                "status": self.alert.status,
            },
            "decision": self.verdict.decision.to_json(),
            "fallback": self.verdict.fallback,
            "clamped_from": self.verdict.clamped_from,
            "input_hash": self.verdict.input_hash,
            "context_problems": list(self.context.problems),
            "diagnosis": self.context.diagnosis.summary,
            "confidence": self.context.diagnosis.confidence_record(),
            "analysis": self.context.diagnosis.analysis,
            "inventory": dict(self.context.inventory.details),
            "novelty": self.context.novelty.record(),
            "input": self.context.policy_input(),
            "plan": self.plan,
        }


def evaluate(
    delivery: Delivery, sources: Sources, client: OpaClient, executor: Executor, now: datetime
) -> list[Evaluation]:
    """The decision for each firing alert of ``delivery`` (resolved ones need none)."""
    evaluations = []
    for alert in delivery.alerts:
        if alert.status == "resolved":
            continue
        context = gather(alert, now, sources)
        policy_input = context.policy_input()
        verdict = decide(client, policy_input, context.health_ceiling, context.problems)
        acts = verdict.decision.level >= 2
        plan = plan_of(executor, ProposedAction.from_policy_input(policy_input)) if acts else None
        evaluations.append(Evaluation(alert, context, verdict, plan))
    return evaluations
