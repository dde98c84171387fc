"""Stage 3, ask OPA and clamp: the policy decides; Python can only lower the level after it.

Every way OPA can fail gives level 1 with the reason (``policy_engine_unavailable``,
``policy_undefined``, ``policy_invalid``); a context source that failed caps the level
at the context's health ceiling, so a policy bug can only lower autonomy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from pyagent.contract import LEVEL_NAMES, Approval, Decision, PolicyInfo, Trigger
from pyagent.encoders import CANONICAL
from pyagent.errors import PolicyError
from pyagent.opa import OpaClient

ASSISTED_LOGGING = ("alert", "decision", "context")
FALLBACK_LEVEL = 1


def input_hash(policy_input: object) -> str:
    """SHA-256 of the canonical JSON of the policy input, recorded with every decision."""
    return hashlib.sha256(CANONICAL.encode(policy_input).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Verdict:
    """The decision the agent acts on, with how it was reached."""

    decision: Decision
    input_hash: str
    fallback: str | None = None  # the PolicyError reason when OPA gave no decision
    clamped_from: int | None = None  # OPA's level when the clamp lowered it


def fallback_decision(reason: str, message: str) -> Decision:
    """Level 1 for when OPA gave no usable decision: post context, recommend nothing."""
    return Decision(
        level=FALLBACK_LEVEL,
        name=LEVEL_NAMES[FALLBACK_LEVEL],
        triggers=(Trigger(reason, FALLBACK_LEVEL, message),),
        execute=False,
        approval=Approval(required=False, timeout_seconds=600, on_timeout="escalate_to_oncall"),
        abort_window_seconds=None,
        change_record_required=True,
        logging=ASSISTED_LOGGING,
        policy=PolicyInfo(version="unknown", approvers=(), last_review="", next_review=""),
    )


def clamp(decision: Decision, ceiling: int, trigger: Trigger) -> Decision:
    """The decision lowered to ``ceiling`` (never raised), with ``trigger`` listed as the reason."""
    if decision.level <= ceiling:
        return decision
    return replace(
        decision,
        level=ceiling,
        name=LEVEL_NAMES[ceiling],
        triggers=tuple(sorted((*decision.triggers, trigger), key=lambda t: t.ceiling)),
        execute=ceiling >= 3,
        approval=replace(decision.approval, required=ceiling == 2),
        abort_window_seconds=decision.abort_window_seconds if ceiling == 3 else None,
        logging=ASSISTED_LOGGING if ceiling <= 1 else decision.logging,
    )


@dataclass(frozen=True)
class Question:
    """One policy input to decide, with the context's health: its ceiling and why."""

    policy_input: dict[str, Any]
    health_ceiling: int
    problems: tuple[str, ...]


def decide(
    client: OpaClient, policy_input: dict[str, Any], health_ceiling: int, problems: tuple[str, ...]
) -> Verdict:
    """Ask OPA, fall back to level 1 when it gives no decision, then apply the context clamp."""
    [verdict] = decide_many(client, [Question(policy_input, health_ceiling, problems)])
    return verdict


def decide_many(client: OpaClient, questions: list[Question]) -> list[Verdict]:
    """:func:`decide` for several inputs in one request to OPA; one verdict per question."""
    answers = client.decide_many([q.policy_input for q in questions])
    return [_verdict(q, answer) for q, answer in zip(questions, answers, strict=True)]


def _verdict(question: Question, answer: Decision | PolicyError) -> Verdict:
    digest = input_hash(question.policy_input)
    if isinstance(answer, PolicyError):
        return Verdict(fallback_decision(answer.reason, str(answer)), digest, fallback=answer.reason)
    decision, health_ceiling, problems = answer, question.health_ceiling, question.problems
    if decision.level <= health_ceiling:
        return Verdict(decision, digest)
    reason = Trigger(
        "context_source_unavailable", health_ceiling, "; ".join(problems) or "a context source failed"
    )
    return Verdict(clamp(decision, health_ceiling, reason), digest, clamped_from=decision.level)
