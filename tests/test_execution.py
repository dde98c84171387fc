"""The execution path against a real kube-apiserver and real OPA decisions: guardrails, the
outcome loop, level 3's abort window, and one decision causing at most one restart."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pyagent.abort import abort
from pyagent.dispatch import dispatch_many
from pyagent.errors import AbortRefused
from pyagent.execution import execute_action
from pyagent.hands import Case
from pyagent.ledger import Ledger
from pyagent.opa import EmbeddedOpa, OpaClient
from pyagent.recovery import recover
from pyagent.settings import Settings
from pyagent.sources import history_import as history_file
from pyagent.sources.history_sqlite import HistorySQLite
from tests.execution_kit import PATTERN, START, Kit, case, kit, policy_input, wait_for
from tests.humans import saas, servicenow_overrides
from tests.kube import KubeCluster
from tests.kube_world import RolloutController, World
from tests.serving import EXAMPLES, example, post, records, serve


@pytest.fixture
def world(kube_cluster: KubeCluster, tmp_path: Path) -> World:
    return World(kube_cluster, tmp_path)


@pytest.fixture
def hands_kit(world: World, tmp_path: Path) -> Iterator[Kit]:
    made = kit(tmp_path / "state", world.executor(), verify_seconds=30.0)
    yield made
    made.close()


def _case(opa: OpaClient, example_input: dict[str, Any], world: World, kit_: Kit, level: int) -> Case:
    document = policy_input(
        example_input, "Deployment", world.namespace, "web", level=level, action="rolling_restart"
    )
    return case(opa, document, kit_.history, level)


def _generation(world: World, name: str = "web") -> int:
    return int(world.read(name)["metadata"]["generation"])


def test_level_4_restart_succeeds_and_is_learned(
    opa: OpaClient, example_input: dict[str, Any], world: World, hands_kit: Kit
) -> None:
    world.deployment("web")
    the_case = _case(opa, example_input, world, hands_kit, 4)
    with RolloutController(world).running():
        [outcome] = dispatch_many([the_case], hands_kit.hands)
    assert "success" == outcome
    assert ["execute", "executed", "verified"] == hands_kit.steps(the_case.decision_id)
    facts = hands_kit.history.stats(PATTERN, "rolling_restart", START)
    assert facts.consistent_outcomes
    assert facts.last_suboptimal_at is None
    assert [] == hands_kit.notifications()  # level 4 tells humans only when verification fails


def test_verification_timeout_rolls_back_and_records_a_suboptimal_outcome(
    opa: OpaClient, example_input: dict[str, Any], world: World, tmp_path: Path
) -> None:
    world.deployment("web")
    template = world.read("web")["spec"]["template"]
    quick = kit(tmp_path / "quick", world.executor(), verify_seconds=0.5)
    the_case = _case(opa, example_input, world, quick, 4)
    outcome = execute_action(the_case, quick.hands)  # no controller: the rollout never completes
    state = Ledger(quick.hands.store).get(the_case.decision_id)
    quick.close()
    assert "rolled_back" == outcome
    assert ["execute", "executed", "verified", "rollback", "rolled_back"] == quick.steps(the_case.decision_id)
    assert template == world.read("web")["spec"]["template"]
    assert ["verification_failed"] == quick.notifications()
    facts = quick.history.stats(PATTERN, "rolling_restart", START)
    assert not facts.consistent_outcomes
    assert "2026-11-26T12:00:00Z" == facts.last_suboptimal_at
    assert 1.0 == facts.false_positive_rate_7d
    assert state is not None
    assert "rolled_back" == state.state


def test_a_failed_verification_demotes_the_pattern_in_the_next_decision(
    opa: OpaClient, example_input: dict[str, Any], world: World, tmp_path: Path
) -> None:
    """The outcome loop: after a suboptimal outcome, the same proposal is no longer level 4."""
    world.deployment("web")
    quick = kit(tmp_path / "quick", world.executor(), verify_seconds=0.3)
    first = _case(opa, example_input, world, quick, 4)
    execute_action(first, quick.hands)
    facts = quick.history.stats(PATTERN, "rolling_restart", START)
    quick.close()
    document = policy_input(
        example_input, "Deployment", world.namespace, "web", level=4, action="rolling_restart"
    )
    document["pattern"]["consistent_outcomes"] = facts.consistent_outcomes
    document["pattern"]["last_suboptimal_at"] = facts.last_suboptimal_at
    decision = opa.decide(document)
    assert 2 == decision.level
    assert {"inconsistent_outcomes", "suboptimal_outcome"} <= {t.id for t in decision.triggers}


def test_level_3_abort_inside_the_window_rolls_back(
    opa: OpaClient, example_input: dict[str, Any], world: World, hands_kit: Kit
) -> None:
    world.deployment("web")
    template = world.read("web")["spec"]["template"]
    the_case = _case(opa, example_input, world, hands_kit, 3)
    changes = hands_kit.hands.changes
    changes.open(the_case.decision_id, the_case.action, (), the_case.briefing, the_case.summary)
    with RolloutController(world).running():
        assert "success" == execute_action(the_case, hands_kit.hands)
    changes.conclude(the_case.decision_id, "success", "verified")  # as the agent's execution thread does
    hands_kit.clock.advance(899)
    result = abort(the_case.decision_id, "alice", "test", hands_kit.hands)
    assert result.rolled_back
    closings = [r["close_code"] for r in records(hands_kit.state, "change_record_closed")]
    assert ["successful", "unsuccessful"] == closings  # the abort closes the record again
    assert template == world.read("web")["spec"]["template"]
    assert ["executed_abort_window", "aborted"] == hands_kit.notifications()
    steps = hands_kit.steps(the_case.decision_id)
    assert ["abort_requested", "rollback", "rolled_back"] == steps[-3:]
    assert "aborted" == hands_kit.hands.ledger.get(the_case.decision_id).state  # type: ignore[union-attr]
    facts = hands_kit.history.stats(PATTERN, "rolling_restart", hands_kit.clock.now)
    assert not facts.consistent_outcomes
    with pytest.raises(AbortRefused, match="already aborted by alice"):
        abort(the_case.decision_id, "bob", "test", hands_kit.hands)


def test_abort_during_verification_stops_it_and_rolls_back(
    opa: OpaClient, example_input: dict[str, Any], world: World, hands_kit: Kit
) -> None:
    world.deployment("web")
    template = world.read("web")["spec"]["template"]
    the_case = _case(opa, example_input, world, hands_kit, 3)
    outcomes: list[str] = []
    worker = threading.Thread(target=lambda: outcomes.append(execute_action(the_case, hands_kit.hands)))
    worker.start()  # no controller: verification waits
    ledger = hands_kit.hands.ledger
    wait_for(lambda: getattr(ledger.get(the_case.decision_id), "state", None) == "executed", "execution")
    result = abort(the_case.decision_id, "alice", "test", hands_kit.hands)
    worker.join(timeout=30)
    assert ["aborted"] == outcomes
    assert result.rolled_back
    assert template == world.read("web")["spec"]["template"]
    assert "verification_stopped" in hands_kit.steps(the_case.decision_id)


def test_abort_after_the_window_is_refused_and_changes_nothing(
    opa: OpaClient, example_input: dict[str, Any], world: World, hands_kit: Kit
) -> None:
    world.deployment("web")
    the_case = _case(opa, example_input, world, hands_kit, 3)
    with RolloutController(world).running():
        execute_action(the_case, hands_kit.hands)
    generation = _generation(world)
    hands_kit.clock.advance(901)
    with pytest.raises(AbortRefused, match=r"abort window of decision .* closed at") as refused:
        abort(the_case.decision_id, "alice", "test", hands_kit.hands)
    assert "window_closed" == refused.value.reason
    assert generation == _generation(world)


def test_level_4_action_has_no_abort_window(
    opa: OpaClient, example_input: dict[str, Any], world: World, hands_kit: Kit
) -> None:
    world.deployment("web")
    the_case = _case(opa, example_input, world, hands_kit, 4)
    with RolloutController(world).running():
        execute_action(the_case, hands_kit.hands)
    with pytest.raises(AbortRefused, match="only level 3"):
        abort(the_case.decision_id, "alice", "test", hands_kit.hands)


def test_kill_switch_stops_new_executions(
    opa: OpaClient, example_input: dict[str, Any], world: World, hands_kit: Kit
) -> None:
    world.deployment("web")
    generation = _generation(world)
    (hands_kit.state / "kill-switch").touch()
    the_case = _case(opa, example_input, world, hands_kit, 4)
    assert "refused" == execute_action(the_case, hands_kit.hands)
    assert generation == _generation(world)
    assert ["execution_refused"] == hands_kit.notifications()
    assert hands_kit.hands.ledger.get(the_case.decision_id) is None


def test_kill_switch_lets_a_running_action_finish_its_verification(
    opa: OpaClient, example_input: dict[str, Any], world: World, hands_kit: Kit
) -> None:
    world.deployment("web")
    the_case = _case(opa, example_input, world, hands_kit, 4)
    outcomes: list[str] = []
    worker = threading.Thread(target=lambda: outcomes.append(execute_action(the_case, hands_kit.hands)))
    worker.start()
    ledger = hands_kit.hands.ledger
    wait_for(lambda: getattr(ledger.get(the_case.decision_id), "state", None) == "executed", "execution")
    (hands_kit.state / "kill-switch").touch()
    world.complete("web")  # the controller finishes the rollout after the switch
    worker.join(timeout=30)
    assert ["success"] == outcomes


def test_one_decision_restarts_at_most_once_across_retries_and_restarts(
    opa: OpaClient, example_input: dict[str, Any], world: World, tmp_path: Path
) -> None:
    world.deployment("web")
    first = kit(tmp_path / "agent", world.executor())
    the_case = _case(opa, example_input, world, first, 4)
    with RolloutController(world).running():
        assert "success" == execute_action(the_case, first.hands)
        generation = _generation(world)
        assert "duplicate" == execute_action(the_case, first.hands)  # a retry
        first.close()
        restarted = kit(tmp_path / "agent", world.executor())  # the agent restarted: same store
        assert "duplicate" == execute_action(the_case, restarted.hands)
        restarted.close()
        amnesiac = kit(tmp_path / "lost", world.executor())  # its store lost: the stamp still holds
        assert "success" == execute_action(the_case, amnesiac.hands)
        amnesiac.close()
    assert generation == _generation(world)


def test_a_busy_target_is_refused(
    opa: OpaClient, example_input: dict[str, Any], world: World, hands_kit: Kit
) -> None:
    world.deployment("web")
    the_case = _case(opa, example_input, world, hands_kit, 4)
    with hands_kit.hands.guardrails.slot(the_case.action.target) as refusal:
        assert refusal is None
        assert "refused" == execute_action(the_case, hands_kit.hands)
    assert "another action is running" in hands_kit.notes.getvalue()


def test_the_global_cap_refuses_one_more(
    opa: OpaClient, example_input: dict[str, Any], world: World, tmp_path: Path
) -> None:
    world.deployment("web")
    capped = kit(tmp_path / "capped", world.executor(), max_concurrent=1)
    the_case = _case(opa, example_input, world, capped, 4)
    with capped.hands.guardrails.slot("Deployment/elsewhere/other"):
        assert "refused" == execute_action(the_case, capped.hands)
    capped.close()
    assert "the global cap" in capped.notes.getvalue()


def test_an_executor_error_is_not_retried(
    opa: OpaClient, example_input: dict[str, Any], world: World, kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    from pyagent.executors.kubernetes import KubernetesExecutor  # noqa: PLC0415
    from pyagent.kube import KubeTarget, api_client  # noqa: PLC0415

    world.deployment("web")
    generation = _generation(world)
    nobody = kube_cluster.kubeconfig(tmp_path / "nobody", kube_cluster.unprivileged_token)
    forbidden = kit(tmp_path / "forbidden", KubernetesExecutor(api_client(KubeTarget(nobody))))
    the_case = _case(opa, example_input, world, forbidden, 4)
    assert "error" == execute_action(the_case, forbidden.hands)
    assert "duplicate" == execute_action(the_case, forbidden.hands)  # a retry does not act again
    forbidden.close()
    assert generation == _generation(world)
    assert ["execute", "executed", "duplicate"] == forbidden.steps(the_case.decision_id)
    assert ["execution_failed"] == forbidden.notifications()[:1]
    assert (
        "2026-11-26T12:00:00Z"
        == forbidden.history.stats(PATTERN, "rolling_restart", START).last_suboptimal_at
    )


def test_an_agent_restart_resumes_verification_and_never_resends(
    opa: OpaClient, example_input: dict[str, Any], world: World, tmp_path: Path
) -> None:
    """The agent stopped after one change was made (verifying) and during another's execute;
    each ends its change record with its outcome."""
    world.deployment("web")
    world.deployment("api")
    before = kit(tmp_path / "agent", world.executor())
    verifying = _case(opa, example_input, world, before, 4)
    executing = replace(
        verifying, decision_id=str(uuid.uuid4()), action=replace(verifying.action, name="api")
    )
    for each in (verifying, executing):
        before.hands.changes.open(each.decision_id, each.action, (), each.briefing, each.summary)
    ledger = before.hands.ledger
    assert ledger.begin(verifying.decision_id, verifying.action, 4)
    change = before.hands.executor.execute(verifying.action, verifying.decision_id)
    ledger.executed(verifying.decision_id, change, before.clock(), None, None)
    assert ledger.begin(executing.decision_id, executing.action, 4)  # stopped before the patch
    before.close()
    generations = (_generation(world, "web"), _generation(world, "api"))
    after = kit(tmp_path / "agent", world.executor())
    with RolloutController(world).running():
        for thread in recover(after.hands):
            thread.join(timeout=30)
    states = [after.hands.ledger.get(c.decision_id).state for c in (verifying, executing)]  # type: ignore[union-attr]
    after.close()
    assert ["succeeded", "error"] == states
    assert generations == (_generation(world, "web"), _generation(world, "api"))
    assert ["execution_interrupted"] == after.notifications()
    assert ["verification_resumed", "verified"] == after.steps(verifying.decision_id)[-2:]
    closed = {r["decision_id"]: r for r in records(after.state, "change_record_closed")}
    assert "successful" == closed[verifying.decision_id]["close_code"]
    assert ("error", "unsuccessful") == (
        closed[executing.decision_id]["outcome"],
        closed[executing.decision_id]["close_code"],
    )
    assert "check the target" in closed[executing.decision_id]["close_notes"]


def test_kill_switch_leaves_a_human_approved_action_alone(
    opa: OpaClient, example_input: dict[str, Any], world: World, hands_kit: Kit
) -> None:
    """With the switch on the policy sends everything to a human; their approval still acts."""
    world.deployment("web")
    (hands_kit.state / "kill-switch").touch()
    document = policy_input(
        example_input, "Deployment", world.namespace, "web", level=4, action="rolling_restart"
    )
    document["guardrails"]["kill_switch"] = True
    approved = case(opa, document, hands_kit.history, 2)
    with RolloutController(world).running():
        assert "success" == execute_action(approved, hands_kit.hands)


def _routed_settings(
    world: World, opa_server: EmbeddedOpa, tmp_path: Path
) -> tuple[Settings, dict[str, Any]]:
    """An agent whose history qualifies the example OOM restart and whose route sends the
    world's namespace to Kubernetes, and the level-4 example aimed at that namespace."""
    state = tmp_path / "state"
    state.mkdir()
    history_file.import_incidents(
        HistorySQLite(state / "history.db"), history_file.load(EXAMPLES / "history.yaml")
    )
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        (EXAMPLES / "inventory.yaml").read_text().replace("namespace: shop", f"namespace: {world.namespace}")
    )
    settings = Settings(
        state_dir=state,
        opa_url=opa_server.url,
        inventory=inventory,
        kubeconfig=world.kubeconfig,
        executor_routes={f"Deployment/{world.namespace}/*": "kubernetes"},
    )
    payload = json.loads(json.dumps(example("level-4-oom-restart")).replace('"shop"', f'"{world.namespace}"'))
    return settings, payload


