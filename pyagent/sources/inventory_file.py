"""Inventory source, embedded default: a YAML file describing services and their Deployments.

The file (its path passed in) is re-read whenever its modification time or size
changes, so an operator can edit it without a restart. Format::

    environment: production            # default for services without one; default "production"
    shared_infrastructure_namespaces:  # default [argocd, monitoring, istio-system]
      - argocd
    target_labels: [deployment, service, job]   # alert labels naming the target, tried in order
    services:
      - name: checkout                 # required
        namespace: shop                # required
        environment: production        # default: the top-level environment
        traffic_fraction: 0.05         # share of user requests it serves, 0..1; default 1.0
        error_budget_remaining: 0.8    # required; 1 = untouched, negative when overspent
        regulated_frameworks: [PCI-DSS]  # default []; regulated when not empty
        shared_infrastructure: false   # default false; true also for the namespaces above
        deployments:                   # required
          - name: checkout             # required
            replicas: 5                # required
            stateless: true            # required
            hpa: {min: 2, max: 10}     # default null: no HPA
            max_unavailable: 1         # default 1: pods a rolling restart takes down at once

An alert's target is found from its ``namespace`` label and the first of the target
labels it carries: a Deployment of that name in that namespace, or else a service of
that name with exactly one Deployment. ``replica_fraction`` is
``min(1, max_unavailable / replicas)``.

A file that is missing, unreadable, not YAML or not in this format, and a target
that is not in it, give :meth:`InventoryFacts.worst_case` with the reason; nothing
raises out of :meth:`InventoryFile.lookup`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import jsonschema
import yaml
from jsonschema.exceptions import best_match

from pyagent.alerts import Alert
from pyagent.contract import json_path
from pyagent.errors import ConfigError
from pyagent.sources import DEFAULT_SHARED_NAMESPACES, DEFAULT_TARGET_LABELS, InventoryFacts, Target

_STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}}
_DEPLOYMENT = {
    "type": "object",
    "required": ["name", "replicas", "stateless"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "replicas": {"type": "integer", "minimum": 0},
        "stateless": {"type": "boolean"},
        "hpa": {
            "type": ["object", "null"],
            "required": ["min", "max"],
            "properties": {
                "min": {"type": "integer", "minimum": 0},
                "max": {"type": "integer", "minimum": 1},
            },
        },
        "max_unavailable": {"type": "integer", "minimum": 1},
    },
}
_SERVICE = {
    "type": "object",
    "required": ["name", "namespace", "error_budget_remaining", "deployments"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string", "minLength": 1},
        "environment": {"type": "string", "minLength": 1},
        "traffic_fraction": {"type": "number", "minimum": 0, "maximum": 1},
        "error_budget_remaining": {"type": "number", "maximum": 1},
        "regulated_frameworks": _STRINGS,
        "shared_infrastructure": {"type": "boolean"},
        "deployments": {"type": "array", "items": _DEPLOYMENT},
    },
}
_SCHEMA = {
    "type": "object",
    "required": ["services"],
    "properties": {
        "environment": {"type": "string", "minLength": 1},
        "shared_infrastructure_namespaces": _STRINGS,
        "target_labels": {**_STRINGS, "minItems": 1},
        "services": {"type": "array", "items": _SERVICE},
    },
}
_VALIDATOR = jsonschema.Draft7Validator(_SCHEMA)


@dataclass(frozen=True)
class _Deployment:
    name: str
    replicas: int
    stateless: bool
    hpa_managed: bool
    max_unavailable: int


@dataclass(frozen=True)
class _Service:
    name: str
    namespace: str
    environment: str
    traffic_fraction: float
    error_budget_remaining: float
    frameworks: tuple[str, ...]
    shared_infrastructure: bool
    deployments: tuple[_Deployment, ...]


@dataclass(frozen=True)
class _Inventory:
    shared_namespaces: frozenset[str]
    target_labels: tuple[str, ...]
    services: tuple[_Service, ...]


def _parse(text: str, path: Path) -> _Inventory:
    """Validate once and type. Raises :class:`ConfigError` naming the first problem."""
    try:
        raw: object = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"inventory {path} is not valid YAML: {exc}") from exc
    error = best_match(_VALIDATOR.iter_errors(raw))
    if error is not None:
        raise ConfigError(f"inventory {path}: {json_path(error)}: {error.message}")
    doc = cast(dict[str, Any], raw)
    environment = doc.get("environment", "production")
    return _Inventory(
        shared_namespaces=frozenset(doc.get("shared_infrastructure_namespaces", DEFAULT_SHARED_NAMESPACES)),
        target_labels=tuple(doc.get("target_labels", DEFAULT_TARGET_LABELS)),
        services=tuple(_service(s, environment) for s in doc["services"]),
    )


def _service(raw: dict[str, Any], environment: str) -> _Service:
    return _Service(
        name=raw["name"],
        namespace=raw["namespace"],
        environment=raw.get("environment", environment),
        traffic_fraction=float(raw.get("traffic_fraction", 1.0)),
        error_budget_remaining=float(raw["error_budget_remaining"]),
        frameworks=tuple(raw.get("regulated_frameworks", ())),
        shared_infrastructure=raw.get("shared_infrastructure", False),
        deployments=tuple(
            _Deployment(
                name=d["name"],
                replicas=int(d["replicas"]),
                stateless=d["stateless"],
                hpa_managed=d.get("hpa") is not None,
                max_unavailable=int(d.get("max_unavailable", 1)),
            )
            for d in raw["deployments"]
        ),
    )


def _resolve(inventory: _Inventory, alert: Alert) -> tuple[_Service, _Deployment] | None:
    namespace = alert.labels.get("namespace", "")
    local = [s for s in inventory.services if s.namespace == namespace]
    for label in inventory.target_labels:
        wanted = alert.labels.get(label)
        if not wanted:
            continue
        for service in local:
            for deployment in service.deployments:
                if deployment.name == wanted:
                    return service, deployment
        for service in local:
            if service.name == wanted and len(service.deployments) == 1:
                return service, service.deployments[0]
    return None


def _facts(inventory: _Inventory, service: _Service, deployment: _Deployment) -> InventoryFacts:
    shared = service.shared_infrastructure or service.namespace in inventory.shared_namespaces
    problems: tuple[str, ...] = ()
    if deployment.replicas == 0:
        fraction = 1.0
        problems = (f"Deployment {service.namespace}/{deployment.name} has 0 replicas",)
    else:
        fraction = min(1.0, deployment.max_unavailable / deployment.replicas)
    return InventoryFacts(
        target=Target(
            kind="Deployment",
            namespace=service.namespace,
            name=deployment.name,
            environment=service.environment,
            hpa_managed=deployment.hpa_managed,
            replicas=deployment.replicas,
        ),
        stateless=deployment.stateless,
        services=1,
        namespaces=(service.namespace,),
        replica_fraction=fraction,
        traffic_fraction=service.traffic_fraction,
        shared_infrastructure=shared,
        regulated=bool(service.frameworks),
        frameworks=service.frameworks,
        error_budget_remaining=service.error_budget_remaining,
        problems=problems,
        service=service.name,
        details=MappingProxyType(
            {"source": "file", "replicas": deployment.replicas, "max_unavailable": deployment.max_unavailable}
        ),
    )


class InventoryFile:
    """:class:`pyagent.sources.InventorySource` read from a YAML file, reloaded when it changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._loaded: _Inventory | str = "not loaded"

    def lookup(self, alert: Alert) -> InventoryFacts:
        loaded = self._current()
        if isinstance(loaded, str):
            return InventoryFacts.worst_case(alert, loaded)
        found = _resolve(loaded, alert)
        if found is None:
            return InventoryFacts.worst_case(alert, self._not_found(loaded, alert), loaded.target_labels)
        return _facts(loaded, *found)

    def _current(self) -> _Inventory | str:
        """The parsed inventory, or why there is none."""
        with self._lock:
            try:
                stat = self._path.stat()
            except OSError as exc:
                self._stamp = None
                return f"inventory {self._path} cannot be read: {exc.strerror or exc}"
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                self._stamp = stamp
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> _Inventory | str:
        try:
            return _parse(self._path.read_text("utf-8"), self._path)
        except (OSError, UnicodeDecodeError) as exc:
            return f"inventory {self._path} cannot be read: {exc}"
        except ConfigError as exc:
            return str(exc)

    def _not_found(self, inventory: _Inventory, alert: Alert) -> str:
        namespace = alert.labels.get("namespace")
        names = [f"{k}={alert.labels[k]}" for k in inventory.target_labels if alert.labels.get(k)]
        if not namespace or not names:
            wanted = ", ".join(("namespace", *inventory.target_labels))
            return f"alert {alert.name!r} does not name its target (labels {wanted})"
        return f"target {', '.join(names)} in namespace {namespace!r} is not in inventory {self._path}"
