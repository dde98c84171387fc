"""The blast-radius facts of a Deployment, from what the Kubernetes API said about it, its HPA
and its namespace (read by :mod:`pyagent.sources.kube_inventory`). Pure functions of typed data.

- ``replica_fraction``: pods a rolling restart takes down at once over ``spec.replicas``.
  ``maxUnavailable`` may be a number or a percentage; a percentage is rounded **down**
  (and ``maxSurge`` up), both default to 25%, and when both resolve to 0 Kubernetes lets 1
  pod be unavailable. At least one pod is always counted: even a surge-first rollout
  replaces pods. A ``Recreate`` strategy takes every pod down: 1.0. Zero replicas: 1.0,
  with the reason.
- ``hpa_managed``: an autoscaling/v2 HPA in the namespace targets the Deployment (its
  ``minReplicas``/``maxReplicas`` are recorded in the details).
- ``stateless``: false when the pod template mounts a PersistentVolumeClaim or the
  Deployment carries ``escalation.io/stateful: "true"`` (label or annotation).
- ``services`` and ``namespaces``: the Deployment's own service, plus every service named in
  its annotation ``escalation.io/dependents`` (comma-separated ``namespace/service`` or
  ``service``, for callers that break when it is disrupted), plus its controlling owner
  (an operator's custom resource that would reconcile a direct change).
- ``shared_infrastructure``: the namespace is one of the configured shared namespaces
  (default ``argocd``, ``monitoring``, ``istio-system``), or the Deployment or the namespace
  carries one of the configured ``key=value`` labels (default ``app.kubernetes.io/part-of=argocd``,
  ``app.kubernetes.io/part-of=istio``, ``app.kubernetes.io/name=prometheus``,
  ``escalation.io/shared-infrastructure=true``).
- ``frameworks``: ``escalation.io/regulated`` on the namespace or the Deployment, as an
  annotation (a comma-separated list: ``pci-dss,hipaa``) or a label (one framework; label
  values cannot hold commas). ``true`` means regulated under an unnamed framework;
  ``false``, ``none`` or empty mean not regulated.
- ``environment``: the label ``escalation.io/environment`` of the Deployment, else of the
  namespace, else ``production``.
- service name: the Deployment's label ``app.kubernetes.io/name``, else its name.

A paused Deployment is a problem (someone holds its rollout; a change would not take effect).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from kubernetes import client

from pyagent.errors import ConfigError
from pyagent.sources import (
    DEFAULT_SHARED_LABELS,
    DEFAULT_SHARED_NAMESPACES,
    DEFAULT_TARGET_LABELS,
    InventoryFacts,
    Target,
)

PREFIX = "escalation.io/"
REGULATED_KEY = PREFIX + "regulated"
ENVIRONMENT_KEY = PREFIX + "environment"
STATEFUL_KEY = PREFIX + "stateful"
DEPENDENTS_KEY = PREFIX + "dependents"
SERVICE_LABEL = "app.kubernetes.io/name"
DEFAULT_ENVIRONMENT = "production"
UNNAMED_FRAMEWORK = "unspecified"
NOT_REGULATED = frozenset({"", "false", "no", "none"})
DEFAULT_PERCENT = "25%"


@dataclass(frozen=True)
class KubeInventoryConfig:
    """What counts as shared infrastructure, how long answers are cached, and the read timeout."""

    shared_namespaces: frozenset[str] = frozenset(DEFAULT_SHARED_NAMESPACES)
    shared_labels: tuple[str, ...] = DEFAULT_SHARED_LABELS  # "key=value"
    cache_seconds: float = 30.0
    timeout: float = 3.0
    target_labels: tuple[str, ...] = DEFAULT_TARGET_LABELS

    def __post_init__(self) -> None:
        bad = [pair for pair in self.shared_labels if "=" not in pair or pair.startswith("=")]
        if bad:
            raise ConfigError(f"shared_infrastructure_labels: {bad} are not key=value")


@dataclass(frozen=True)
class Reading:
    """What one lookup read of a Deployment, the HPA targeting it and its namespace, typed."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    replicas: int
    strategy: str  # RollingUpdate | Recreate
    max_unavailable: int | str | None
    max_surge: int | str | None
    paused: bool
    owner: str | None  # Kind/name of the controlling owner
    mounts_claim: bool  # the pod template mounts a PersistentVolumeClaim
    hpa: tuple[str, int, int] | None  # name, minReplicas, maxReplicas
    namespace_labels: Mapping[str, str]
    namespace_annotations: Mapping[str, str]

    @classmethod
    def of(
        cls,
        deployment: client.V1Deployment,
        hpas: list[client.V2HorizontalPodAutoscaler],
        namespace: client.V1Namespace,
    ) -> Reading:
        """The typed reading of the API's objects (fields the API may omit get its defaults)."""
        meta, spec = deployment.metadata or client.V1ObjectMeta(), deployment.spec
        strategy = spec.strategy if spec and spec.strategy else client.V1DeploymentStrategy()
        rolling = strategy.rolling_update or client.V1RollingUpdateDeployment()
        pod = spec.template.spec if spec else None
        owner = next((o for o in meta.owner_references or [] if o.controller), None)
        name = meta.name or ""
        hpa = next((h for h in hpas if _targets(h, name)), None)
        ns_meta = namespace.metadata or client.V1ObjectMeta()
        return cls(
            name=name,
            namespace=meta.namespace or "",
            labels=MappingProxyType(dict(meta.labels or {})),
            annotations=MappingProxyType(dict(meta.annotations or {})),
            replicas=1 if spec is None or spec.replicas is None else spec.replicas,
            strategy=strategy.type or "RollingUpdate",
            max_unavailable=rolling.max_unavailable,
            max_surge=rolling.max_surge,
            paused=bool(spec and spec.paused),
            owner=None if owner is None else f"{owner.kind}/{owner.name}",
            mounts_claim=any(
                v.persistent_volume_claim is not None for v in (pod.volumes if pod else None) or []
            ),
            hpa=None if hpa is None else _hpa_range(hpa),
            namespace_labels=MappingProxyType(dict(ns_meta.labels or {})),
            namespace_annotations=MappingProxyType(dict(ns_meta.annotations or {})),
        )


