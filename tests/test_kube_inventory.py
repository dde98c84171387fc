"""The Kubernetes inventory source against a real kube-apiserver (the ``kube_cluster`` fixture).

Each test creates its own namespace, Deployments and HPAs through the API as the admin, then
asks the source, which reads with the kubeconfig the test hands it.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyagent import settings
from pyagent.alerts import Alert
from pyagent.errors import ConfigError
from pyagent.kube import KubeTarget
from pyagent.opa import free_port
from pyagent.sources import WORST_CASE_SERVICES
from pyagent.sources.inventory_file import InventoryFile
from pyagent.sources.kube_facts import KubeInventoryConfig, resolve_percent
from pyagent.sources.kube_inventory import KubeInventory, deployment_of_pod
from tests.builders import firing_alert
from tests.kube import KubeCluster
from tests.kube_objects import Admin

ROOT = Path(__file__).resolve().parent.parent
RBAC = ROOT / "deploy" / "kubernetes" / "rbac.yaml"


def oom(namespace: str, **labels: str) -> Alert:
    return firing_alert({"alertname": "KubePodOOMKilled", "namespace": namespace, **labels})


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def admin(kube_cluster: KubeCluster) -> Admin:
    return Admin(kube_cluster)


@pytest.fixture
def kubeconfig(kube_cluster: KubeCluster, tmp_path: Path) -> Path:
    """A kubeconfig for a reader; the admin's token (least privilege is tested on its own)."""
    return kube_cluster.kubeconfig(tmp_path / "kubeconfig", kube_cluster.admin_token)


def source(kubeconfig: Path, **config: Any) -> KubeInventory:
    """The source with no inventory file and no budget from it: the cluster's facts alone."""
    return KubeInventory(KubeTarget(kubeconfig), KubeInventoryConfig(**config), budget_from_figures=False)


# --- replica fraction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "value", "round_up", "expected"),
    [
        (10, "25%", False, 2),
        (10, "25%", True, 3),
        (10, 3, False, 3),
        (3, None, False, 0),
        (4, "100%", False, 4),
    ],
)
def test_percentages_round_down_for_unavailable_and_up_for_surge(
    replicas: int, value: int | str | None, round_up: bool, expected: int
) -> None:
    assert expected == resolve_percent(value, replicas, round_up=round_up)


def test_percentage_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="neither a number nor a percentage"):
        resolve_percent("3", 10, round_up=False)


def test_max_unavailable_3_of_10_is_fraction_03(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "checkout", 10, max_unavailable=3)
    facts = source(kubeconfig).lookup(oom(ns, deployment="checkout"))
    assert () == facts.problems
    assert 0.3 == facts.replica_fraction
    assert ("Deployment", ns, "checkout", 10) == (
        facts.target.kind,
        facts.target.namespace,
        facts.target.name,
        facts.target.replicas,
    )
    assert (1, (ns,)) == (facts.services, facts.namespaces)
    assert facts.stateless is True
    assert facts.shared_infrastructure is False
    assert (False, ()) == (facts.regulated, facts.frameworks)
    assert "production" == facts.target.environment
    assert facts.target.hpa_managed is False
    assert "kubernetes" == facts.details["source"]


@pytest.mark.parametrize(
    ("max_unavailable", "max_surge", "replicas", "fraction"),
    [
        ("25%", None, 10, 0.2),  # 2.5 pods rounds down to 2
        (None, None, 10, 0.2),  # Kubernetes' default is 25%
        ("30%", None, 5, 0.2),  # 1.5 rounds down to 1
        (0, 1, 4, 0.25),  # surge first: still one pod replaced at a time
        ("10%", "10%", 5, 0.2),  # both 0 after rounding: Kubernetes allows 1 unavailable
    ],
)
def test_percent_max_unavailable_rounds_down_as_kubernetes_does(  # noqa: PLR0917 - fixtures and parameters
    admin: Admin,
    kubeconfig: Path,
    max_unavailable: int | str | None,
    max_surge: int | str | None,
    replicas: int,
    fraction: float,
) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "api", replicas, max_unavailable=max_unavailable, max_surge=max_surge)
    facts = source(kubeconfig).lookup(oom(ns, deployment="api"))
    assert () == facts.problems
    assert fraction == facts.replica_fraction


