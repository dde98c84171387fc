"""Kubernetes objects for tests, created through the API of the ``kube_cluster`` fixture."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.kube import KubeCluster


class Admin:
    """Creates and changes objects through the API as the cluster admin (plain REST)."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.url = cluster.url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {cluster.admin_token}"
        self.ca = str(cluster.ca_path)  # per request: a session's verify loses to REQUESTS_CA_BUNDLE

    def send(self, method: str, path: str, body: object, content_type: str = "application/json") -> Any:
        response = self.session.request(
            method,
            self.url + path,
            json=body,
            headers={"Content-Type": content_type},
            verify=self.ca,
            timeout=10,
        )
        assert response.status_code < 300, response.text
        return response.json()

    def create(self, path: str, body: dict[str, Any]) -> Any:
        return self.send("POST", path, body)

    def shipped_service_account(self, rbac: Path) -> tuple[str, str]:
        """The ``pyagent`` service account in a fresh namespace, bound to the ClusterRole of
        ``rbac`` (created under a name of its own); the namespace and a token of the account."""
        role = next(d for d in yaml.safe_load_all(rbac.read_text()) if d["kind"] == "ClusterRole")
        suffix = uuid.uuid4().hex[:8]
        home = self.namespace()
        role["metadata"]["name"] = f"pyagent-inventory-{suffix}"
        self.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
        self.create(
            f"/api/v1/namespaces/{home}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "pyagent"}},
        )
        self.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"pyagent-inventory-{suffix}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role["metadata"]["name"],
                },
                "subjects": [{"kind": "ServiceAccount", "name": "pyagent", "namespace": home}],
            },
        )
        token = self.create(
            f"/api/v1/namespaces/{home}/serviceaccounts/pyagent/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 600},
            },
        )["status"]["token"]
        return home, str(token)

    def namespace(
        self, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None
    ) -> str:
        name = f"inv-{uuid.uuid4().hex[:8]}"
        meta = {"name": name, "labels": labels or {}, "annotations": annotations or {}}
        self.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
        return name

    def deployment(self, namespace: str, name: str, replicas: int = 10, **options: Any) -> None:
        self.create(
            f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment(name, replicas, **options)
        )

    def hpa(self, namespace: str, name: str, target: str, low: int, high: int) -> None:
        self.create(
            f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers",
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": name},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                    "minReplicas": low,
                    "maxReplicas": high,
                },
            },
        )

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.send(
            "PATCH",
            f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
            {"spec": {"replicas": replicas}},
            "application/strategic-merge-patch+json",
        )


def deployment(
    name: str,
    replicas: int,
    *,
    max_unavailable: int | str | None = None,
    max_surge: int | str | None = None,
    strategy: str = "RollingUpdate",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    claim: bool = False,
    paused: bool = False,
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Deployment manifest with one container."""
    rolling = {
        k: v for k, v in (("maxUnavailable", max_unavailable), ("maxSurge", max_surge)) if v is not None
    }
    spec_strategy: dict[str, Any] = {"type": strategy}
    if strategy == "RollingUpdate" and rolling:
        spec_strategy["rollingUpdate"] = rolling
    pod: dict[str, Any] = {"containers": [{"name": "app", "image": "registry.example/app:1"}]}
    if claim:
        pod["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": f"{name}-data"}}]
    meta: dict[str, Any] = {"name": name, "labels": labels or {}, "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "paused": paused,
            "strategy": spec_strategy,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
        },
    }
