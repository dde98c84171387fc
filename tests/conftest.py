"""Fixtures that start real components on loopback and tear them down after."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyagent.opa import EmbeddedOpa, OpaClient, default_policy_dir
from tests.docker_engine import DockerEngine, docker_engine
from tests.kube import KubeCluster, kube_apiserver

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def opa_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedOpa]:
    """A real ``opa run --server`` with the project's policy, for the whole session."""
    log = tmp_path_factory.mktemp("opa") / "opa.log"
    with EmbeddedOpa(default_policy_dir(), log_path=log) as opa:
        yield opa


@pytest.fixture(scope="session")
def opa(opa_server: EmbeddedOpa) -> Iterator[OpaClient]:
    client = OpaClient(opa_server.url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A real kube-apiserver on a real etcd, for the whole session (no controllers run).

    Tests share it: each creates its own namespaces, with names of its own."""
    with kube_apiserver(tmp_path_factory.mktemp("kube")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def docker_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    """A real dockerd on a private socket, no network, with a busybox image, for the whole session."""
    with docker_engine(tmp_path_factory.mktemp("docker")) as engine:
        yield engine


@pytest.fixture
def example_input() -> dict[str, Any]:
    """DESIGN.md's example policy input (level 4 with the shipped qualifications)."""
    loaded: dict[str, Any] = json.loads((ROOT / "examples" / "input.json").read_text())
    return loaded