def test_recreate_strategy_disrupts_every_replica(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "batch", 6, strategy="Recreate")
    assert 1.0 == source(kubeconfig).lookup(oom(ns, deployment="batch")).replica_fraction


def test_zero_replicas_is_whole_fraction_with_reason(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "idle", 0)
    facts = source(kubeconfig).lookup(oom(ns, deployment="idle"))
    assert 1.0 == facts.replica_fraction
    assert [f"Deployment {ns}/idle has 0 replicas"] == list(facts.problems)


def test_paused_deployment_is_a_problem(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "held", 4, paused=True)
    facts = source(kubeconfig).lookup(oom(ns, deployment="held"))
    assert 1 == len(facts.problems)
    assert "is paused" in facts.problems[0]


# --- HPA, state, services, shared infrastructure, regulation, environment ------------------------


def test_hpa_targeting_the_deployment_makes_it_hpa_managed(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "search", 6)
    admin.deployment(ns, "other", 2)
    admin.hpa(ns, "search", "search", 3, 12)
    admin.hpa(ns, "decoy", "no-such-deployment", 1, 2)
    inventory = source(kubeconfig)
    facts = inventory.lookup(oom(ns, deployment="search"))
    assert facts.target.hpa_managed is True
    assert {"name": "search", "min": 3, "max": 12} == facts.details["hpa"]
    assert inventory.lookup(oom(ns, deployment="other")).target.hpa_managed is False


def test_persistent_volume_claim_or_annotation_makes_it_stateful(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "db", 1, claim=True)
    admin.deployment(ns, "cache", 3, annotations={"escalation.io/stateful": "true"})
    inventory = source(kubeconfig)
    assert inventory.lookup(oom(ns, deployment="db")).stateless is False
    assert inventory.lookup(oom(ns, deployment="cache")).stateless is False


