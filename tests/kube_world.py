"""Objects in the test API server, and a stand-in for the controllers that do not run there.

With only kube-apiserver running, nothing reconciles a Deployment: :class:`RolloutController`
does what the Deployment controller would (as envtest users do), writing the status
subresource when a Deployment's generation moves: ``complete`` finishes every rollout,
``stuck`` leaves them waiting, ``deadline`` reports ``ProgressDeadlineExceeded``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client

from pyagent.executors.kubernetes import KubernetesExecutor
from pyagent.kube import KubeTarget, api_client
from tests.kube import KubeCluster

Json = dict[str, Any]


class World:
    """One namespace of its own in the shared test API server, reached as the admin."""

    def __init__(self, cluster: KubeCluster, workdir: Path) -> None:
        self.kubeconfig = cluster.kubeconfig(workdir / "kubeconfig", cluster.admin_token)
        self.api = api_client(KubeTarget(self.kubeconfig))
        # Any: the tests send and read plain JSON, as the executor does
        self.apps: Any = client.AppsV1Api(self.api)
        self.core: Any = client.CoreV1Api(self.api)
        self.autoscaling: Any = client.AutoscalingV2Api(self.api)
        self.namespace = f"t-{uuid.uuid4().hex[:10]}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace)))

    def executor(self) -> KubernetesExecutor:
        return KubernetesExecutor(api_client(KubeTarget(self.kubeconfig), retries=0), timeout=5.0)

    def deployment(
        self,
        name: str,
        replicas: int = 3,
        *,
        paused: bool = False,
        memory: str | None = "256Mi",
        secret: str | None = None,
    ) -> Json:
        """Create a Deployment whose rollout is complete, as a controller would have left it."""
        container: Json = {"name": "app", "image": "registry.example/app:1"}
        if memory:
            container["resources"] = {"limits": {"memory": memory}}
        pod: Json = {"containers": [container]}
        if secret:
            pod["volumes"] = [{"name": "tls", "secret": {"secretName": secret}}]
        body = {
            "metadata": {"name": name, "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {
                "replicas": replicas,
                "paused": paused,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
            },
        }
        self.apps.create_namespaced_deployment(self.namespace, body)
        self.complete(name)
        return self.read(name)

    def read(self, name: str) -> Json:
        response = self.apps.read_namespaced_deployment(name, self.namespace, _preload_content=False)
        loaded: Json = json.loads(response.data)
        return loaded

    def set_status(self, name: str, status: Json) -> None:
        self.apps.patch_namespaced_deployment_status(
            name, self.namespace, {"status": status}, _content_type="application/merge-patch+json"
        )

    def complete(self, name: str) -> None:
        """What the controller reports when the current generation has fully rolled out."""
        deployment = self.read(name)
        replicas = deployment["spec"]["replicas"]
        self.set_status(
            name,
            {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                ],
            },
        )

    def exceed_deadline(self, name: str) -> None:
        deployment = self.read(name)
        self.set_status(
            name,
            {
                "observedGeneration": deployment["metadata"]["generation"],
                "updatedReplicas": 1,
                "conditions": [
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": "ReplicaSet has timed out progressing.",
                    }
                ],
            },
        )

    def hpa(self, name: str, minimum: int, maximum: int) -> None:
        self.autoscaling.create_namespaced_horizontal_pod_autoscaler(
            self.namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": minimum,
                    "maxReplicas": maximum,
                },
            },
        )

    def read_hpa(self, name: str) -> Json:
        response = self.autoscaling.read_namespaced_horizontal_pod_autoscaler(
            name, self.namespace, _preload_content=False
        )
        loaded: Json = json.loads(response.data)
        return loaded

    def replica_set(self, deployment: Json, revision: int, image: str) -> None:
        """A ReplicaSet of ``deployment`` at ``revision`` (the controller would have made it)."""
        meta = deployment["metadata"]
        template = json.loads(json.dumps(deployment["spec"]["template"]))
        template["metadata"]["labels"]["pod-template-hash"] = f"h{revision}"
        template["spec"]["containers"][0]["image"] = image
        self.apps.create_namespaced_replica_set(
            self.namespace,
            {
                "metadata": {
                    "name": f"{meta['name']}-h{revision}",
                    "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": meta["name"],
                            "uid": meta["uid"],
                        }
                    ],
                },
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {**template["metadata"]["labels"]}},
                    "template": template,
                },
            },
        )


CERTIFICATE_CRD: Json = {
    "metadata": {"name": "certificates.cert-manager.io"},
    "spec": {
        "group": "cert-manager.io",
        "scope": "Namespaced",
        "names": {"plural": "certificates", "singular": "certificate", "kind": "Certificate"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


class CertManager:
    """cert-manager's Certificate kind in the API server, and what its controller would write."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.custom: Any = client.CustomObjectsApi(world.api)
        extensions: Any = client.ApiextensionsV1Api(world.api)
        try:
            extensions.create_custom_resource_definition(CERTIFICATE_CRD)
        except client.ApiException as exc:
            if exc.status != 409:  # another test installed it already
                raise
        self._wait_served()

    def _wait_served(self) -> None:
        for _ in range(200):
            try:
                self.custom.list_namespaced_custom_object(
                    "cert-manager.io", "v1", self.world.namespace, "certificates"
                )
            except client.ApiException:
                threading.Event().wait(0.05)
                continue
            return
        raise AssertionError("the Certificate kind was never served")

    def certificate(self, name: str, secret: str, revision: int = 1) -> None:
        self.custom.create_namespaced_custom_object(
            "cert-manager.io",
            "v1",
            self.world.namespace,
            "certificates",
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": {"name": name},
                "spec": {"secretName": secret, "dnsNames": [f"{name}.example"]},
            },
        )
        self.issued(name, revision)

    def read(self, name: str) -> Json:
        found: Json = self.custom.get_namespaced_custom_object(
            "cert-manager.io", "v1", self.world.namespace, "certificates", name
        )
        return found

    def issued(self, name: str, revision: int) -> None:
        """What cert-manager writes once it issued ``revision``: Ready, no longer Issuing."""
        self.custom.patch_namespaced_custom_object_status(
            "cert-manager.io",
            "v1",
            self.world.namespace,
            "certificates",
            name,
            {"status": {"revision": revision, "conditions": [{"type": "Ready", "status": "True"}]}},
            _content_type="application/merge-patch+json",
        )


