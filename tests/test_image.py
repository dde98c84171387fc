"""The container image, built with ``make image`` and run on a real Docker engine.

No registry is reachable here, so the base images are stand-ins imported into the test's
engine: Debian bookworm with its Python 3.11 (``make image-base``, debootstrap) for
``python:3.11-slim-bookworm``, and the pinned OPA built by ``make setup`` at ``/opa`` for
``openpolicyagent/opa``. The image then serves the webhook with its own OPA, as
``make run`` does.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from pyagent.audit import verify
from pyagent.opa import free_port
from tests.docker_engine import DockerEngine
from tests.serving import example, records

ROOT = Path(__file__).resolve().parent.parent
BASE_TARBALL = ROOT / ".tools" / "images" / "python3-bookworm.tar"
PYTHON_REPOSITORY, PYTHON_TAG = "pyagent-test/python", "3.11-bookworm"
OPA_REPOSITORY, OPA_TAG = "pyagent-test/opa", "pinned"
PYTHON_IMAGE, OPA_IMAGE = f"{PYTHON_REPOSITORY}:{PYTHON_TAG}", f"{OPA_REPOSITORY}:{OPA_TAG}"
IMAGE = "pyagent-test/pyagent:test"
TOKEN = "image-token"


def _opa_rootfs() -> bytes:
    """A tar holding only the pinned OPA binary at ``/opa``, where the official image has it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(ROOT / ".tools" / "bin" / "opa", arcname="opa")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image(docker_host: DockerEngine) -> Iterator[docker.DockerClient]:
    """The engine, with the project's image built by ``make image`` on the stand-in bases."""
    if not BASE_TARBALL.is_file():
        pytest.fail(f"{BASE_TARBALL} is missing: run `make image-base`")
    client = docker_host.client()
    with BASE_TARBALL.open("rb") as base:
        client.api.import_image_from_data(base.read(), repository=PYTHON_REPOSITORY, tag=PYTHON_TAG)
    client.api.import_image_from_data(_opa_rootfs(), repository=OPA_REPOSITORY, tag=OPA_TAG)
    arguments = [f"IMAGE={IMAGE}", f"PYTHON_IMAGE={PYTHON_IMAGE}", f"OPA_IMAGE={OPA_IMAGE}"]
    built = subprocess.run(
        ["make", "--no-print-directory", "image", *arguments],  # noqa: S607 - make from PATH, as the README runs it
        cwd=ROOT,
        env={**os.environ, "DOCKER_HOST": docker_host.url},
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    try:
        yield client
    finally:
        client.close()


def _healthy(url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/healthz", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return False


def test_the_image_serves_the_webhook_with_its_own_opa_and_stops_cleanly(
    image: docker.DockerClient, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)  # the image runs as a user of its own
    port = free_port()
    container = image.containers.run(
        IMAGE,
        ["serve", "--listen", f"127.0.0.1:{port}"],
        detach=True,
        network_mode="host",
        environment={"PYAGENT_WEBHOOK_TOKEN": TOKEN},
        volumes={str(state): {"bind": "/var/lib/pyagent", "mode": "rw"}},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert _healthy(url, time.monotonic() + 60), container.logs().decode(errors="replace")
        posted = requests.post(
            url + "/webhook/alertmanager",
            json=example("level-2-first-occurrence"),
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        deadline = time.monotonic() + 30
        while not records(state, "outcome") and time.monotonic() < deadline:
            time.sleep(0.2)
        stylesheet = requests.get(url + "/console/static/console.css", timeout=10)
        user = container.exec_run(["id", "-u"]).output.decode().strip()
        container.stop(timeout=20)
        exit_code = container.wait(timeout=30)["StatusCode"]
    finally:
        container.remove(force=True)
    [decision] = records(state, "decision")
    [outcome] = records(state, "outcome")
    assert {"accepted": 1, "duplicates": 0} == posted.json()
    assert 2 == decision["level"]
    assert "approval_requested" == outcome["outcome"]
    assert 200 == stylesheet.status_code  # the console's files are in the wheel
    assert "65532" == user
    assert 0 == exit_code  # SIGTERM: drained and stopped, OPA with it
    assert verify(state / "audit.jsonl").ok


def test_the_dockerfile_names_the_pinned_opa() -> None:
    """The Dockerfile's default OPA image is the version tools/versions.mk pins."""
    pinned = re.search(r"^OPA_VERSION := v(\S+)$", (ROOT / "tools" / "versions.mk").read_text(), re.M)
    default = re.search(
        r"^ARG OPA_IMAGE=openpolicyagent/opa:(\S+)-static$", (ROOT / "Dockerfile").read_text(), re.M
    )
    assert pinned is not None
    assert default is not None
    assert pinned.group(1) == default.group(1)
