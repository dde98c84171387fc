"""The embedded default: says exactly what it would call, changes nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from pyagent.executors import Change, Deadline, ProposedAction, StepResult

log = logging.getLogger("pyagent.executor.dryrun")

DEPLOYMENTS = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def _call(action: ProposedAction, now: datetime) -> str:
    """The Kubernetes API call a real executor would make for this action at ``now``."""
    path = DEPLOYMENTS.format(namespace=action.namespace, name=action.name)
    restart = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now.isoformat()}}}}}
    calls = {
        "rolling_restart": f"PATCH {path} (strategic-merge) {json.dumps(restart)}",
        "log_pipeline_restart": f"PATCH {path} (strategic-merge) {json.dumps(restart)}",
        "scale_up": f"PATCH {path}/scale spec.replicas += {action.replicas_delta} (or HPA minReplicas)",
        "rollback_deployment": f"PATCH {path} spec.template = previous ReplicaSet's template",
        "increase_memory_limit": f"PATCH {path} spec.template.spec.containers[*].resources.limits.memory",
        "certificate_rotation": f"PATCH /api/v1/namespaces/{action.namespace}/secrets/{action.name}-tls"
        " (re-issue)",
        "drain_node": f"POST /api/v1/nodes/{action.name} cordon + evictions",
        "restart_container": f"POST /containers/{action.name}/restart",
    }
    return calls.get(action.type, f"no call known for action type {action.type!r}")


class DryRunExecutor:
    """Logs the exact call it would make for each step and reports success; changes nothing.
    A restart's ``restartedAt`` is the time on ``clock``, as the Kubernetes executor's is."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock

    def plan(self, action: ProposedAction) -> str:
        return f"dry-run: {_call(action, self.clock())}"

    def execute(self, action: ProposedAction, decision_id: str) -> Change:
        call = _call(action, self.clock())
        log.info("dry-run execute for decision %s: %s", decision_id, call)
        return Change(detail=f"dry-run: would {call}", simulated=True)

    def verify(self, action: ProposedAction, change: Change, deadline: Deadline) -> StepResult:
        return StepResult(
            ok=True, detail=f"dry-run: nothing changed on {action.kind}/{action.namespace}/{action.name}"
        )

    def rollback(self, action: ProposedAction, change: Change) -> StepResult:
        return StepResult(ok=True, detail=f"dry-run: nothing to undo on {action.target}")
