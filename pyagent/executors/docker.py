"""The Docker executor, for hosts without Kubernetes: the ``docker`` SDK against one engine.

Targets: ``Container/HOST/NAME`` (one container) and ``ComposeService/PROJECT/SERVICE`` (the
containers Compose labelled ``com.docker.compose.project`` and ``com.docker.compose.service``).

- ``restart_container``, ``rolling_restart``, ``log_pipeline_restart``: restart each container
  in turn; a restart cannot be undone, so its rollback reports that and humans are told;
- ``scale_up`` (Compose service): start ``replicas_delta`` more replicas from the first one's
  configuration; rollback removes the replicas it started (back to the previous count).

Verification: every container touched is running and, when it has a health check, healthy
(``unhealthy``, ``exited`` or ``dead`` fail at once); a restarted one has a new start time.
New replicas carry the label ``pyagent.io/decision``: a second attempt for the same decision
finds them and starts none. Engine errors raise :class:`ExecutorError` and are not retried.
"""

from __future__ import annotations

from typing import Any

import docker
import requests
from docker.errors import DockerException, NotFound

from pyagent.errors import ActionRefused, ExecutorError
from pyagent.executors import Change, Deadline, ProposedAction, StepResult, poll

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
NUMBER = "com.docker.compose.container-number"
DECISION_LABEL = "pyagent.io/decision"
RESTARTS = frozenset({"restart_container", "rolling_restart", "log_pipeline_restart"})
STOP_TIMEOUT = 10