def _targets(hpa: client.V2HorizontalPodAutoscaler, name: str) -> bool:
    ref = hpa.spec.scale_target_ref if hpa.spec else None
    return ref is not None and ref.kind == "Deployment" and ref.name == name


def _hpa_range(hpa: client.V2HorizontalPodAutoscaler) -> tuple[str, int, int]:
    spec = hpa.spec
    low = 1 if spec is None or spec.min_replicas is None else spec.min_replicas
    return (hpa.metadata.name if hpa.metadata else "") or "", low, spec.max_replicas if spec else low


def resolve_percent(value: int | str | None, replicas: int, *, round_up: bool) -> int:
    """An IntOrString of a rolling update (``3`` or ``"25%"``) as a pod count, as Kubernetes
    resolves it. Raises ``ValueError`` for a string that is not a percentage."""
    value = DEFAULT_PERCENT if value is None else value
    if isinstance(value, int):
        return value
    if not value.endswith("%") or not value[:-1].isdigit():
        raise ValueError(f"{value!r} is neither a number nor a percentage")
    scaled = int(value[:-1]) * replicas / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def disrupted_at_once(reading: Reading) -> tuple[int, dict[str, object]]:
    """(pods a rolling restart takes down at once, how it was resolved)."""
    replicas = reading.replicas
    if reading.strategy == "Recreate":
        return replicas, {"strategy": reading.strategy}
    unavailable = resolve_percent(reading.max_unavailable, replicas, round_up=False)
    surge = resolve_percent(reading.max_surge, replicas, round_up=True)
    if unavailable == 0 and surge == 0:
        unavailable = 1  # Kubernetes' fencepost: a rollout must make progress
    detail: dict[str, object] = {
        "strategy": reading.strategy,
        "max_unavailable": DEFAULT_PERCENT if reading.max_unavailable is None else reading.max_unavailable,
        "max_surge": DEFAULT_PERCENT if reading.max_surge is None else reading.max_surge,
        "unavailable_pods": unavailable,
    }
    return max(unavailable, 1), detail


