"""Inventory source for a cluster: the alert's Deployment, its HPA and its namespace, read from the
Kubernetes API (``inventory_source: kubernetes``).

**Target.** The alert's ``namespace`` label and the first of its target labels
(``deployment``, ``service``, ``job``) that names a Deployment in that namespace; failing
those, the Deployment its ``pod`` label's name implies (``checkout-7d9f8b6c5-x2k4q``:
``checkout``), as kube-state-metrics alerts name only the pod.

**Reads**: ``get`` the Deployment, ``list`` HPAs in its namespace, ``get`` the namespace
(RBAC needs get/list/watch on deployments, horizontalpodautoscalers and namespaces, nothing
else). What they make of the facts is in :mod:`pyagent.sources.kube_facts`.

**Figures the cluster lacks.** ``traffic_fraction`` and ``error_budget_remaining`` come from
the inventory file's entry for the same target (its service-level figures; its Deployment
figures are ignored), the traffic fraction otherwise from a Prometheus query when
configured, else 1.0. Without a file entry and without a Prometheus error-budget source the
budget is the worst case (0) with the reason.

Answers are cached per Deployment for ``cache_seconds``; failures are not cached.

**Worst case** (:meth:`InventoryFacts.worst_case`, with the reason): the configuration cannot
be loaded, the API is unreachable or times out, a read is forbidden (RBAC) or fails, or no
target label names a Deployment that exists. Nothing raises out of :meth:`KubeInventory.lookup`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Protocol

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pyagent.alerts import Alert
from pyagent.errors import ConfigError
from pyagent.kube import KubeTarget, api_client
from pyagent.sources import InventoryFacts, InventorySource
from pyagent.sources.kube_facts import KubeInventoryConfig, Reading, facts_from

API_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError)

# a Deployment's pod is named DEPLOYMENT-HASH-SUFFIX, both from Kubernetes' safe alphabet
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_DEPLOYMENT_POD = re.compile(rf"^(?P<deployment>[a-z0-9][-a-z0-9.]*)-{_SAFE}{{1,10}}-{_SAFE}{{5}}$")


def deployment_of_pod(pod: str) -> list[str]:
    """The Deployment a pod name says it belongs to (``checkout-7d9f8b6c5-x2k4q``: ``checkout``),
    as a candidate the API must confirm; none for a name of another shape."""
    found = _DEPLOYMENT_POD.match(pod)
    return [found.group("deployment")] if found else []


class TrafficSource(Protocol):
    def fraction(self, service: str, namespace: str, deployment: str) -> float | str: ...


@dataclass
class _Cached:
    expires: float
    facts: InventoryFacts


@dataclass
class _Cache:
    seconds: float
    clock: Callable[[], float]
    entries: dict[tuple[str, str], _Cached] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: tuple[str, str]) -> InventoryFacts | None:
        with self.lock:
            hit = self.entries.get(key)
            if hit is None or hit.expires <= self.clock():
                self.entries.pop(key, None)
                return None
            return hit.facts

    def put(self, key: tuple[str, str], facts: InventoryFacts) -> None:
        if self.seconds > 0:
            with self.lock:
                self.entries[key] = _Cached(self.clock() + self.seconds, facts)


class KubeInventory:
    """:class:`pyagent.sources.InventorySource` read from the Kubernetes API."""

    def __init__(  # noqa: PLR0913 - where the API is, what to count as shared, and the figures it lacks
        self,
        target: KubeTarget,
        config: KubeInventoryConfig | None = None,
        *,
        figures: InventorySource | None = None,
        budget_from_figures: bool = True,
        traffic: TrafficSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._target = target
        self._config = config or KubeInventoryConfig()
        self._figures = figures
        self._budget_from_figures = budget_from_figures
        self._traffic = traffic
        self._cache = _Cache(self._config.cache_seconds, clock)
        self._client: client.ApiClient | None = None
        self._lock = threading.Lock()

    def lookup(self, alert: Alert) -> InventoryFacts:
        labels = self._config.target_labels
        namespace = alert.labels.get("namespace")
        named = [alert.labels[k] for k in labels if alert.labels.get(k)]
        names = list(dict.fromkeys([*named, *deployment_of_pod(alert.labels.get("pod", ""))]))
        if not namespace or not names:
            wanted = ", ".join(("namespace", *labels, "pod"))
            why = f"alert {alert.name!r} does not name its target ({wanted})"
            return InventoryFacts.worst_case(alert, why)
        found = self._observed(alert, namespace, names)
        if isinstance(found, str):
            return InventoryFacts.worst_case(alert, found, labels)
        return self._with_figures(alert, found)

    def _observed(self, alert: Alert, namespace: str, names: list[str]) -> InventoryFacts | str:
        """The cluster's facts for the first name that is a Deployment, or why there are none."""
        for name in names:
            cached = self._cache.get((namespace, name))
            if cached is not None:
                return cached
        try:
            api = self._api()
        except ConfigError as exc:
            return str(exc)
        for name in names:
            try:
                reading = self._read(api, namespace, name)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                return f"Kubernetes API: {_describe(exc)} reading Deployment {namespace}/{name}"
            except API_ERRORS as exc:
                return f"Kubernetes API at {api.configuration.host}: {type(exc).__name__}: {exc}"
            facts = facts_from(reading, self._config)
            self._cache.put((namespace, name), facts)
            return facts
        return f"no Deployment named {' or '.join(names)} in namespace {namespace!r} ({alert.name})"

    def _api(self) -> client.ApiClient:
        with self._lock:
            if self._client is None:
                self._client = api_client(self._target, retries=1)
            return self._client

    def _read(self, api: client.ApiClient, namespace: str, name: str) -> Reading:
        timeout = self._config.timeout
        deployment = client.AppsV1Api(api).read_namespaced_deployment(
            name, namespace, _request_timeout=timeout
        )
        hpas = client.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(
            namespace, _request_timeout=timeout
        )
        ns = client.CoreV1Api(api).read_namespace(namespace, _request_timeout=timeout)
        return Reading.of(deployment, hpas.items, ns)

    def _with_figures(self, alert: Alert, facts: InventoryFacts) -> InventoryFacts:
        """The cluster's facts with the traffic fraction and error budget the cluster lacks, from
        the figures' entry for the Deployment found (even when the alert named only its pod)."""
        target = facts.target
        named = replace(alert, labels=MappingProxyType({**alert.labels, "deployment": target.name}))
        listed = self._figures.lookup(named) if self._figures is not None else None
        known = listed is not None and not listed.problems
        problems, details = list(facts.problems), dict(facts.details)
        traffic, budget = 1.0, 0.0
        if listed is not None and known:
            traffic, budget = listed.traffic_fraction, listed.error_budget_remaining
            details["figures"] = "inventory file"
        elif self._traffic is not None:
            measured = self._traffic.fraction(facts.service, target.namespace, target.name)
            if isinstance(measured, str):
                details["traffic_problem"] = measured  # informational: no trigger reads it
            else:
                traffic, details["figures"] = measured, "prometheus"
        if self._budget_from_figures and not known:
            why = listed.problems[0] if listed is not None else "no inventory file"
            where = f"{target.namespace}/{target.name}"
            problems.append(f"no error budget for {where} (error_budget is not prometheus): {why}")
        return replace(
            facts,
            traffic_fraction=traffic,
            error_budget_remaining=budget,
            problems=tuple(problems),
            details=MappingProxyType(details),
        )


def _describe(exc: ApiException) -> str:
    reason = {401: "unauthorised (401)", 403: "forbidden by RBAC (403)"}.get(exc.status or 0)
    return reason or f"{exc.status} {exc.reason}"
