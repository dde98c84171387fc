"""The Kubernetes executor against a real kube-apiserver (controllers played by the test)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client

from pyagent.cli import main
from pyagent.errors import ActionRefused, ExecutorError
from pyagent.executors import Change, Deadline, ProposedAction
from pyagent.executors import kube_changes as changes
from pyagent.executors.kubernetes import KubernetesExecutor
from pyagent.kube import KubeTarget, api_client
from pyagent.opa import EmbeddedOpa
from tests.kube import KubeCluster
from tests.kube_world import CertManager, RolloutController, World
from tests.serving import EXAMPLES

DECISION = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
def world(kube_cluster: KubeCluster, tmp_path: Path) -> World:
    return World(kube_cluster, tmp_path)


@pytest.fixture
def completing(world: World) -> Iterator[RolloutController]:
    with RolloutController(world, "complete").running() as controller:
        yield controller


def _action(world: World, kind: str, name: str, delta: int = 0) -> ProposedAction:
    return ProposedAction(kind, "Deployment", world.namespace, name, delta)


def _template_annotations(world: World, name: str) -> dict[str, str]:
    found: dict[str, str] = world.read(name)["spec"]["template"]["metadata"].get("annotations") or {}
    return found


def test_plan_is_a_server_side_dry_run_that_changes_nothing(world: World) -> None:
    before = world.deployment("web")
    plan = world.executor().plan(_action(world, "rolling_restart", "web"))
    assert plan.startswith("server-side dry run accepted: PATCH /apis/apps/v1/namespaces/")
    assert changes.RESTARTED_AT in plan
    assert before["metadata"]["resourceVersion"] == world.read("web")["metadata"]["resourceVersion"]


@pytest.mark.parametrize("kind", ["rolling_restart", "log_pipeline_restart"])
def test_restart_sends_the_kubectl_patch_and_verifies(world: World, completing: object, kind: str) -> None:
    before = world.deployment("web")
    executor, action = world.executor(), _action(world, kind, "web")
    change = executor.execute(action, DECISION)
    after = world.read("web")
    assert before["metadata"]["generation"] + 1 == after["metadata"]["generation"]
    assert changes.RESTARTED_AT in _template_annotations(world, "web")
    assert DECISION == after["metadata"]["annotations"][changes.DECISION_ANNOTATION]
    result = executor.verify(action, change, Deadline.after(30, poll=0.05))
    assert result.ok, result.detail
    assert "rollout complete" in result.detail


def test_paused_deployment_is_refused_and_left_alone(world: World) -> None:
    before = world.deployment("web", paused=True)
    with pytest.raises(ActionRefused, match="paused"):
        world.executor().execute(_action(world, "rolling_restart", "web"), DECISION)
    assert before["metadata"]["generation"] == world.read("web")["metadata"]["generation"]


def test_second_execute_for_one_decision_sends_nothing(world: World) -> None:
    """The decision stamp on the Deployment holds even when the agent's own record is lost."""
    world.deployment("web")
    action = _action(world, "rolling_restart", "web")
    first = world.executor().execute(action, DECISION)
    generation = world.read("web")["metadata"]["generation"]
    again = world.executor().execute(action, DECISION)
    assert first.sent
    assert not again.sent
    assert generation == world.read("web")["metadata"]["generation"]


def test_rollback_of_a_restart_restores_the_template(world: World) -> None:
    world.deployment("web")
    executor, action = world.executor(), _action(world, "rolling_restart", "web")
    template = world.read("web")["spec"]["template"]
    change = executor.execute(action, DECISION)
    result = executor.rollback(action, change)
    assert result.ok, result.detail
    assert template == world.read("web")["spec"]["template"]


def test_verification_times_out_when_the_rollout_never_completes(world: World) -> None:
    world.deployment("web")
    executor, action = world.executor(), _action(world, "rolling_restart", "web")
    change = executor.execute(action, DECISION)
    result = executor.verify(action, change, Deadline.after(0.3, poll=0.05))
    assert not result.ok
    assert "not done by the verification deadline" in result.detail


def test_progress_deadline_exceeded_fails_verification(world: World) -> None:
    world.deployment("web")
    executor, action = world.executor(), _action(world, "rolling_restart", "web")
    with RolloutController(world, "deadline").running():
        change = executor.execute(action, DECISION)
        result = executor.verify(action, change, Deadline.after(30, poll=0.05))
    assert not result.ok
    assert "ProgressDeadlineExceeded" in result.detail


def test_plain_scale_up_patches_scale_and_rolls_back_to_the_count(world: World, completing: object) -> None:
    world.deployment("api", replicas=3)
    executor, action = world.executor(), _action(world, "scale_up", "api", delta=2)
    change = executor.execute(action, DECISION)
    assert 5 == world.read("api")["spec"]["replicas"]
    assert executor.verify(action, change, Deadline.after(30, poll=0.05)).ok
    assert executor.rollback(action, change).ok
    assert 3 == world.read("api")["spec"]["replicas"]