def test_a_served_agent_routes_the_target_to_the_kubernetes_executor(
    world: World, opa_server: EmbeddedOpa, tmp_path: Path
) -> None:
    """Webhook in, level 4, the route for this namespace picks Kubernetes; the rest stays dry-run."""
    world.deployment("checkout", replicas=5)
    generation = _generation(world, "checkout")
    settings, payload = _routed_settings(world, opa_server, tmp_path)
    state = settings.state_dir
    with RolloutController(world).running(), serve(settings) as (url, running):
        assert 200 == post(url, payload).status_code
        assert running.agent.drain(60)
    [outcome] = records(state, "outcome")
    assert (4, "success") == (outcome["level"], outcome["outcome"])
    assert generation + 1 == _generation(world, "checkout")
    [executed] = [r for r in records(state, "action_step") if r["step"] == "execute"]
    assert executed["plan"].startswith("server-side dry run accepted")


def test_an_action_being_verified_does_not_hold_up_deciding_the_next_alert(
    world: World, opa_server: EmbeddedOpa, tmp_path: Path
) -> None:
    """One deciding worker: while a level-4 restart waits for its rollout, a level-2 alert
    posted after it is decided and put to a human."""
    world.deployment("checkout", replicas=5)
    settings, payload = _routed_settings(world, opa_server, tmp_path)
    settings, state = replace(settings, workers=1), settings.state_dir
    with serve(settings) as (url, running):
        assert 200 == post(url, payload).status_code
        wait_for(lambda: any(r["step"] == "executed" for r in records(state, "action_step")), "the restart")
        assert 200 == post(url, example("level-2-first-occurrence")).status_code
        wait_for(
            lambda: any(r["step"] == "approval_requested" for r in records(state, "action_step")),
            "the level-2 approval request",
        )
        steps_while_verifying = [r["step"] for r in records(state, "action_step")]
        with RolloutController(world).running():
            assert running.agent.drain(60)
    assert "verified" not in steps_while_verifying
    assert {(4, "success"), (2, "approval_requested")} == {
        (o["level"], o["outcome"]) for o in records(state, "outcome")
    }


