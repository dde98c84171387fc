"""The Kubernetes executor: the catalog's actions on Deployments, through the official client.

| action | change |
|---|---|
| ``rolling_restart``, ``log_pipeline_restart`` | ``restartedAt`` (as ``kubectl rollout restart``) |
| ``scale_up`` | with an HPA: its ``minReplicas`` (and ``maxReplicas``); without: ``/scale`` |
| ``rollback_deployment`` | the template of the previous revision, as ``kubectl rollout undo`` |
| ``increase_memory_limit`` | each container's memory limit, raised by a quarter |
| ``certificate_rotation`` | its Secrets' cert-manager Certificates, renewed as ``cmctl renew`` |

``plan`` builds the same request ``execute`` would send and sends it with ``dryRun=All``: the
API server validates and admits it, and answers what the object would become, changing
nothing. ``execute`` sends it once: a 409 Conflict (the object changed since it was read) is
answered by reading again and rebuilding the request, at most :data:`CONFLICT_ATTEMPTS` times;
any other failure raises :class:`ExecutorError` and is not retried. ``verify`` polls the
Deployment until its rollout is complete by ``kubectl rollout status``'s rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pyagent.errors import ActionRefused, ExecutorError
from pyagent.executors import Change, Deadline, ProposedAction, StepResult, poll
from pyagent.executors import kube_changes as changes
from pyagent.executors.kube_certs import Rotation
from pyagent.executors.kube_changes import Conflict, Json, Patch

CONFLICT_ATTEMPTS = 3
PLAN_STAMP = "(decision id)"
FIELD_MANAGER = "pyagent"
CONFLICT = 409
NOT_FOUND = 404
RESTARTS = frozenset({"rolling_restart", "log_pipeline_restart"})
ACTIONS = RESTARTS | {"scale_up", "rollback_deployment", "increase_memory_limit", "certificate_rotation"}


class KubernetesExecutor:
    """Acts on Deployments in the cluster ``api`` reaches; every call times out after ``timeout``."""

    def __init__(
        self,
        api: client.ApiClient,
        timeout: float = 3.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.apps = client.AppsV1Api(api)
        self.autoscaling = client.AutoscalingV2Api(api)
        self.timeout = timeout
        self.clock = clock
        self.rotation = Rotation(client.CustomObjectsApi(api), self._call, self._deployment, clock)

    # --- the API, as JSON ---------------------------------------------------------------

    def _call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Json:
        try:
            response = method(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
        except ApiException as exc:
            if exc.status == CONFLICT:
                raise Conflict(what) from exc
            if exc.status == NOT_FOUND:
                raise ActionRefused(f"{what}: not found") from exc
            raise ExecutorError(f"{what}: HTTP {exc.status} {exc.reason}: {_message(exc)}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ExecutorError(f"{what}: {type(exc).__name__}: {exc}") from exc
        loaded: Json = json.loads(response.data)
        return loaded

    def _deployment(self, action: ProposedAction) -> Json:
        return self._call(
            f"read Deployment {action.namespace}/{action.name}",
            self.apps.read_namespaced_deployment,
            action.name,
            action.namespace,
        )

    def _hpa_for(self, action: ProposedAction) -> Json | None:
        """The HPA whose scale target is the action's Deployment, if one exists."""
        listed = self._call(
            f"list HPAs in {action.namespace}",
            self.autoscaling.list_namespaced_horizontal_pod_autoscaler,
            action.namespace,
        )
        for hpa in listed.get("items", []):
            ref = hpa["spec"]["scaleTargetRef"]
            if ref.get("kind") == "Deployment" and ref.get("name") == action.name:
                found: Json = hpa
                found.setdefault("metadata", {})["namespace"] = action.namespace
                return found
        return None

    def _send(self, patch: Patch, dry_run: bool) -> Json:
        method = {
            "deployment": self.apps.patch_namespaced_deployment,
            "scale": self.apps.patch_namespaced_deployment_scale,
            "hpa": self.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
        }[patch.resource]
        extra = {"dry_run": "All"} if dry_run else {}
        return self._call(
            f"PATCH {patch.path}",
            method,
            patch.name,
            patch.namespace,
            patch.body,
            field_manager=FIELD_MANAGER,
            _content_type=patch.content_type,
            **extra,
        )

    # --- what to send ---------------------------------------------------------------------

    def _build(self, action: ProposedAction, decision_id: str) -> Patch:
        """Read the target and build the request for ``action``."""
        if action.kind != "Deployment" or action.type not in ACTIONS:
            raise ActionRefused(
                f"the Kubernetes executor does not carry out {action.type} on a {action.kind}"
            )
        if action.type == "scale_up":
            return self._build_scale(action, decision_id)
        deployment = self._deployment(action)
        if action.type in RESTARTS:
            return changes.restart(deployment, decision_id, self.clock())
        if action.type == "increase_memory_limit":
            return changes.raise_memory(deployment, decision_id)
        replica_sets = self._call(
            f"list ReplicaSets in {action.namespace}", self.apps.list_namespaced_replica_set, action.namespace
        )
        template = changes.previous_template(deployment, replica_sets.get("items", []))
        summary = f"roll Deployment {action.namespace}/{action.name} back to its previous revision"
        return changes.replace_template(deployment, template, decision_id, summary)

    def _build_scale(self, action: ProposedAction, decision_id: str) -> Patch:
        if action.replicas_delta <= 0:
            raise ActionRefused(f"scale_up by {action.replicas_delta} replicas adds none")
        hpa = self._hpa_for(action)
        if hpa is not None:
            return changes.raise_hpa(hpa, self._deployment(action), action.replicas_delta, decision_id)
        scale = self._call(
            f"read /scale of Deployment {action.namespace}/{action.name}",
            self.apps.read_namespaced_deployment_scale,
            action.name,
            action.namespace,
        )
        return changes.scale(scale, action.replicas_delta)

    # --- the Executor protocol ------------------------------------------------------------

    def plan(self, action: ProposedAction) -> str:
        """The request, checked by the API server's dry run (``dryRun=All``); changes nothing."""
        if action.type == "certificate_rotation" and action.kind == "Deployment":
            return self.rotation.plan(action)
        try:
            patch = self._build(action, PLAN_STAMP)
            self._send(patch, dry_run=True)
        except Conflict:
            return f"{action.type} on {action.target}: the target is changing; plan again"
        return (
            f"server-side dry run accepted: PATCH {patch.path} ({patch.content_type}) "
            f"{json.dumps(patch.body, sort_keys=True)}: {patch.summary}"
        )

    def execute(self, action: ProposedAction, decision_id: str) -> Change:
        if action.type == "certificate_rotation" and action.kind == "Deployment":
            return self.rotation.execute(action, decision_id)
        for _attempt in range(CONFLICT_ATTEMPTS):
            patch = self._build(action, decision_id)
            if patch.done:
                return Change(f"already done for decision {decision_id}; nothing sent", {}, sent=False)
            try:
                answer = self._send(patch, dry_run=False)
            except Conflict:
                continue  # nothing was applied: read again and rebuild
            # the Deployment generation the rollout must reach; an HPA's own does not count
            generation = int(answer["metadata"].get("generation", 0)) if patch.resource == "deployment" else 0
            return Change(patch.summary, {**patch.undo, "generation": generation})
        raise ExecutorError(
            f"{action.type} on {action.target}: changed under us {CONFLICT_ATTEMPTS} times; not sent"
        )

    def verify(self, action: ProposedAction, change: Change, deadline: Deadline) -> StepResult:
        if change.undo.get("kind") == "certificate":
            return self.rotation.verify(action, change, deadline)
        generation = int(change.undo.get("generation", 0))
        raised = change.undo.get("raised_to")
        wanted = int(raised) if raised is not None else None
        last_error = ""

        def check() -> StepResult | str:
            nonlocal last_error
            try:
                deployment = self._deployment(action)
            except ExecutorError as exc:  # reading again is not acting again: keep polling
                last_error = str(exc)
                return f"cannot read the Deployment: {last_error}"
            return changes.rollout_status(deployment, generation, wanted)

        return poll(deadline, check, f"{action.type} on {action.target}")

    def rollback(self, action: ProposedAction, change: Change) -> StepResult:
        undo = dict(change.undo)
        kind = undo.get("kind")
        if not change.sent or kind is None:
            return StepResult(False, "nothing recorded to undo: the change was made by an earlier attempt")
        if kind == "certificate":
            return StepResult(False, "a re-issued certificate cannot be withdrawn; humans must look")
        if kind == "scale":
            return self._unscale(action, undo)
        if kind == "hpa":
            body = {"spec": {"minReplicas": undo["minReplicas"], "maxReplicas": undo["maxReplicas"]}}
            patch = Patch(
                "hpa", action.namespace, undo["name"], changes.MERGE, body, {}, "restore HPA bounds"
            )
        else:
            patch = _restore(kind, self._deployment(action), undo)
        try:
            self._send(patch, dry_run=False)
        except Conflict as exc:
            raise ExecutorError(f"rollback of {action.target}: conflict on {exc}") from exc
        return StepResult(True, f"{patch.summary} on {action.target}: PATCH {patch.path} sent")

    def _unscale(self, action: ProposedAction, undo: Json) -> StepResult:
        for _attempt in range(CONFLICT_ATTEMPTS):
            scale = self._call(
                f"read /scale of Deployment {action.target}",
                self.apps.read_namespaced_deployment_scale,
                action.name,
                action.namespace,
            )
            current = int(scale.get("spec", {}).get("replicas", 0))
            if current != undo["raised_to"]:
                return StepResult(
                    False,
                    f"{action.target} has {current} replicas, not the {undo['raised_to']} we set: "
                    "someone changed it since; left alone",
                )
            patch = changes.scale(scale, int(undo["replicas"]) - current)
            try:
                self._send(patch, dry_run=False)
            except Conflict:
                continue
            return StepResult(
                True, f"scaled {action.target} back from {current} to {undo['replicas']} replicas"
            )
        raise ExecutorError(
            f"rollback of {action.target}: the scale changed under us {CONFLICT_ATTEMPTS} times"
        )


def _restore(kind: str, deployment: Json, undo: Json) -> Patch:
    """The patch that undoes a Deployment change of ``kind``."""
    if kind == "template_annotations":
        return changes.restore_template_annotations(deployment, undo)
    if kind == "memory":
        return changes.restore_memory(deployment, undo)
    return changes.replace_template(deployment, undo["template"], None, "restore the previous template")


def _message(exc: ApiException) -> str:
    """The ``message`` of the Status the API server answered with, or its body."""
    try:
        return str(json.loads(exc.body or "{}").get("message", exc.body))
    except ValueError:
        return str(exc.body)
