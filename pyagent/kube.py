"""One Kubernetes API client for the inventory source and the executor.

The official ``kubernetes`` client, configured from a kubeconfig file (optionally one of
its contexts) or, inside a pod, from the service account. Every call made through the
returned client goes through the caller's own API objects (``CoreV1Api(client)`` ...),
with ``_request_timeout`` set by the caller: the client has no default timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from pyagent.errors import ConfigError


@dataclass(frozen=True)
class KubeTarget:
    """Where the API server is: a kubeconfig (and context), or the pod's service account."""

    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool = False


def api_client(target: KubeTarget, *, retries: int | None = None) -> client.ApiClient:
    """A configured API client; ``ConfigError`` when the configuration cannot be loaded.

    ``retries`` bounds urllib3's retries of a failed connection or read (its default is 3);
    None keeps the default."""
    configuration = client.Configuration()
    if retries is not None:
        configuration.retries = retries
    try:
        if target.in_cluster:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(target.kubeconfig) if target.kubeconfig else None,
                context=target.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError) as exc:
        raise ConfigError(f"kubernetes configuration: {exc}") from exc
    return client.ApiClient(configuration)