def test_dependents_annotation_counts_services_and_namespaces(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace()
    admin.deployment(
        ns,
        "auth",
        4,
        labels={"app.kubernetes.io/name": "identity"},
        annotations={"escalation.io/dependents": "checkout, shop/cart"},
    )
    facts = source(kubeconfig).lookup(oom(ns, deployment="auth"))
    assert "identity" == facts.service
    assert 3 == facts.services
    assert tuple(sorted((ns, "shop"))) == facts.namespaces


def test_controlling_owner_counts_as_a_second_service(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace()
    owner = {
        "apiVersion": "example.io/v1",
        "kind": "Gateway",
        "name": "edge",
        "uid": str(uuid.uuid4()),
        "controller": True,
    }
    admin.deployment(ns, "edge-proxy", 2, owner=owner)
    facts = source(kubeconfig).lookup(oom(ns, deployment="edge-proxy"))
    assert 2 == facts.services
    assert "Gateway/edge" == facts.details["owner"]


def test_shared_infrastructure_by_namespace_or_label(admin: Admin, kubeconfig: Path) -> None:
    shared_ns = admin.namespace()
    admin.deployment(shared_ns, "grafana", 2)
    ns = admin.namespace(labels={"app.kubernetes.io/part-of": "istio"})
    admin.deployment(ns, "istiod", 2)
    plain = admin.namespace()
    admin.deployment(plain, "argocd-server", 2, labels={"app.kubernetes.io/part-of": "argocd"})
    admin.deployment(plain, "web", 2)
    inventory = source(kubeconfig, shared_namespaces=frozenset({shared_ns}))
    assert inventory.lookup(oom(shared_ns, deployment="grafana")).shared_infrastructure is True
    assert inventory.lookup(oom(ns, deployment="istiod")).shared_infrastructure is True
    assert inventory.lookup(oom(plain, deployment="argocd-server")).shared_infrastructure is True
    assert inventory.lookup(oom(plain, deployment="web")).shared_infrastructure is False


def test_shared_labels_must_be_key_value_pairs() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        KubeInventoryConfig(shared_labels=("argocd",))


def test_regulated_annotation_on_the_namespace_lists_frameworks(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace(annotations={"escalation.io/regulated": "PCI-DSS, hipaa"})
    admin.deployment(ns, "payments-api", 6, labels={"escalation.io/regulated": "sox"})
    facts = source(kubeconfig).lookup(oom(ns, deployment="payments-api"))
    assert facts.regulated is True
    assert ("pci-dss", "hipaa", "sox") == facts.frameworks


def test_regulated_false_is_not_regulated(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace(labels={"escalation.io/regulated": "false"})
    admin.deployment(ns, "web", 2)
    assert source(kubeconfig).lookup(oom(ns, deployment="web")).regulated is False


def test_environment_label_of_deployment_then_namespace(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace(labels={"escalation.io/environment": "staging"})
    admin.deployment(ns, "web", 2)
    admin.deployment(ns, "canary", 2, labels={"escalation.io/environment": "development"})
    inventory = source(kubeconfig)
    assert "staging" == inventory.lookup(oom(ns, deployment="web")).target.environment
    assert "development" == inventory.lookup(oom(ns, deployment="canary")).target.environment


def test_next_target_label_is_tried_when_the_first_names_no_deployment(
    admin: Admin, kubeconfig: Path
) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "checkout", 5)
    facts = source(kubeconfig).lookup(oom(ns, deployment="checkout-7f9c", service="checkout"))
    assert () == facts.problems
    assert "checkout" == facts.target.name


def test_pod_label_alone_finds_its_deployment(admin: Admin, kubeconfig: Path) -> None:
    """kube-state-metrics alerts name the pod; its name carries the Deployment's."""
    ns = admin.namespace()
    admin.deployment(ns, "checkout", 5)
    facts = source(kubeconfig).lookup(oom(ns, pod="checkout-7d9f8b6c5-x2k4q", container="app"))
    assert () == facts.problems
    assert "checkout" == facts.target.name


@pytest.mark.parametrize(
    ("pod", "deployment"),
    [
        ("checkout-7d9f8b6c5-x2k4q", ["checkout"]),
        ("payments-api-6c8d7f9b4-q7w2x", ["payments-api"]),
        ("web-0", []),  # a StatefulSet's pod
        ("checkout-7d9f8b6c5-xaeio", []),  # vowels are not in Kubernetes' safe alphabet
        ("", []),
    ],
)
def test_deployment_of_pod_reads_only_deployment_pod_names(pod: str, deployment: list[str]) -> None:
    assert deployment == deployment_of_pod(pod)


# --- figures the cluster lacks --------------------------------------------------------------------


def _figures(tmp_path: Path, service: dict[str, Any]) -> InventoryFile:
    """An inventory file with one service's figures, as the Kubernetes source reads them."""
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"services": [service]}))
    return InventoryFile(path)


def test_traffic_and_budget_come_from_the_inventory_file(
    admin: Admin, kubeconfig: Path, tmp_path: Path
) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "checkout", 10, max_unavailable=3)
    figures = _figures(
        tmp_path,
        {
            "name": "checkout",
            "namespace": ns,
            "traffic_fraction": 0.05,
            "error_budget_remaining": 0.8,
            "deployments": [{"name": "checkout", "replicas": 1, "stateless": False}],
        },
    )
    facts = KubeInventory(KubeTarget(kubeconfig), figures=figures).lookup(oom(ns, deployment="checkout"))
    assert () == facts.problems
    assert (0.05, 0.8) == (facts.traffic_fraction, facts.error_budget_remaining)
    assert (0.3, True) == (facts.replica_fraction, facts.stateless)  # the cluster's, not the file's


def test_figures_are_found_for_the_deployment_an_alert_names_by_pod(
    admin: Admin, kubeconfig: Path, tmp_path: Path
) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "checkout", 10, max_unavailable=3)
    figures = _figures(
        tmp_path,
        {
            "name": "shop",
            "namespace": ns,
            "error_budget_remaining": 0.7,
            "deployments": [{"name": "checkout", "replicas": 1, "stateless": True}],
        },
    )
    facts = KubeInventory(KubeTarget(kubeconfig), figures=figures).lookup(
        oom(ns, pod="checkout-7d9f8b6c5-x2k4q")
    )
    assert ((), 0.7) == (facts.problems, facts.error_budget_remaining)


def test_budget_missing_from_the_file_is_the_worst_case(
    admin: Admin, kubeconfig: Path, tmp_path: Path
) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "ledger", 4)
    facts = KubeInventory(KubeTarget(kubeconfig), figures=InventoryFile(tmp_path / "none.yaml")).lookup(
        oom(ns, deployment="ledger")
    )
    assert (0.0, 1.0) == (facts.error_budget_remaining, facts.traffic_fraction)
    assert 1 == len(facts.problems)
    assert "no error budget" in facts.problems[0]
    assert "cannot be read" in facts.problems[0]  # the file's own reason