def test_stale_scale_patch_is_refused_with_a_conflict(world: World) -> None:
    """``resourceVersion`` is a precondition: a write based on an old read changes nothing."""
    world.deployment("api", replicas=3)
    stale = json.loads(
        world.apps.read_namespaced_deployment_scale("api", world.namespace, _preload_content=False).data
    )
    world.apps.patch_namespaced_deployment_scale(
        "api", world.namespace, {"spec": {"replicas": 4}}, _content_type=changes.MERGE
    )
    patch = changes.scale(stale, 2)
    with pytest.raises(client.ApiException) as raised:
        world.apps.patch_namespaced_deployment_scale(
            "api", world.namespace, patch.body, _content_type=patch.content_type
        )
    assert 409 == raised.value.status
    assert 4 == world.read("api")["spec"]["replicas"]


def test_scale_up_under_concurrent_writers_never_applies_a_stale_or_double_change(world: World) -> None:
    """Other writers keep changing the Deployment: each scale-up either lands once (conflicts are
    re-read and rebuilt) or gives up with an error having changed nothing."""
    world.deployment("api", replicas=3)
    stop = threading.Event()

    def churn() -> None:
        count = 0
        while not stop.wait(0.005):
            count += 1
            world.apps.patch_namespaced_deployment(
                "api", world.namespace, {"metadata": {"labels": {"churn": str(count)}}},
                _content_type=changes.MERGE,
            )  # fmt: skip

    writer = threading.Thread(target=churn, daemon=True)
    writer.start()
    landed, gave_up = 0, []
    try:
        for index in range(5):
            try:
                world.executor().execute(
                    _action(world, "scale_up", "api", delta=1), f"{DECISION[:-1]}{index}"
                )
            except ExecutorError as exc:
                gave_up.append(str(exc))
            else:
                landed += 1
    finally:
        stop.set()
        writer.join(timeout=10)
    assert 3 + landed == world.read("api")["spec"]["replicas"]
    assert all("changed under us" in reason for reason in gave_up)


def test_hpa_scale_up_raises_the_floor_by_the_delta_only(world: World) -> None:
    world.deployment("search", replicas=3)
    world.hpa("search", minimum=2, maximum=4)
    for bump in range(3):  # the HPA's own generation runs ahead of the Deployment's
        world.autoscaling.patch_namespaced_horizontal_pod_autoscaler(
            "search", world.namespace, {"spec": {"maxReplicas": 4 + bump % 2}}, _content_type=changes.MERGE
        )
    executor, action = world.executor(), _action(world, "scale_up", "search", delta=2)
    change = executor.execute(action, DECISION)
    hpa = world.read_hpa("search")["spec"]
    assert (5, 5) == (hpa["minReplicas"], hpa["maxReplicas"])
    assert 3 == world.read("search")["spec"]["replicas"]  # the HPA, not us, scales the Deployment
    with RolloutController(world, "complete").running():
        result = executor.verify(action, change, Deadline.after(30, poll=0.05))
    assert result.ok, result.detail
    assert 5 == world.read("search")["status"]["availableReplicas"]
    again = executor.execute(action, DECISION)
    assert not again.sent
    assert 5 == world.read_hpa("search")["spec"]["minReplicas"]
    assert executor.rollback(action, change).ok
    hpa = world.read_hpa("search")["spec"]
    assert (2, 4) == (hpa["minReplicas"], hpa["maxReplicas"])


def test_rollback_deployment_returns_to_the_previous_revision(world: World) -> None:
    current = world.deployment("shop")
    world.replica_set(current, 1, "registry.example/app:0")
    world.replica_set(current, 2, "registry.example/app:1")
    executor, action = world.executor(), _action(world, "rollback_deployment", "shop")
    change = executor.execute(action, DECISION)
    template = world.read("shop")["spec"]["template"]
    assert "registry.example/app:0" == template["spec"]["containers"][0]["image"]
    assert "pod-template-hash" not in template["metadata"]["labels"]
    assert executor.rollback(action, change).ok
    assert (
        "registry.example/app:1" == world.read("shop")["spec"]["template"]["spec"]["containers"][0]["image"]
    )


def test_rollback_deployment_without_a_previous_revision_is_refused(world: World) -> None:
    world.deployment("shop")
    with pytest.raises(ActionRefused, match="no previous revision"):
        world.executor().execute(_action(world, "rollback_deployment", "shop"), DECISION)


