"""Deciding several alerts in one request to OPA gives each exactly its own decision."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest

from pyagent.app import running_agent
from pyagent.audit import verify
from pyagent.contract import Decision
from pyagent.errors import PolicyEngineUnavailable, PolicyError, PolicyInvalid
from pyagent.opa import EmbeddedOpa, OpaClient, default_policy_dir
from pyagent.policy import Question, decide, decide_many
from pyagent.settings import Settings
from pyagent.store import Store
from tests.serving import EXAMPLES, example, record_without_deciding, records


def _inputs(example_input: dict[str, Any]) -> list[dict[str, Any]]:
    cautious = copy.deepcopy(example_input)
    cautious["ai"]["confidence"] = 0.72
    regulated = copy.deepcopy(example_input)
    regulated["regulatory"] = {"regulated": True, "frameworks": ["pci-dss"]}
    return [example_input, cautious, regulated, {"now": "not a time"}]


def test_a_batch_gives_each_input_its_own_decision(opa: OpaClient, example_input: dict[str, Any]) -> None:
    inputs = _inputs(example_input)
    assert [opa.decide(one) for one in inputs] == opa.decide_many(inputs)
    assert [4, 2, 2, 1] == [d.level for d in opa.decide_many(inputs) if isinstance(d, Decision)]


def test_a_batch_split_across_parallel_requests_keeps_each_input_its_own_decision(
    opa_server: EmbeddedOpa, example_input: dict[str, Any]
) -> None:
    """Shares of uneven size, answered in any order, still line up with their inputs."""
    inputs = [*_inputs(example_input) * 4, example_input, {"now": "not a time"}]  # 18: shares of 6
    client = OpaClient(opa_server.url, parallel=3)
    try:
        one_by_one = [client.decide_many([one])[0] for one in inputs]
        split = client.decide_many(inputs)
    finally:
        client.close()
    assert len(inputs) == len(split)
    assert [_level(a) for a in one_by_one] == [_level(a) for a in split]
    assert [a for a in one_by_one if isinstance(a, Decision)] == [a for a in split if isinstance(a, Decision)]


def test_a_split_batch_whose_opa_is_gone_fails_every_input(example_input: dict[str, Any]) -> None:
    with EmbeddedOpa(default_policy_dir()) as server:
        url = server.url
    client = OpaClient(url, parallel=2)
    try:
        answers = client.decide_many([example_input] * 9)
    finally:
        client.close()
    assert 9 == len(answers)
    assert all(isinstance(a, PolicyEngineUnavailable) for a in answers)


def _level(answer: Decision | PolicyError) -> int | str:
    return answer.level if isinstance(answer, Decision) else type(answer).__name__


def test_batched_verdicts_equal_single_verdicts(opa: OpaClient, example_input: dict[str, Any]) -> None:
    """The context clamp applies per question, as it does for one alert."""
    questions = [Question(one, 4, ()) for one in _inputs(example_input)]
    questions[0] = Question(questions[0].policy_input, 1, ("inventory: file unreadable",))
    single = [decide(opa, q.policy_input, q.health_ceiling, q.problems) for q in questions]
    assert single == decide_many(opa, questions)
    assert 4 == decide_many(opa, questions)[0].clamped_from


def test_a_policy_without_the_batch_rule_is_asked_one_input_at_a_time(
    tmp_path: Path, example_input: dict[str, Any]
) -> None:
    """An older policy bundle has only ``decision``: a batch must not cost anyone a decision."""
    policy = tmp_path / "rego"
    shutil.copytree(default_policy_dir(), policy)
    (policy / "escalation" / "batch.rego").unlink()
    inputs = _inputs(example_input)
    with EmbeddedOpa(policy) as server:
        client = OpaClient(server.url)
        try:
            assert [4, 2, 2, 1] == [d.level for d in client.decide_many(inputs) if isinstance(d, Decision)]
        finally:
            client.close()


def test_a_batch_answer_of_the_wrong_shape_is_invalid_for_every_input(
    tmp_path: Path, example_input: dict[str, Any]
) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "broken.rego").write_text("package escalation\n\ndecisions := [1]\n")
    with EmbeddedOpa(policy) as server:
        client = OpaClient(server.url)
        try:
            answers = client.decide_many(_inputs(example_input))
        finally:
            client.close()
    assert 4 == len(answers)
    assert all(isinstance(a, PolicyInvalid) for a in answers)


def test_an_unreachable_opa_fails_every_input_of_a_batch(example_input: dict[str, Any]) -> None:
    with EmbeddedOpa(default_policy_dir()) as server:
        url = server.url
    client = OpaClient(url)
    try:
        answers: list[Decision | PolicyError] = client.decide_many(_inputs(example_input))
    finally:
        client.close()
    assert all(isinstance(a, PolicyEngineUnavailable) for a in answers)


def _recorded_undecided(state: Path, count: int) -> list[dict[str, Any]]:
    """``count`` level-2 deliveries recorded in the store with no agent running, so the first
    worker to start finds them all queued."""
    bodies = []
    for serial in range(count):
        body = copy.deepcopy(example("level-2-first-occurrence"))
        body["alerts"][0]["fingerprint"] = f"{serial + 1:016x}"
        bodies.append(body)
    record_without_deciding(state, *bodies)
    return bodies


def test_alerts_queued_together_are_decided_together_and_each_recorded(tmp_path: Path) -> None:
    """Alerts waiting when the agent starts go to OPA in one request; each gets its decision."""
    bodies = _recorded_undecided(tmp_path, 6)
    settings = Settings(state_dir=tmp_path, inventory=EXAMPLES / "inventory.yaml", workers=1)
    with running_agent(settings) as running:
        assert running.agent.drain(30)
        registry = running.agent.metrics.registry
        assert 1 == registry.get_sample_value("pyagent_opa_request_seconds_count")
        assert 6 == registry.get_sample_value("pyagent_opa_batch_alerts_sum")
    decided = records(tmp_path, "decision")
    assert sorted(b["alerts"][0]["fingerprint"] for b in bodies) == sorted(d["fingerprint"] for d in decided)
    assert {2} == {d["level"] for d in decided}


def test_a_batch_records_every_decision_before_acting_on_any(tmp_path: Path) -> None:
    """The batch's decisions are audited together, ahead of its first action step; each alert
    still gets its own incident in history, its own approval and its own outcome record."""
    bodies = _recorded_undecided(tmp_path, 5)
    settings = Settings(state_dir=tmp_path, inventory=EXAMPLES / "inventory.yaml", workers=1)
    with running_agent(settings) as running:
        assert running.agent.drain(30)
        approvals = running.desk.supervisor.approvals.listed("pending")
        incidents = running.agent.sources.history.incidents_since(0)
    decisions, steps, outcomes = (records(tmp_path, k) for k in ("decision", "action_step", "outcome"))
    assert 5 == len(decisions) == len(steps) == len(outcomes) == len(approvals) == len(incidents)
    assert max(d["seq"] for d in decisions) < min(s["seq"] for s in steps)
    assert [d["decision_id"] for d in decisions] == [o["decision_id"] for o in outcomes]
    assert {"approval_requested"} == {o["outcome"] for o in outcomes}
    assert sorted(b["alerts"][0]["fingerprint"] for b in bodies) == sorted(i.fingerprint for i in incidents)
    assert verify(tmp_path / "audit.jsonl").ok


@pytest.mark.parametrize("workers", [1, 2])
def test_an_agent_stopped_under_load_dispatches_every_batch_it_decided(tmp_path: Path, workers: int) -> None:
    """Under load a worker dispatches a batch while OPA is asked about the next, so when it
    takes the stop sign it may still hold a batch decided and not dispatched: that batch is
    dispatched before the worker ends. Every decision audited has its outcome, once, and
    nothing is left to be decided again at the next start; with two workers too."""
    count = 150  # more than two batches of 64: the later ones are taken while one waits to be dispatched
    bodies = _recorded_undecided(tmp_path, count)
    settings = Settings(state_dir=tmp_path, inventory=EXAMPLES / "inventory.yaml", workers=workers)
    with running_agent(settings) as running:
        store = running.agent.store
    # stopped at once: the stop sign was queued behind every alert waiting at the start
    decisions, outcomes = records(tmp_path, "decision"), records(tmp_path, "outcome")
    assert count == len(decisions) == len(bodies)
    assert sorted(d["decision_id"] for d in decisions) == sorted(o["decision_id"] for o in outcomes)
    assert {"approval_requested"} == {o["outcome"] for o in outcomes}
    reopened = Store(store.path)
    try:
        assert [] == reopened.not_carried_out()
        assert [] == reopened.pending()
    finally:
        reopened.close()
    assert verify(tmp_path / "audit.jsonl").ok