class Traffic:
    """A traffic source that knows one answer (the Prometheus client is tested against Prometheus)."""

    def __init__(self, answer: float | str) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str, str]] = []

    def fraction(self, service: str, namespace: str, deployment: str) -> float | str:
        self.asked.append((service, namespace, deployment))
        return self.answer


def test_traffic_from_the_traffic_source_when_the_file_lacks_it(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "search", 4, labels={"app.kubernetes.io/name": "search-api"})
    traffic = Traffic(0.07)
    facts = KubeInventory(KubeTarget(kubeconfig), budget_from_figures=False, traffic=traffic).lookup(
        oom(ns, deployment="search")
    )
    assert (0.07, ()) == (facts.traffic_fraction, facts.problems)
    assert [("search-api", ns, "search")] == traffic.asked


def test_unknown_traffic_is_the_whole_and_only_noted(admin: Admin, kubeconfig: Path) -> None:
    """No trigger reads the traffic fraction: not knowing it is noted, not a problem."""
    ns = admin.namespace()
    admin.deployment(ns, "search", 4)
    inventory = KubeInventory(KubeTarget(kubeconfig), budget_from_figures=False, traffic=Traffic("no series"))
    facts = inventory.lookup(oom(ns, deployment="search"))
    assert (1.0, (), "no series") == (
        facts.traffic_fraction,
        facts.problems,
        facts.details["traffic_problem"],
    )


# --- cache --------------------------------------------------------------------------------------


def test_reads_are_cached_until_the_ttl_passes(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "web", 10, max_unavailable=1)
    clock = Clock()
    inventory = KubeInventory(
        KubeTarget(kubeconfig), KubeInventoryConfig(cache_seconds=30), budget_from_figures=False, clock=clock
    )
    assert 0.1 == inventory.lookup(oom(ns, deployment="web")).replica_fraction
    admin.scale(ns, "web", 2)
    clock.now += 29
    assert 0.1 == inventory.lookup(oom(ns, deployment="web")).replica_fraction
    clock.now += 1
    assert 0.5 == inventory.lookup(oom(ns, deployment="web")).replica_fraction