def test_increase_memory_limit_raises_by_a_quarter_and_rolls_back(world: World) -> None:
    world.deployment("cache", memory="256Mi")
    executor, action = world.executor(), _action(world, "increase_memory_limit", "cache")

    def limit() -> str:
        return str(
            world.read("cache")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        )

    change = executor.execute(action, DECISION)
    assert "320Mi" == limit()
    assert executor.rollback(action, change).ok
    assert "256Mi" == limit()


def test_certificate_rotation_renews_the_workloads_certificates_as_cmctl_does(world: World) -> None:
    world.deployment("gateway", secret="gateway-tls")
    cert_manager = CertManager(world)
    cert_manager.certificate("gateway", "gateway-tls", revision=3)
    cert_manager.certificate("unrelated", "other-tls")
    executor, action = world.executor(), _action(world, "certificate_rotation", "gateway")
    assert "condition Issuing=True reason ManuallyTriggered" in executor.plan(action)
    assert 1 == len(cert_manager.read("gateway")["status"]["conditions"])  # the plan changed nothing
    change = executor.execute(action, DECISION)
    conditions = {c["type"]: c for c in cert_manager.read("gateway")["status"]["conditions"]}
    assert "ManuallyTriggered" == conditions["Issuing"]["reason"]
    assert "Issuing" not in {c["type"] for c in cert_manager.read("unrelated")["status"]["conditions"]}
    assert not executor.execute(action, DECISION).sent
    waiting = executor.verify(action, change, Deadline.after(0.2, poll=0.05))
    assert not waiting.ok
    cert_manager.issued("gateway", 4)
    result = executor.verify(action, change, Deadline.after(30, poll=0.05))
    assert result.ok, result.detail
    assert not executor.rollback(action, change).ok  # a re-issued certificate cannot be withdrawn


def test_certificate_rotation_without_a_certificate_is_refused(world: World) -> None:
    world.deployment("gateway", secret="gateway-tls")
    CertManager(world)
    with pytest.raises(ActionRefused, match="no cert-manager Certificate"):
        world.executor().execute(_action(world, "certificate_rotation", "gateway"), DECISION)


def test_missing_deployment_is_refused(world: World) -> None:
    with pytest.raises(ActionRefused, match="not found"):
        world.executor().execute(_action(world, "rolling_restart", "ghost"), DECISION)


def test_forbidden_user_gets_an_executor_error(
    world: World, kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    world.deployment("web")
    kubeconfig = kube_cluster.kubeconfig(tmp_path / "nobody", kube_cluster.unprivileged_token)
    executor = KubernetesExecutor(api_client(KubeTarget(kubeconfig)), timeout=5.0)
    with pytest.raises(ExecutorError, match="403"):
        executor.execute(_action(world, "rolling_restart", "web"), DECISION)
    with pytest.raises(ExecutorError, match="403"):
        executor.plan(_action(world, "rolling_restart", "web"))


def test_rollback_of_a_change_made_by_an_earlier_attempt_says_so(world: World) -> None:
    world.deployment("web")
    result = world.executor().rollback(_action(world, "rolling_restart", "web"), Change("x", {}, sent=False))
    assert not result.ok
    assert "earlier attempt" in result.detail


def test_evaluate_with_the_kubernetes_executor_shows_the_server_side_dry_run(
    world: World, opa_server: EmbeddedOpa, tmp_path: Path
) -> None:
    """``pyagent evaluate`` plans a level-4 restart through the API server's dry run, changing nothing."""
    before = world.deployment("checkout", replicas=5)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        (EXAMPLES / "inventory.yaml").read_text().replace("namespace: shop", f"namespace: {world.namespace}")
    )
    payload = tmp_path / "alert.json"
    payload.write_text(
        (EXAMPLES / "alerts" / "level-4-oom-restart.json")
        .read_text()
        .replace('"shop"', f'"{world.namespace}"')
    )
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"executor": "kubernetes", "kubeconfig": str(world.kubeconfig)}))
    runner = CliRunner()
    state = str(tmp_path / "state")
    imported = runner.invoke(
        main, ["history", "import", str(EXAMPLES / "history.yaml"), "--state-dir", state]
    )
    assert 0 == imported.exit_code, imported.output
    result = runner.invoke(
        main,
        ["evaluate", str(payload), "--config", str(config), "--state-dir", state, "--opa-url", opa_server.url,
         "--inventory", str(inventory), "--now", "2026-11-26T12:00:00Z"],
        catch_exceptions=False,
    )  # fmt: skip
    assert 0 == result.exit_code, result.output
    assert "level 4 (autonomous)" in result.output
    path = f"/apis/apps/v1/namespaces/{world.namespace}/deployments/checkout"
    assert (
        f"plan: server-side dry run accepted: PATCH {path} (application/strategic-merge-patch+json)"
        in result.output
    )
    assert before["metadata"]["resourceVersion"] == world.read("checkout")["metadata"]["resourceVersion"]