def frameworks(*sources: Mapping[str, str]) -> tuple[str, ...]:
    """The regulated frameworks named by ``escalation.io/regulated`` in any of ``sources``."""
    found: list[str] = []
    for source in sources:
        raw = source.get(REGULATED_KEY)
        if raw is None or raw.strip().lower() in NOT_REGULATED:
            continue
        for item in raw.split(","):
            name = item.strip().lower()
            name = UNNAMED_FRAMEWORK if name == "true" else name
            if name and name not in found:
                found.append(name)
    return tuple(found)


def _dependents(annotations: Mapping[str, str], namespace: str) -> list[tuple[str, str]]:
    """The ``(namespace, service)`` pairs of ``escalation.io/dependents``."""
    pairs = []
    for item in annotations.get(DEPENDENTS_KEY, "").split(","):
        entry = item.strip()
        if entry:
            ns, _, name = entry.rpartition("/")
            pairs.append((ns or namespace, name))
    return pairs


def _labels_match(pairs: tuple[str, ...], *label_sets: Mapping[str, str]) -> list[str]:
    """The ``key=value`` pairs found in any of ``label_sets``."""
    hits = []
    for pair in pairs:
        key, _, value = pair.partition("=")
        if any(labels.get(key) == value for labels in label_sets):
            hits.append(pair)
    return hits


def _stateful(reading: Reading) -> bool:
    flags = {reading.labels.get(STATEFUL_KEY, ""), reading.annotations.get(STATEFUL_KEY, "")}
    return reading.mounts_claim or "true" in {flag.lower() for flag in flags}


def _replica_fraction(reading: Reading) -> tuple[float, dict[str, object], list[str]]:
    """The share of replicas a restart takes down at once (1.0 with none), how that was
    worked out, and what makes the Deployment's facts doubtful."""
    where = f"Deployment {reading.namespace}/{reading.name}"
    down, detail = disrupted_at_once(reading)
    problems: list[str] = []
    if reading.replicas == 0:
        fraction = 1.0
        problems.append(f"{where} has 0 replicas")
    else:
        fraction = min(1.0, down / reading.replicas)
    if reading.paused:
        problems.append(f"{where} is paused: its rollout is held, a change would not apply")
    return fraction, detail, problems


def facts_from(reading: Reading, config: KubeInventoryConfig) -> InventoryFacts:
    """The blast-radius facts of one Deployment, its HPA and its namespace."""
    ns, name, labels = reading.namespace, reading.name, reading.labels
    fraction, detail, problems = _replica_fraction(reading)
    service = labels.get(SERVICE_LABEL) or name
    touched = {(ns, service), *_dependents(reading.annotations, ns)}
    if reading.owner is not None:
        touched.add((ns, reading.owner))
    shared_by = _labels_match(config.shared_labels, labels, reading.namespace_labels)
    if ns in config.shared_namespaces:
        shared_by.insert(0, f"namespace {ns}")
    found = frameworks(reading.namespace_annotations, reading.namespace_labels, reading.annotations, labels)
    environment = (
        labels.get(ENVIRONMENT_KEY) or reading.namespace_labels.get(ENVIRONMENT_KEY) or DEFAULT_ENVIRONMENT
    )
    hpa = None if reading.hpa is None else dict(zip(("name", "min", "max"), reading.hpa, strict=True))
    details: dict[str, object] = {
        "source": "kubernetes",
        **detail,
        "replicas": reading.replicas,
        "paused": reading.paused,
        "owner": reading.owner,
        "hpa": hpa,
        "shared_by": shared_by,
        "services": sorted(f"{n}/{s}" for n, s in touched),
    }
    return InventoryFacts(
        target=Target(
            kind="Deployment",
            namespace=ns,
            name=name,
            environment=environment,
            hpa_managed=reading.hpa is not None,
            replicas=reading.replicas,
        ),
        stateless=not _stateful(reading),
        services=len(touched),
        namespaces=tuple(sorted({n for n, _ in touched})),
        replica_fraction=fraction,
        traffic_fraction=1.0,
        shared_infrastructure=bool(shared_by),
        regulated=bool(found),
        frameworks=found,
        error_budget_remaining=0.0,
        problems=tuple(problems),
        service=service,
        details=MappingProxyType(details),
    )