def test_a_change_record_is_filed_while_every_execution_thread_verifies(
    world: World, opa_server: EmbeddedOpa, tmp_path: Path
) -> None:
    """One execution thread, waiting for a level-4 restart's rollout: a regulated alert posted
    after it has its change record filed with ServiceNow and its approval asked for meanwhile."""
    world.deployment("checkout", replicas=5)
    settings, payload = _routed_settings(world, opa_server, tmp_path)
    state = settings.state_dir
    with saas() as fakes:
        settings = replace(settings, max_concurrent_actions=1, **servicenow_overrides(fakes.servicenow.url))
        with serve(settings) as (url, running):
            assert 200 == post(url, payload).status_code
            wait_for(lambda: bool(_steps(state, "executed")), "the restart")
            assert 200 == post(url, example("regulated-pci")).status_code
            wait_for(
                lambda: bool(_steps(state, "approval_requested")), "the regulated alert's approval request"
            )
            [asked] = _steps(state, "approval_requested")
            verified_meanwhile = _steps(state, "verified")
            filed = records(state, "change_record_filed")
            with RolloutController(world).running():
                assert running.agent.drain(60)
    assert [] == verified_meanwhile
    assert [asked["decision_id"]] == [record["decision_id"] for record in filed]
    assert filed[0]["number"].startswith("CHG")
    assert {(4, "success"), (2, "approval_requested")} == {
        (o["level"], o["outcome"]) for o in records(state, "outcome")
    }


def _steps(state: Path, step: str) -> list[dict[str, Any]]:
    return [r for r in records(state, "action_step") if r["step"] == step]