class RolloutController:
    """Plays the Deployment (and HPA) controller for one namespace, in a thread."""

    def __init__(self, world: World, mode: str = "complete") -> None:
        self.world = world
        self.mode = mode
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            listed = self.world.apps.list_namespaced_deployment(self.world.namespace, _preload_content=False)
            for deployment in json.loads(listed.data)["items"]:
                self._reconcile(deployment)

    def _reconcile(self, deployment: Json) -> None:
        name = deployment["metadata"]["name"]
        self._follow_hpa(name, deployment)
        status = deployment.get("status") or {}
        if status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]:
            return
        if self.mode == "complete":
            self.world.complete(name)
        elif self.mode == "deadline":
            self.world.exceed_deadline(name)

    def _follow_hpa(self, name: str, deployment: Json) -> None:
        """As the HPA controller would: keep the Deployment's replicas within the HPA's bounds."""
        try:
            hpa = self.world.read_hpa(name)
        except client.ApiException:
            return
        floor = hpa["spec"].get("minReplicas", 1)
        if self.mode == "complete" and deployment["spec"]["replicas"] < floor:
            self.world.apps.patch_namespaced_deployment_scale(
                name,
                self.world.namespace,
                {"spec": {"replicas": floor}},
                _content_type="application/merge-patch+json",
            )

    @contextmanager
    def running(self) -> Iterator[RolloutController]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=10)
