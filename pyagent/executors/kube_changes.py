"""What the Kubernetes executor sends, built from the objects it read: pure functions, no I/O.

Each builder takes the current object (as the API server's JSON) and returns a :class:`Patch`:
the request to send, and the ``undo`` record that returns the object to its state before it.
Every patch of an object we change carries the object's ``resourceVersion`` as a precondition
(a stale read answers 409 Conflict instead of overwriting someone else's change) and stamps
the decision id in the object's own annotations, so a second attempt for the same decision
finds the stamp and sends nothing (:data:`DECISION_ANNOTATION`).

:func:`rollout_status` is the rule ``kubectl rollout status`` applies to a Deployment.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.utils import parse_quantity

from pyagent.errors import ActionRefused
from pyagent.executors import StepResult

DECISION_ANNOTATION = "pyagent.io/decision"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH = "pod-template-hash"
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
MEMORY_STEP = 1.25  # increase_memory_limit raises each container's limit by a quarter
MEBIBYTE = 1024 * 1024

Json = dict[str, Any]


class Conflict(Exception):
    """409 Conflict: the object changed between our read and our write. Read again."""


@dataclass(frozen=True)
class Patch:
    """One PATCH request: ``resource`` is ``deployment``, ``scale`` or ``hpa``."""

    resource: str
    namespace: str
    name: str
    content_type: str
    body: Any
    undo: Json
    summary: str
    done: bool = False  # already made for this decision: send nothing

    @property
    def path(self) -> str:
        base = f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.name}"
        return {
            "deployment": base,
            "scale": f"{base}/scale",
            "hpa": f"/apis/autoscaling/v2/namespaces/{self.namespace}/horizontalpodautoscalers/{self.name}",
        }[self.resource]


def annotations_of(obj: Json) -> dict[str, str]:
    found: dict[str, str] = obj.get("metadata", {}).get("annotations") or {}
    return found


def stamped(obj: Json, decision_id: str) -> bool:
    """Whether ``obj`` was already changed for ``decision_id``."""
    return annotations_of(obj).get(DECISION_ANNOTATION) == decision_id


def _metadata(obj: Json, decision_id: str) -> Json:
    return {
        "resourceVersion": obj["metadata"]["resourceVersion"],
        "annotations": {DECISION_ANNOTATION: decision_id},
    }


def _refuse_paused(deployment: Json, what: str) -> None:
    if deployment.get("spec", {}).get("paused"):
        meta = deployment["metadata"]
        raise ActionRefused(
            f"Deployment {meta['namespace']}/{meta['name']} is paused: {what} would not roll out; "
            "someone paused it on purpose, so a human must decide"
        )


def restart(deployment: Json, decision_id: str, now: datetime) -> Patch:
    """What ``kubectl rollout restart`` sends: the template's ``restartedAt`` annotation."""
    _refuse_paused(deployment, "a restart")
    meta = deployment["metadata"]
    template_annotations = deployment["spec"]["template"].get("metadata", {}).get("annotations") or {}
    at = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "metadata": _metadata(deployment, decision_id),
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}},
    }
    return Patch(
        "deployment",
        meta["namespace"],
        meta["name"],
        STRATEGIC,
        body,
        {
            "kind": "template_annotations",
            "annotations": {RESTARTED_AT: template_annotations.get(RESTARTED_AT)},
        },
        f"rolling restart of Deployment {meta['namespace']}/{meta['name']} (restartedAt {at})",
        done=stamped(deployment, decision_id),
    )


def restore_template_annotations(deployment: Json, undo: Json) -> Patch:
    """Put the template's annotations back (None deletes one): the old ReplicaSet returns."""
    meta = deployment["metadata"]
    body = {"spec": {"template": {"metadata": {"annotations": dict(undo["annotations"])}}}}
    return Patch(
        "deployment",
        meta["namespace"],
        meta["name"],
        STRATEGIC,
        body,
        {},
        "restore the pod template annotations",
    )


def _memory(quantity: str) -> str:
    raised = math.ceil(float(parse_quantity(quantity)) * MEMORY_STEP / MEBIBYTE)  # type: ignore[no-untyped-call]
    return f"{raised}Mi"


def raise_memory(deployment: Json, decision_id: str) -> Patch:
    """Raise every container's memory limit by :data:`MEMORY_STEP` (rounded up to a MiB)."""
    _refuse_paused(deployment, "a new memory limit")
    meta = deployment["metadata"]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    limits = {
        c["name"]: c["resources"]["limits"]["memory"]
        for c in containers
        if (c.get("resources") or {}).get("limits", {}).get("memory")
    }
    if not limits:
        raise ActionRefused(
            f"Deployment {meta['namespace']}/{meta['name']} sets no memory limit: there is none to raise"
        )
    raised = {name: _memory(limit) for name, limit in limits.items()}
    body = {
        "metadata": _metadata(deployment, decision_id),
        "spec": {"template": {"spec": {"containers": _limits(raised)}}},
    }
    changes = ", ".join(f"{n} {limits[n]} -> {raised[n]}" for n in sorted(raised))
    return Patch(
        "deployment",
        meta["namespace"],
        meta["name"],
        STRATEGIC,
        body,
        {"kind": "memory", "limits": limits},
        f"memory limits of Deployment {meta['namespace']}/{meta['name']}: {changes}",
        done=stamped(deployment, decision_id),
    )


def _limits(limits: dict[str, str]) -> list[Json]:
    return [{"name": n, "resources": {"limits": {"memory": m}}} for n, m in sorted(limits.items())]


