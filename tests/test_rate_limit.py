"""The autonomous rate limit holds for a burst: alerts decided together, or while earlier
autonomous decisions still wait for an execution thread, count each other; and an action
counts once, not again while its rollout is being verified."""

from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from pyagent.opa import EmbeddedOpa
from pyagent.settings import Settings
from pyagent.sources import history_import
from pyagent.sources.catalog import policy_data
from pyagent.sources.history_sqlite import HistorySQLite
from tests.execution_kit import wait_for
from tests.kube import KubeCluster
from tests.kube_world import RolloutController, World
from tests.serving import EXAMPLES, example, post, records, serve

POLICY = policy_data(Path(__file__).resolve().parent.parent / "rego" / "escalation" / "policy.json")
LIMIT = POLICY["autonomous_rate_limit"]["max_actions"]
BURST = LIMIT + 3


def _oom_alert(serial: int, namespace: str = "shop") -> dict[str, Any]:
    """The level-4 example's alert for deployment ``checkout-<serial>``: each restarts its own
    deployment, so no execution is refused for another one running on the same target."""
    alert: dict[str, Any] = copy.deepcopy(example("level-4-oom-restart")["alerts"][0])
    alert["fingerprint"] = f"{serial:016x}"
    alert["labels"].update(
        deployment=f"checkout-{serial}", pod=f"checkout-{serial}-7d9f8b6c5-x2k4q", namespace=namespace
    )
    return alert


def _inventory(path: Path, namespace: str = "shop") -> Path:
    services = [
        {
            "name": f"checkout-{serial}",
            "namespace": namespace,
            "traffic_fraction": 0.05,
            "error_budget_remaining": 0.8,
            "deployments": [{"name": f"checkout-{serial}", "replicas": 5, "stateless": True}],
        }
        for serial in range(1, BURST + 1)
    ]
    path.write_text(json.dumps({"environment": "production", "services": services}))  # JSON is YAML
    return path


def _settings(state: Path, opa: EmbeddedOpa, namespace: str = "shop") -> Settings:
    state.mkdir(parents=True, exist_ok=True)
    history_import.import_incidents(
        HistorySQLite(state / "history.db"), history_import.load(EXAMPLES / "history.yaml")
    )
    inventory = _inventory(state / "inventory.yaml", namespace)
    return Settings(state_dir=state, opa_url=opa.url, inventory=inventory, max_concurrent_actions=BURST)


def _assert_limit_held(state: Path) -> None:
    decisions = records(state, "decision")
    assert BURST == len(decisions)
    autonomous = [d for d in decisions if d["level"] >= 3]
    held_back = [d for d in decisions if d["level"] < 3]
    assert LIMIT == len(autonomous)
    for decision in held_back:
        assert 2 == decision["level"]
        assert "autonomous_rate_limit" in {t["id"] for t in decision["triggers"]}
    executed = {r["decision_id"] for r in records(state, "action_step") if r["step"] == "execute"}
    assert executed == {d["decision_id"] for d in autonomous}


def test_a_burst_in_one_delivery_gets_no_more_autonomous_actions_than_the_limit(
    tmp_path: Path, opa_server: EmbeddedOpa
) -> None:
    body = example("level-4-oom-restart")
    body["alerts"] = [_oom_alert(serial) for serial in range(1, BURST + 1)]
    with serve(_settings(tmp_path, opa_server)) as (url, running):
        assert 200 == post(url, body).status_code
        assert running.agent.drain(60)
    _assert_limit_held(tmp_path)


@pytest.mark.parametrize("senders", [1, BURST])
def test_a_burst_of_deliveries_gets_no_more_autonomous_actions_than_the_limit(
    tmp_path: Path, opa_server: EmbeddedOpa, senders: int
) -> None:
    template = example("level-4-oom-restart")
    bodies = [{**template, "alerts": [_oom_alert(serial)]} for serial in range(1, BURST + 1)]
    with serve(_settings(tmp_path, opa_server)) as (url, running):
        with ThreadPoolExecutor(max_workers=senders) as pool:
            statuses = list(pool.map(lambda body: post(url, body).status_code, bodies))
        assert [200] * BURST == statuses
        assert running.agent.drain(60)
    _assert_limit_held(tmp_path)


def _executed(state: Path, count: int) -> bool:
    return count == sum(1 for r in records(state, "action_step") if r["step"] == "executed")


def test_an_action_being_verified_counts_once(
    tmp_path: Path, opa_server: EmbeddedOpa, kube_cluster: KubeCluster
) -> None:
    """History counts an action once it is executed; while its rollout is verified (minutes,
    in production) it must not also count as in flight. With two restarts of the limit's three
    executed and still verifying, a third alert is decided at level 4."""
    world = World(kube_cluster, tmp_path)
    for serial in (1, 2, 3):
        world.deployment(f"checkout-{serial}", replicas=5)
    settings = replace(
        _settings(tmp_path / "state", opa_server, world.namespace),
        kubeconfig=world.kubeconfig,
        executor_routes={f"Deployment/{world.namespace}/*": "kubernetes"},
    )
    state, template = settings.state_dir, example("level-4-oom-restart")
    with serve(settings) as (url, running):  # no rollout controller: the rollouts wait
        for serial in (1, 2):
            assert 200 == post(url, {**template, "alerts": [_oom_alert(serial, world.namespace)]}).status_code
            wait_for(partial(_executed, state, serial), f"restart {serial} executed")
        assert 200 == post(url, {**template, "alerts": [_oom_alert(3, world.namespace)]}).status_code
        wait_for(lambda: 3 == len(records(state, "decision")), "the third decision")
        verifying = not records(state, "outcome")
        with RolloutController(world).running():
            assert running.agent.drain(60)
    assert verifying
    third = records(state, "decision")[-1]
    assert (4, []) == (third["level"], [t["id"] for t in third["triggers"]])
    assert LIMIT == 3  # the scenario above is built for a limit of three
