"""The container image, built with ``make image`` and run on a real Docker engine, and the
Kubernetes manifests that deploy it, checked by a real API server and run as their pod would.

No registry is reachable here, so the base images are stand-ins imported into the test's
engine: Debian bookworm with its Python 3.11 (``make image-base``, debootstrap) for
``python:3.11-slim-bookworm``, and the pinned OPA built by ``make setup`` at ``/opa`` for
``openpolicyagent/opa``. The image then serves the webhook with its own OPA, as
``make run`` does.

No kubelet runs here, so the pod of ``deploy/kubernetes/deployment.yaml`` is run by hand as a
kubelet would run it: its init container, then its two containers with its commands,
arguments, user, volumes and read-only root, sharing one network (the host's: the API server
listens there, so the pod's ports are moved to free ones), with the service account's token
and CA where a pod finds them.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
import yaml

from pyagent.audit import verify
from pyagent.opa import free_port
from tests.docker_engine import DockerEngine
from tests.execution_kit import wait_for
from tests.kube import KubeCluster
from tests.kube_objects import Admin
from tests.serving import answers, example, go_gc_settings, post, records

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
BASE_TARBALL = ROOT / ".tools" / "images" / "python3-bookworm.tar"
PYTHON_REPOSITORY, PYTHON_TAG = "pyagent-test/python", "3.11-bookworm"
OPA_REPOSITORY, OPA_TAG = "pyagent-test/opa", "pinned"
PYTHON_IMAGE, OPA_IMAGE = f"{PYTHON_REPOSITORY}:{PYTHON_TAG}", f"{OPA_REPOSITORY}:{OPA_TAG}"
IMAGE = "pyagent-test/pyagent:test"
TOKEN = "image-token"


def _opa_rootfs() -> bytes:
    """A tar holding the pinned OPA at ``/opa``, where the official image has it. The official
    binary is static; ``go install`` links the C library, so it comes along, as ``ldd`` names it."""
    opa = ROOT / ".tools" / "bin" / "opa"
    linked = subprocess.run(["ldd", str(opa)], capture_output=True, text=True, check=True).stdout  # noqa: S607
    libraries = re.findall(r"(/\S+) \(0x", linked)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(opa, arcname="opa")
        for library in libraries:
            tar.add(Path(library).resolve(), arcname=library.lstrip("/"))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image(docker_host: DockerEngine) -> Iterator[docker.DockerClient]:
    """The engine, with the project's image built by ``make image`` on the stand-in bases."""
    if not BASE_TARBALL.is_file():
        pytest.fail(f"{BASE_TARBALL} is missing: run `make image-base`")
    client = docker_host.client()
    with BASE_TARBALL.open("rb") as base:
        client.api.import_image_from_data(base.read(), repository=PYTHON_REPOSITORY, tag=PYTHON_TAG)
    client.api.import_image_from_data(
        _opa_rootfs(), repository=OPA_REPOSITORY, tag=OPA_TAG, changes=['ENTRYPOINT ["/opa"]']
    )
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


def _wait_answering(url: str, container: Any) -> None:
    """Wait until ``url`` answers 200; if it never does, fail with the container's log."""
    try:
        wait_for(lambda: answers(url), f"{url} answering 200", timeout=60)
    except AssertionError as exc:
        raise AssertionError(container.logs().decode(errors="replace")) from exc


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
        volumes={str(state): {"bind": "/opt/pyagent/var", "mode": "rw"}},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_answering(url + "/healthz", container)
        posted = post(url, example("level-2-first-occurrence"), TOKEN)
        wait_for(lambda: bool(records(state, "outcome")), "the decision's outcome")
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


def _objects() -> list[dict[str, Any]]:
    return [
        d
        for path in ("rbac.yaml", "deployment.yaml")
        for d in yaml.safe_load_all((DEPLOY / path).read_text())
    ]


def _pod() -> dict[str, Any]:
    [deployment] = [d for d in _objects() if d["kind"] == "Deployment"]
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def test_the_manifests_pass_the_api_servers_strict_validation(kube_cluster: KubeCluster) -> None:
    """Every object of rbac.yaml and deployment.yaml, created with a server-side dry run and
    strict field validation (an unknown or misplaced field is refused), in a namespace of
    its own."""
    admin = Admin(kube_cluster)
    namespace = admin.namespace()
    accepted = []
    for document in _objects():
        kind = document["kind"]
        if kind in {"ClusterRole", "ClusterRoleBinding"}:
            group = "/apis/rbac.authorization.k8s.io/v1"
            path = f"{group}/{kind.lower()}s"
        else:
            group = "/apis/apps/v1" if kind == "Deployment" else "/api/v1"
            path = f"{group}/namespaces/{namespace}/{kind.lower()}s"
            document["metadata"]["namespace"] = namespace
        if kind == "PersistentVolumeClaim":
            path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims"
        created = admin.create(path + "?dryRun=All&fieldValidation=Strict", document)
        accepted.append((created["kind"], created["metadata"]["name"]))
    assert {
        ("ServiceAccount", "pyagent"),
        ("ClusterRole", "pyagent-inventory"),
        ("ClusterRoleBinding", "pyagent-inventory"),
        ("ConfigMap", "pyagent-config"),
        ("PersistentVolumeClaim", "pyagent-state"),
        ("Deployment", "pyagent"),
        ("Service", "pyagent"),
    } == set(accepted)


SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"  # where a pod finds its token