def restore_memory(deployment: Json, undo: Json) -> Patch:
    meta = deployment["metadata"]
    body = {"spec": {"template": {"spec": {"containers": _limits(dict(undo["limits"]))}}}}
    return Patch("deployment", meta["namespace"], meta["name"], STRATEGIC, body, {}, "restore memory limits")


def previous_template(deployment: Json, replica_sets: list[Json]) -> Json:
    """The pod template of the revision before the current one, as ``kubectl rollout undo`` finds it."""
    meta = deployment["metadata"]
    current = int(annotations_of(deployment).get(REVISION, "0"))
    owned = [
        rs
        for rs in replica_sets
        if any(ref.get("uid") == meta["uid"] for ref in rs["metadata"].get("ownerReferences") or [])
    ]
    older = [rs for rs in owned if 0 < int(annotations_of(rs).get(REVISION, "0")) < current]
    if not older:
        raise ActionRefused(f"Deployment {meta['namespace']}/{meta['name']} has no previous revision")
    previous = max(older, key=lambda rs: int(annotations_of(rs)[REVISION]))
    template: Json = copy.deepcopy(previous["spec"]["template"])
    template.get("metadata", {}).get("labels", {}).pop(TEMPLATE_HASH, None)
    return template


def replace_template(deployment: Json, template: Json, decision_id: str | None, summary: str) -> Patch:
    """A JSON patch replacing the pod template; with a decision id, guarded by ``resourceVersion``."""
    meta = deployment["metadata"]
    ops: list[Json] = [{"op": "replace", "path": "/spec/template", "value": template}]
    if decision_id is not None:
        ops = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
            *ops,
            {"op": "add", "path": "/metadata/annotations", "value": {**annotations_of(deployment),
                                                                     DECISION_ANNOTATION: decision_id}},
        ]  # fmt: skip
    return Patch(
        "deployment",
        meta["namespace"],
        meta["name"],
        JSON_PATCH,
        ops,
        {"kind": "template", "template": deployment["spec"]["template"]},
        summary,
        done=decision_id is not None and stamped(deployment, decision_id),
    )


def scale(scale_obj: Json, delta: int) -> Patch:
    """``/scale`` to the current replicas plus ``delta``, on the read ``resourceVersion`` only."""
    meta, current = scale_obj["metadata"], int(scale_obj.get("spec", {}).get("replicas", 0))
    body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "spec": {"replicas": current + delta}}
    return Patch(
        "scale",
        meta["namespace"],
        meta["name"],
        MERGE,
        body,
        {"kind": "scale", "replicas": current, "raised_to": current + delta},
        f"scale Deployment {meta['namespace']}/{meta['name']} from {current} to {current + delta} replicas",
    )


def raise_hpa(hpa: Json, deployment: Json, delta: int, decision_id: str) -> Patch:
    """Raise the HPA's floor so the Deployment grows by exactly ``delta`` replicas (``maxReplicas``
    follows when it must): ``minReplicas`` = max(current replicas, minReplicas) + ``delta``."""
    meta, spec = hpa["metadata"], hpa["spec"]
    low, high = spec.get("minReplicas"), int(spec["maxReplicas"])
    running = int(deployment.get("spec", {}).get("replicas", 1))
    floor = max(running, low or 1) + delta
    body = {
        "metadata": _metadata(hpa, decision_id),
        "spec": {"minReplicas": floor, "maxReplicas": max(high, floor)},
    }
    return Patch(
        "hpa",
        meta["namespace"],
        meta["name"],
        MERGE,
        body,
        {"kind": "hpa", "name": meta["name"], "minReplicas": low, "maxReplicas": high, "raised_to": floor},
        f"HPA {meta['namespace']}/{meta['name']}: minReplicas {low} -> {floor}, maxReplicas {high} -> "
        f"{max(high, floor)}",
        done=stamped(hpa, decision_id),
    )


def rollout_status(  # noqa: PLR0911 - one return per rule, in kubectl's order
    deployment: Json, generation: int, replicas: int | None = None
) -> StepResult | str:
    """Done (a :class:`StepResult`), or what the rollout still waits for (a string).

    ``kubectl rollout status``: the controller observed the generation (at least ``generation``,
    the one our change made), all replicas are updated, no old ones remain, the updated ones
    are available; ``ProgressDeadlineExceeded`` is a failure. ``replicas``: a count that must
    also be available (a scale-up)."""
    spec, status = deployment.get("spec", {}), deployment.get("status") or {}
    wanted = max(int(deployment["metadata"].get("generation", 0)), generation)
    observed = int(status.get("observedGeneration", 0))
    if observed < wanted:
        return f"generation {wanted} not yet observed (at {observed})"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return StepResult(
                False, f"rollout failed: ProgressDeadlineExceeded: {condition.get('message', '')}"
            )
    desired = int(spec.get("replicas", 1))
    updated, total = int(status.get("updatedReplicas", 0)), int(status.get("replicas", 0))
    available = int(status.get("availableReplicas", 0))
    if updated < desired:
        return f"{updated} of {desired} replicas updated"
    if total > updated:
        return f"{total - updated} old replicas pending termination"
    if available < updated:
        return f"{available} of {updated} updated replicas available"
    if replicas is not None and available < replicas:
        return f"{available} of {replicas} replicas available"
    return StepResult(
        True, f"rollout complete: {available} of {desired} replicas available (generation {observed})"
    )
