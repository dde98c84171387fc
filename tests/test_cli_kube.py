"""``pyagent evaluate`` with the Kubernetes inventory source, against a real kube-apiserver.

The example OOM alert (seen 12 times with success, qualified for level 4) is pointed at a
Deployment the test creates; only the cluster's facts change the decision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pyagent.cli import main
from pyagent.opa import EmbeddedOpa
from tests.kube import KubeCluster
from tests.kube_objects import Admin
from tests.serving import EXAMPLES

NOW = "2026-11-26T12:00:00Z"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state directory with the example history imported."""
    result = CliRunner().invoke(
        main, ["history", "import", str(EXAMPLES / "history.yaml"), "--state-dir", str(tmp_path)]
    )
    assert 0 == result.exit_code, result.output
    return tmp_path


@pytest.fixture
def admin(kube_cluster: KubeCluster) -> Admin:
    return Admin(kube_cluster)


def _evaluate(namespace: str, kube_cluster: KubeCluster, opa: EmbeddedOpa, state: Path, *extra: str) -> str:
    """Evaluate the example OOM alert for ``checkout`` in ``namespace``, configured for the cluster."""
    payload = json.loads((EXAMPLES / "alerts" / "level-4-oom-restart.json").read_text())
    for labels in (payload["commonLabels"], *(a["labels"] for a in payload["alerts"])):
        labels["namespace"] = namespace
    alert_file = state / "alert.json"
    alert_file.write_text(json.dumps(payload))
    figures = state / "inventory.yaml"
    service = {"name": "checkout", "namespace": namespace, "traffic_fraction": 0.05}
    deployments = [{"name": "checkout", "replicas": 1, "stateless": True}]
    figures.write_text(
        yaml.safe_dump({"services": [{**service, "error_budget_remaining": 0.9, "deployments": deployments}]})
    )
    config = state / "config.yaml"
    kubeconfig = kube_cluster.kubeconfig(state / "kubeconfig", kube_cluster.admin_token)
    config.write_text(
        yaml.safe_dump(
            {"inventory_source": "kubernetes", "kubeconfig": str(kubeconfig), "inventory": str(figures)}
        )
    )
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(alert_file),
            "--config",
            str(config),
            "--state-dir",
            str(state),
            "--opa-url",
            opa.url,
            "--now",
            NOW,
            *extra,
        ],
        catch_exceptions=False,
    )
    assert 0 == result.exit_code, result.output
    return result.output


def evaluate_json(namespace: str, kube_cluster: KubeCluster, opa: EmbeddedOpa, state: Path) -> dict[str, Any]:
    """The one evaluation ``pyagent evaluate --json`` prints."""
    [evaluation] = json.loads(_evaluate(namespace, kube_cluster, opa, state, "--json"))
    assert isinstance(evaluation, dict)
    return evaluation


def _triggers(evaluation: dict[str, Any]) -> set[str]:
    return {t["id"] for t in evaluation["decision"]["triggers"]}


def test_max_unavailable_3_of_10_is_fraction_03_and_level_2(
    admin: Admin, kube_cluster: KubeCluster, opa_server: EmbeddedOpa, state: Path
) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "checkout", 10, max_unavailable=3)
    evaluation = evaluate_json(ns, kube_cluster, opa_server, state)
    assert [] == evaluation["context_problems"]
    assert 0.3 == evaluation["input"]["blast_radius"]["replica_fraction"]
    assert 2 == evaluation["decision"]["level"]
    assert {"blast_radius_replicas"} == _triggers(evaluation)


def test_max_unavailable_25_percent_of_10_is_fraction_02(
    admin: Admin, kube_cluster: KubeCluster, opa_server: EmbeddedOpa, state: Path
) -> None:
    """2.5 pods round down to 2: exactly 0.20 fires nothing, so the qualified restart is level 4."""
    ns = admin.namespace()
    admin.deployment(ns, "checkout", 10, max_unavailable="25%")
    evaluation = evaluate_json(ns, kube_cluster, opa_server, state)
    assert 0.2 == evaluation["input"]["blast_radius"]["replica_fraction"]
    assert (4, set()) == (evaluation["decision"]["level"], _triggers(evaluation))


def test_pci_namespace_is_regulated_and_requires_a_change_record(
    admin: Admin, kube_cluster: KubeCluster, opa_server: EmbeddedOpa, state: Path
) -> None:
    ns = admin.namespace(annotations={"escalation.io/regulated": "pci-dss"})
    admin.deployment(ns, "checkout", 10, max_unavailable=1)
    evaluation = evaluate_json(ns, kube_cluster, opa_server, state)
    assert {"regulated": True, "frameworks": ["pci-dss"]} == evaluation["input"]["regulatory"]
    assert 2 == evaluation["decision"]["level"]
    assert {"regulated_asset"} == _triggers(evaluation)
    assert evaluation["decision"]["change_record_required"] is True


def test_evaluate_explains_the_replica_trigger_for_a_person(
    admin: Admin, kube_cluster: KubeCluster, opa_server: EmbeddedOpa, state: Path
) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "checkout", 10, max_unavailable=3)
    text = _evaluate(ns, kube_cluster, opa_server, state)
    assert "level 2 (supervised)" in text
    assert "[2] blast_radius_replicas: replica fraction 0.3 is above 0.2" in text


def test_forbidden_cluster_gives_level_1_with_the_reason(
    admin: Admin, kube_cluster: KubeCluster, opa_server: EmbeddedOpa, state: Path
) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "checkout", 10, max_unavailable=1)
    nobody = KubeCluster(kube_cluster.url, kube_cluster.unprivileged_token, "", kube_cluster.ca_path)
    evaluation = evaluate_json(ns, nobody, opa_server, state)
    assert 1 == evaluation["decision"]["level"]
    assert any("forbidden by RBAC" in p for p in evaluation["context_problems"])