class DockerExecutor:
    """Acts on the containers of one Docker engine."""

    def __init__(self, engine: docker.DockerClient, stop_timeout: int = STOP_TIMEOUT) -> None:
        self.engine = engine
        self.stop_timeout = stop_timeout

    @classmethod
    def connect(cls, url: str | None, timeout: float = 10.0) -> DockerExecutor:
        """An executor for the engine at ``url`` (default: the local socket)."""
        try:
            engine = docker.DockerClient(base_url=url or "unix:///var/run/docker.sock", timeout=int(timeout))
        except DockerException as exc:
            raise ExecutorError(f"docker engine {url}: {exc}") from exc
        return cls(engine)

    def _containers(self, action: ProposedAction) -> list[Any]:
        """The target's containers, oldest replica first. Raises when there is none."""
        try:
            if action.kind == "Container":
                return [self.engine.containers.get(action.name)]
            if action.kind == "ComposeService":
                found = self.engine.containers.list(
                    all=True, filters={"label": [f"{PROJECT}={action.namespace}", f"{SERVICE}={action.name}"]}
                )
                if found:
                    return sorted(found, key=lambda c: int(c.labels.get(NUMBER, "0")))
        except NotFound as exc:
            raise ActionRefused(f"no container {action.name}") from exc
        except (DockerException, requests.RequestException) as exc:
            raise ExecutorError(f"docker: list {action.target}: {exc}") from exc
        else:
            raise ActionRefused(f"{action.target}: no such container or Compose service")

    def _check(self, action: ProposedAction) -> None:
        if action.type in RESTARTS and action.kind in {"Container", "ComposeService"}:
            return
        if action.type == "scale_up" and action.kind == "ComposeService":
            if action.replicas_delta <= 0:
                raise ActionRefused(f"scale_up by {action.replicas_delta} replicas adds none")
            return
        raise ActionRefused(f"the Docker executor does not carry out {action.type} on a {action.kind}")

    def plan(self, action: ProposedAction) -> str:
        self._check(action)
        containers = self._containers(action)
        names = ", ".join(c.name for c in containers)
        if action.type == "scale_up":
            running = sum(1 for c in containers if c.status == "running")
            return (
                f"docker: start {action.replicas_delta} more replicas of {action.target} from"
                f" {containers[0].name}'s configuration ({running} running,"
                f" {running + action.replicas_delta} after)"
            )
        return f"docker: POST /containers/{{id}}/restart?t={self.stop_timeout} for {names}, one at a time"

    def execute(self, action: ProposedAction, decision_id: str) -> Change:
        self._check(action)
        containers = self._containers(action)
        try:
            if action.type == "scale_up":
                return self._scale(action, containers, decision_id)
            before = {c.id: c.attrs["State"]["StartedAt"] for c in containers}
            for container in containers:
                container.restart(timeout=self.stop_timeout)
        except (DockerException, requests.RequestException) as exc:
            raise ExecutorError(f"docker: {action.type} on {action.target}: {exc}") from exc
        names = ", ".join(c.name for c in containers)
        return Change(f"restarted {names}", {"kind": "restart", "started_before": before})

    def _scale(self, action: ProposedAction, containers: list[Any], decision_id: str) -> Change:
        if any(c.labels.get(DECISION_LABEL) == decision_id for c in containers):
            return Change(
                f"replicas for decision {decision_id} already started; nothing sent", {}, sent=False
            )
        model = containers[0]
        config, host = model.attrs["Config"], model.attrs["HostConfig"]
        running = sum(1 for c in containers if c.status == "running")
        top = max(int(c.labels.get(NUMBER, "0")) for c in containers)
        started: list[str] = []
        for number in range(top + 1, top + 1 + action.replicas_delta):
            labels = {**config.get("Labels", {}), NUMBER: str(number), DECISION_LABEL: decision_id}
            created = self.engine.containers.run(
                config["Image"],
                config.get("Cmd"),
                entrypoint=config.get("Entrypoint"),
                environment=config.get("Env"),
                labels=labels,
                healthcheck=config.get("Healthcheck"),
                network_mode=host.get("NetworkMode") or "none",
                name=f"{action.namespace}-{action.name}-{number}",
                detach=True,
            )
            started.append(created.id)
        return Change(
            f"started {len(started)} replicas of {action.target}: {running} -> {running + len(started)}",
            {"kind": "scale", "started": started, "replicas": running},
        )

    def verify(self, action: ProposedAction, change: Change, deadline: Deadline) -> StepResult:
        undo = dict(change.undo)
        if undo.get("kind") == "scale":
            watched = dict.fromkeys(undo["started"])
        else:
            watched = dict(undo.get("started_before", {}))

        def check() -> StepResult | str:
            waiting = []
            for cid, started_before in watched.items():
                state = self._state(cid)
                if isinstance(state, StepResult):
                    return state
                if started_before is not None and state["StartedAt"] == started_before:
                    waiting.append(f"{cid[:12]} not restarted yet")
                    continue
                verdict = _health(cid, state)
                if isinstance(verdict, StepResult):
                    return verdict
                if verdict:
                    waiting.append(verdict)
            if waiting:
                return "; ".join(waiting)
            return StepResult(True, f"{len(watched)} containers of {action.target} running and healthy")

        return poll(deadline, check, f"{action.type} on {action.target}")

    def _state(self, cid: str) -> dict[str, Any] | StepResult:
        try:
            state: dict[str, Any] = self.engine.api.inspect_container(cid)["State"]
        except NotFound:
            return StepResult(False, f"container {cid[:12]} is gone")
        except (DockerException, requests.RequestException) as exc:
            return {"Status": "unknown", "StartedAt": "", "error": str(exc)}
        return state

    def rollback(self, action: ProposedAction, change: Change) -> StepResult:
        undo = dict(change.undo)
        if undo.get("kind") != "scale":
            return StepResult(False, f"a restart of {action.target} cannot be undone; humans must look")
        try:
            for cid in undo["started"]:
                try:
                    self.engine.api.remove_container(cid, force=True)
                except NotFound:
                    continue
        except (DockerException, requests.RequestException) as exc:
            raise ExecutorError(f"docker: remove the replicas started for {action.target}: {exc}") from exc
        return StepResult(
            True, f"removed {len(undo['started'])} replicas: {action.target} back to {undo['replicas']}"
        )


def _health(cid: str, state: dict[str, Any]) -> StepResult | str:
    """A failure, what is awaited, or "" when the container is running and healthy."""
    status = state.get("Status")
    if "error" in state:
        return f"{cid[:12]}: cannot inspect: {state['error']}"
    if status in {"exited", "dead"}:
        return StepResult(False, f"container {cid[:12]} {status} (exit code {state.get('ExitCode')})")
    if status != "running":
        return f"{cid[:12]} is {status}"
    health = (state.get("Health") or {}).get("Status")
    if health == "unhealthy":
        return StepResult(False, f"container {cid[:12]} is unhealthy")
    if health not in {None, "healthy"}:
        return f"{cid[:12]} health {health}"
    return ""
