"""The Docker executor against a real Docker engine started by the test fixture."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from pyagent.errors import ActionRefused
from pyagent.execution import execute_action
from pyagent.executors import Deadline, ProposedAction
from pyagent.executors.docker import NUMBER, PROJECT, SERVICE, DockerExecutor
from pyagent.opa import OpaClient
from tests.docker_engine import DockerEngine
from tests.execution_kit import PATTERN, START, case, kit, policy_input

DECISION = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
SECOND = 1_000_000_000  # nanoseconds, as the engine counts health-check intervals


@pytest.fixture
def engine(docker_host: DockerEngine) -> Iterator[docker.DockerClient]:
    client = docker_host.client()
    yield client
    client.close()


@pytest.fixture
def executor(docker_host: DockerEngine) -> Iterator[DockerExecutor]:
    made = DockerExecutor.connect(docker_host.url, timeout=30)
    made.stop_timeout = 1
    yield made
    made.engine.close()


def _service(engine: docker.DockerClient, image: str, replicas: int = 2, healthy: bool = True) -> str:
    """A Compose-labelled service of ``replicas`` busybox containers; its project name."""
    project = f"p{uuid.uuid4().hex[:8]}"
    check = "/bin/true" if healthy else "/bin/false"
    for number in range(1, replicas + 1):
        engine.containers.run(
            image,
            ["/bin/sleep", "3600"],
            name=f"{project}-api-{number}",
            labels={PROJECT: project, SERVICE: "api", NUMBER: str(number)},
            healthcheck={"test": ["CMD", check], "interval": SECOND // 5, "retries": 1},
            network_mode="none",
            detach=True,
        )
    return project


def _running(engine: docker.DockerClient, project: str) -> int:
    found = engine.containers.list(filters={"label": [f"{PROJECT}={project}", f"{SERVICE}=api"]})
    return len(found)


def _started_at(engine: docker.DockerClient, name: str) -> str:
    started: str = engine.api.inspect_container(name)["State"]["StartedAt"]
    return started


def test_restart_container_restarts_it_and_verifies_it_is_healthy(
    engine: docker.DockerClient, executor: DockerExecutor, docker_host: DockerEngine
) -> None:
    project = _service(engine, docker_host.image, replicas=1)
    name = f"{project}-api-1"
    before = _started_at(engine, name)
    action = ProposedAction("restart_container", "Container", "host", name)
    change = executor.execute(action, DECISION)
    assert before != _started_at(engine, name)
    result = executor.verify(action, change, Deadline.after(30, poll=0.1))
    assert result.ok, result.detail
    assert not executor.rollback(action, change).ok  # a restart cannot be undone: said, not hidden


def test_scale_compose_service_starts_replicas_and_rolls_back_to_the_count(
    engine: docker.DockerClient, executor: DockerExecutor, docker_host: DockerEngine
) -> None:
    project = _service(engine, docker_host.image)
    action = ProposedAction("scale_up", "ComposeService", project, "api", 2)
    assert "2 running, 4 after" in executor.plan(action)
    change = executor.execute(action, DECISION)
    assert 4 == _running(engine, project)
    result = executor.verify(action, change, Deadline.after(30, poll=0.1))
    assert result.ok, result.detail
    assert not executor.execute(action, DECISION).sent  # the same decision starts none again
    assert 4 == _running(engine, project)
    assert executor.rollback(action, change).ok
    assert 2 == _running(engine, project)


def test_unhealthy_new_replicas_fail_verification_and_are_removed(
    *,
    engine: docker.DockerClient,
    executor: DockerExecutor,
    docker_host: DockerEngine,
    opa: OpaClient,
    example_input: dict[str, Any],
    tmp_path: Path,
) -> None:
    project = _service(engine, docker_host.image, healthy=False)
    document = policy_input(example_input, "ComposeService", project, "api", level=3, action="scale_up")
    document["action"]["replicas_delta"] = 1
    document["action"]["target"]["hpa_managed"] = True
    hands = kit(tmp_path, executor)
    the_case = case(opa, document, hands.history, 3)  # scale_up is not qualified for this pattern
    assert "rolled_back" == execute_action(the_case, hands.hands)
    hands.close()
    assert 2 == _running(engine, project)
    assert "unhealthy" in hands.notes.getvalue()
    assert not hands.history.stats(PATTERN, "scale_up", START).consistent_outcomes


def test_missing_container_is_refused(executor: DockerExecutor) -> None:
    with pytest.raises(ActionRefused, match="no container"):
        executor.execute(ProposedAction("restart_container", "Container", "host", "ghost"), DECISION)


def test_actions_docker_cannot_do_are_refused(executor: DockerExecutor) -> None:
    with pytest.raises(ActionRefused, match="does not carry out"):
        executor.plan(ProposedAction("increase_memory_limit", "ComposeService", "p", "api"))