def test_failures_are_not_cached(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace()
    inventory = source(kubeconfig)
    assert inventory.lookup(oom(ns, deployment="late")).problems
    admin.deployment(ns, "late", 2)
    assert () == inventory.lookup(oom(ns, deployment="late")).problems


# --- worst cases --------------------------------------------------------------------------------


def _is_worst_case(facts: Any) -> None:
    assert WORST_CASE_SERVICES == facts.services
    assert (1.0, True, True) == (facts.replica_fraction, facts.shared_infrastructure, facts.regulated)
    assert (False, 0.0) == (facts.stateless, facts.error_budget_remaining)
    assert 1 == len(facts.problems)


def test_missing_deployment_is_worst_case(admin: Admin, kubeconfig: Path) -> None:
    ns = admin.namespace()
    facts = source(kubeconfig).lookup(oom(ns, deployment="ghost"))
    _is_worst_case(facts)
    assert f"no Deployment named ghost in namespace {ns!r}" in facts.problems[0]


def test_alert_without_target_labels_is_worst_case(kubeconfig: Path) -> None:
    facts = source(kubeconfig).lookup(oom("shop"))
    _is_worst_case(facts)
    assert "does not name its target" in facts.problems[0]


def test_forbidden_by_rbac_is_worst_case(admin: Admin, kube_cluster: KubeCluster, tmp_path: Path) -> None:
    ns = admin.namespace()
    admin.deployment(ns, "checkout", 10, max_unavailable=3)
    config = kube_cluster.kubeconfig(tmp_path / "nobody", kube_cluster.unprivileged_token)
    facts = source(config).lookup(oom(ns, deployment="checkout"))
    _is_worst_case(facts)
    assert "forbidden by RBAC (403)" in facts.problems[0]


def test_api_down_is_worst_case(kube_cluster: KubeCluster, tmp_path: Path) -> None:
    """Nothing listens on the kubeconfig's port: connection refused, no exception escapes."""
    config = kube_cluster.kubeconfig(tmp_path / "down", kube_cluster.admin_token)
    text = config.read_text().replace(kube_cluster.url, f"https://127.0.0.1:{free_port()}")
    config.write_text(text)
    facts = source(config).lookup(oom("shop", deployment="checkout"))
    _is_worst_case(facts)
    assert "Kubernetes API at https://127.0.0.1:" in facts.problems[0]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung API server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_api_timeout_is_worst_case(kube_cluster: KubeCluster, tmp_path: Path, silent_port: int) -> None:
    config = kube_cluster.kubeconfig(tmp_path / "hung", kube_cluster.admin_token)
    config.write_text(config.read_text().replace(kube_cluster.url, f"https://127.0.0.1:{silent_port}"))
    facts = source(config, timeout=0.2).lookup(oom("shop", deployment="checkout"))
    _is_worst_case(facts)
    assert "timed out" in facts.problems[0].lower()


def test_unloadable_kubeconfig_is_worst_case(tmp_path: Path) -> None:
    facts = source(tmp_path / "no-kubeconfig").lookup(oom("shop", deployment="checkout"))
    _is_worst_case(facts)
    assert "kubernetes configuration" in facts.problems[0]


def test_kube_context_selects_the_cluster(admin: Admin, kube_cluster: KubeCluster, tmp_path: Path) -> None:
    """A kubeconfig whose current context is a dead cluster: the configured context is read."""
    ns = admin.namespace()
    admin.deployment(ns, "checkout", 10, max_unavailable=3)
    path = kube_cluster.kubeconfig(tmp_path / "two-contexts", kube_cluster.admin_token)
    config = yaml.safe_load(path.read_text())
    dead = {"server": f"https://127.0.0.1:{free_port()}", "certificate-authority": str(kube_cluster.ca_path)}
    config["clusters"].append({"name": "dead", "cluster": dead})
    config["contexts"].append({"name": "dead", "context": {"cluster": "dead", "user": "test"}})
    config["current-context"] = "dead"
    path.write_text(yaml.safe_dump(config))
    alert = oom(ns, deployment="checkout")
    chosen = KubeInventory(KubeTarget(path, context="test"), budget_from_figures=False).lookup(alert)
    assert ((), 0.3) == (chosen.problems, chosen.replica_fraction)
    assert 1.0 == source(path).lookup(alert).replica_fraction  # the current context: down


# --- least privilege ---------------------------------------------------------------------------


def test_shipped_rbac_is_enough_to_read_every_fact(
    admin: Admin, kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    """The ClusterRole of deploy/kubernetes/rbac.yaml, bound to a fresh service account."""
    role = next(d for d in yaml.safe_load_all(RBAC.read_text()) if d["kind"] == "ClusterRole")
    assert {v for rule in role["rules"] for v in rule["verbs"]} == {"get", "list", "watch"}
    _, token = admin.shipped_service_account(RBAC)
    ns = admin.namespace(annotations={"escalation.io/regulated": "pci-dss"})
    admin.deployment(ns, "payments-api", 10, max_unavailable="25%")
    admin.hpa(ns, "payments-api", "payments-api", 3, 12)
    config = kube_cluster.kubeconfig(tmp_path / "agent", token)
    facts = source(config).lookup(oom(ns, deployment="payments-api"))
    assert () == facts.problems
    assert (0.2, True, ("pci-dss",)) == (facts.replica_fraction, facts.target.hpa_managed, facts.frameworks)


# --- configuration ------------------------------------------------------------------------------


def test_settings_choose_the_source_and_read_lists_from_the_environment() -> None:
    environ = {
        "PYAGENT_INVENTORY_SOURCE": "kubernetes",
        "PYAGENT_SHARED_INFRASTRUCTURE_NAMESPACES": "argocd, platform",
        "PYAGENT_SHARED_INFRASTRUCTURE_LABELS": "team=platform",
    }
    loaded = settings.load(None, environ, {})
    assert "kubernetes" == loaded.inventory_source
    assert ("argocd", "platform") == loaded.shared_infrastructure_namespaces
    assert ("team=platform",) == loaded.shared_infrastructure_labels
    assert "file" == settings.load(None, {}, {}).inventory_source


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"inventory_source": "etcd"}, "is not file or kubernetes"),
        ({"traffic_query": "up"}, "prometheus_url"),
        ({"novelty_threshold": 1.5}, "not in 0..1"),
    ],
)
def test_settings_refuse_what_cannot_work(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings.load(None, {}, values)