def _folders(
    tmp_path: Path, kube_cluster: KubeCluster, token: str, moved: Callable[[str], str]
) -> dict[str, Path]:
    """A host folder per volume of the pod, as its kubelet would fill them: the ConfigMap's
    files (``moved`` to the test's ports and namespace), the service account's token and CA."""
    folders = {name: tmp_path / name for name in ("policy", "state", "config", "serviceaccount")}
    for folder in folders.values():
        folder.mkdir()
        folder.chmod(0o777)  # what fsGroup does for the pod's volumes
    [config_map] = [d for d in _objects() if d["kind"] == "ConfigMap"]
    for key, text in config_map["data"].items():
        (folders["config"] / key).write_text(moved(text))
    (folders["serviceaccount"] / "token").write_text(token)
    (folders["serviceaccount"] / "ca.crt").write_bytes(kube_cluster.ca_path.read_bytes())
    return folders


def _start(  # noqa: PLR0917 - one container of the pod, as its kubelet starts it
    client: docker.DockerClient,
    image: str,
    container: dict[str, Any],
    folders: dict[str, Path],
    moved: Callable[[str], str],
    network: str = "host",
    **options: Any,
) -> Any:
    """``container`` of the pod spec started: its command, arguments, literal environment,
    volume mounts (an ``emptyDir`` named tmp as a tmpfs) and read-only root; the pod's user
    is in ``options``."""
    mounts = container.get("volumeMounts", [])
    binds = {
        str(folders[m["name"]]): {"bind": m["mountPath"], "mode": "ro" if m.get("readOnly") else "rw"}
        for m in mounts
        if m["name"] in folders
    }
    binds |= options.pop("volumes", {})
    literal = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}  # not valueFrom
    return client.containers.run(
        image,
        [moved(argument) for argument in container.get("args", [])],
        entrypoint=container.get("command"),
        volumes=binds,
        tmpfs={m["mountPath"]: "" for m in mounts if m["name"] == "tmp"},
        network_mode=network,
        read_only=container["securityContext"]["readOnlyRootFilesystem"],
        detach=True,
        environment=literal | options.pop("environment", {}),
        **options,
    )


def test_the_deployments_pod_decides_with_its_sidecar_and_the_clusters_facts(
    image: docker.DockerClient, kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    pod = _pod()
    containers = {c["name"]: c for c in pod["containers"]}
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    admin = Admin(kube_cluster)
    _, token = admin.shipped_service_account(DEPLOY / "rbac.yaml")
    namespace = admin.namespace()
    admin.deployment(namespace, "checkout", 4)
    ports = {"8181": free_port(), "8282": free_port(), "9095": free_port()}

    def moved(text: str) -> str:  # the pod's ports and the inventory's namespace, moved to the test's
        text = re.sub(r":(8181|8282|9095)\b", lambda m: f":{ports[m.group(1)]}", text)
        return text.replace("namespace: shop", f"namespace: {namespace}")

    folders = _folders(tmp_path, kube_cluster, token, moved)
    [init] = pod["initContainers"]
    copied = _start(image, IMAGE, init, folders, moved, network="none", user=user)
    assert 0 == copied.wait(timeout=60)["StatusCode"], copied.logs()
    copied.remove()
    host, _, port = kube_cluster.url.removeprefix("https://").rpartition(":")
    account = {str(folders["serviceaccount"]): {"bind": SERVICE_ACCOUNT, "mode": "ro"}}
    kubernetes = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    started = [_start(image, OPA_IMAGE, containers["opa"], folders, moved, user=user)]
    try:
        started.append(
            _start(
                image,
                IMAGE,
                containers["pyagent"],
                folders,
                moved,
                user=user,
                volumes=account,
                environment={"PYAGENT_WEBHOOK_TOKEN": TOKEN, **kubernetes},
            )
        )
        probe = containers["opa"]["readinessProbe"]["httpGet"]["path"]
        url = f"http://127.0.0.1:{ports['9095']}"
        _wait_answering(f"http://127.0.0.1:{ports['8282']}{probe}", started[0])
        _wait_answering(url + "/healthz", started[1])
        sidecar_gc = go_gc_settings(f"http://127.0.0.1:{ports['8282']}/metrics")
        alert = example("level-2-first-occurrence")
        alert["alerts"][0]["labels"] |= {"namespace": namespace, "deployment": "checkout"}
        posted = post(url, alert, TOKEN)
        wait_for(lambda: bool(records(folders["state"], "decision")), "the pod's decision")
        for container in reversed(started):
            container.stop(timeout=20)
        exits = [container.wait(timeout=30)["StatusCode"] for container in started]
    finally:
        for container in started:
            container.remove(force=True)
    [decision] = records(folders["state"], "decision")
    assert 200 == posted.status_code
    assert "kubernetes" == decision["inventory"]["source"]  # read in-cluster, with rbac.yaml's grant
    assert [] == decision["context_problems"]
    assert [0, 0] == exits
    # the sidecar runs with the manifest's collector settings: GOGC=off (-1 read unsigned), 256 MiB
    assert (float(2**64 - 1), 256.0 * 2**20) == sidecar_gc


def test_the_dockerfile_and_the_deployment_name_the_pinned_opa() -> None:
    """The Dockerfile's default OPA image and the sidecar's are the version tools/versions.mk pins."""
    pinned = re.search(r"^OPA_VERSION := v(\S+)$", (ROOT / "tools" / "versions.mk").read_text(), re.M)
    default = re.search(r"^ARG OPA_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert pinned is not None
    assert default is not None
    sidecar = {c["name"]: c for c in _pod()["containers"]}["opa"]["image"]
    assert [f"openpolicyagent/opa:{pinned.group(1)}-static"] * 2 == [default.group(1), sidecar]
