"""What the execution tests share: real decisions from OPA, and the hands dispatch acts through."""

from __future__ import annotations

import copy
import io
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pyagent.alerts import parse_webhook
from pyagent.approvals import Approval
from pyagent.audit import AuditLog
from pyagent.briefing import Briefing
from pyagent.changes import ChangeDesk, ChangeRecord
from pyagent.executors import Executor, ProposedAction
from pyagent.executors.guardrails import Guardrails
from pyagent.hands import Case, Hands
from pyagent.notifiers.console import ConsoleNotifier
from pyagent.opa import OpaClient, default_policy_dir
from pyagent.policy import Verdict
from pyagent.sources.history_sqlite import HistorySQLite
from pyagent.store import Store
from tests.serving import example

START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PATTERN = "oom-memory-leak"


class NoApprovals:
    """The approval flow is not under test here: executing never asks anyone."""

    def ask_many(self, asks: list[tuple[Case, str, ChangeRecord | None]]) -> list[Approval | Exception]:
        raise AssertionError(f"execution asked for approvals of {[case.decision_id for case, _, _ in asks]}")


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Kit:
    hands: Hands
    history: HistorySQLite
    notes: io.StringIO
    clock: Clock
    state: Path

    def notifications(self) -> list[str]:
        return [line.split("]", 1)[0].lstrip("[") for line in self.notes.getvalue().splitlines()]

    def steps(self, decision_id: str) -> list[str]:
        lines = (self.state / "audit.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        return [r["step"] for r in records if r["kind"] == "action_step" and r["decision_id"] == decision_id]

    def close(self) -> None:
        self.hands.changes.close()
        self.hands.store.close()
        audit = self.hands.audit
        if isinstance(audit, AuditLog):
            audit.close()


def kit(
    state: Path,
    executor: Executor,
    *,
    verify_seconds: float = 30.0,
    max_concurrent: int = 4,
    store: Store | None = None,
    kill_switch: Callable[[], bool] | None = None,
) -> Kit:
    state.mkdir(parents=True, exist_ok=True)
    clock, notes = Clock(), io.StringIO()
    history = HistorySQLite(state / "history.db")
    kill_file = state / "kill-switch"
    guardrails = Guardrails(kill_switch=kill_switch or kill_file.exists, max_concurrent=max_concurrent)
    store = store or Store(state / "agent.db")
    audit = AuditLog(state / "audit.jsonl", "test")
    hands = Hands(
        executor,
        ConsoleNotifier(notes),
        store,
        audit,
        ChangeDesk(store, audit, default_policy_dir() / "escalation" / "policy.json"),
        NoApprovals(),
        history=history,
        guardrails=guardrails,
        verify_seconds=dict.fromkeys(
            ("rolling_restart", "scale_up", "restart_container", "log_pipeline_restart"), verify_seconds
        ),
        clock=clock,
    )
    return Kit(hands, history, notes, clock, state)


def policy_input(
    example_input: dict[str, Any], kind: str, namespace: str, name: str, *, level: int, action: str
) -> dict[str, Any]:
    """DESIGN.md's example input, aimed at one target, for a level 4 or a level 3 decision."""
    document = copy.deepcopy(example_input)
    document["action"]["type"] = action
    document["action"]["target"].update({"kind": kind, "namespace": namespace, "name": name})
    if level == 3:
        document["pattern"]["occurrences"] = 5  # insufficient_history: ceiling 3
    return document


def case(opa: OpaClient, document: dict[str, Any], history: HistorySQLite, level: int) -> Case:
    """A case as the agent would dispatch it, with OPA's real decision for ``document``."""
    decision = opa.decide(document)
    assert level == decision.level, decision.triggers
    alert = parse_webhook(json.dumps(example("level-4-oom-restart")).encode()).alerts[0]
    incident = history.record_incident(alert.fingerprint, PATTERN, alert.name, START)
    action = ProposedAction.from_policy_input(document)
    return Case(
        alert,
        str(uuid.uuid4()),
        Verdict(decision, "sha256:test"),
        action,
        f"proposing {action.type} on {action.target}",
        briefing(document),
        0,
        incident,
    )


def briefing(document: dict[str, Any]) -> Briefing:
    blast = document["blast_radius"]
    return Briefing(
        alert_name=document["alert"]["name"],
        service=document["action"]["target"]["name"],
        environment=document["action"]["target"]["environment"],
        confidence=document["ai"]["confidence"],
        replica_fraction=blast["replica_fraction"],
        services=blast["services"],
        namespaces=tuple(blast["namespaces"]),
        shared_infrastructure=blast["shared_infrastructure"],
        error_budget_remaining=document["error_budget"]["remaining"],
        regulated=document["regulatory"]["regulated"],
        frameworks=tuple(document["regulatory"]["frameworks"]),
        pattern_id=document["pattern"]["id"],
        occurrences=document["pattern"]["occurrences"],
        analysis=None,
        problems=(),
    )


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until ``check()`` holds (a synchronisation point, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)
