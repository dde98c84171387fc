"""The two catalogs: built-in alert patterns (the embedded diagnoser) and the policy's action catalog.

**Patterns.** :data:`PATTERNS` maps an alert to a pattern id and a proposed action.
A pattern matches when the alert's ``alertname`` is one of its names, or when the
alert carries all of its ``labels`` (``reason=OOMKilled`` on any alert); the first
match in order wins. No match is a novel pattern: id ``novel:<alertname>``, action
``no_action`` (not in the action catalog, so the policy caps it), confidence 0.0.

**Opting out.** An alert labelled ``escalation_ai="off"`` (set in the alerting rule) gets
no diagnosis at all: the AI is not trusted with it, and the policy keeps it at level 0.

**Confidence heuristic.** Each pattern has a base confidence. Each evidence label
adds :data:`EVIDENCE_STEP` (0.05): ``severity`` when it is ``critical`` or
``warning``, ``namespace`` and ``container`` when present and non-empty. The sum is
capped at :data:`CONFIDENCE_CAP` (0.95): a heuristic is never certain. An alert
annotation ``ai_confidence`` or ``confidence`` (a number in 0..1) can only lower
it: the result is the minimum of all of them. An annotation that is not such a
number is ignored and reported as a problem.

**Actions.** :class:`ActionCatalog` is loaded from the policy data document
(``policy.catalog`` in ``rego/escalation/policy.json``, path passed in): whether
an action type is idempotent, reversible and how long it takes to roll back is
server-side data, never taken from a model's output.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pyagent.alerts import Alert
from pyagent.errors import ConfigError
from pyagent.sources import Diagnosis

EVIDENCE_STEP = 0.05
CONFIDENCE_CAP = 0.95
EVIDENCE_SEVERITIES = frozenset({"critical", "warning"})
CONFIDENCE_ANNOTATIONS = ("ai_confidence", "confidence")
UNCATALOGUED_ROLLBACK_SECONDS = 3600.0
OPT_OUT_LABEL, OPT_OUT_VALUE = "escalation_ai", "off"


@dataclass(frozen=True)
class Pattern:
    """One known alert pattern and the remediation proposed for it."""

    id: str
    action_type: str
    base_confidence: float
    summary: str
    alertnames: frozenset[str]
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    replicas_delta: int = 0

    def matches(self, alert: Alert) -> bool:
        if alert.name in self.alertnames:
            return True
        return bool(self.labels) and all(alert.labels.get(k) == v for k, v in self.labels.items())


def _pattern(  # noqa: PLR0913 - one row of the catalog table below
    pid: str,
    action: str,
    base: float,
    summary: str,
    *names: str,
    labels: dict[str, str] | None = None,
    replicas_delta: int = 0,
) -> Pattern:
    return Pattern(
        pid, action, base, summary, frozenset(names), MappingProxyType(labels or {}), replicas_delta
    )


PATTERNS: tuple[Pattern, ...] = (
    _pattern(
        "oom-memory-leak", "rolling_restart", 0.80, "container killed for running out of memory",
        "KubePodOOMKilled", "ContainerOOMKilled", "KubeContainerOOMKilled",
        labels={"reason": "OOMKilled"},
    ),
    _pattern(
        "process-deadlock", "rolling_restart", 0.70, "process stopped responding (deadlock, liveness)",
        "ProcessDeadlock", "ThreadDeadlockDetected", "LivenessProbeFailing", "KubePodLivenessProbeFailed",
    ),
    _pattern(
        "cpu-saturation-hpa", "scale_up", 0.75, "CPU saturated on an autoscaled workload",
        "CPUSaturation", "HighCPUSaturation", "KubeHpaCpuSaturated", "CPUThrottlingHigh",
        replicas_delta=2,
    ),
    _pattern(
        "certificate-expiry", "certificate_rotation", 0.85, "TLS certificate about to expire",
        "CertificateExpiringSoon", "CertManagerCertExpirySoon", "SSLCertExpiringSoon",
        "X509CertificateExpiring",
    ),
    _pattern(
        "log-pipeline-stalled", "log_pipeline_restart", 0.75, "log pipeline stopped shipping logs",
        "LogPipelineStalled", "FluentbitNoOutputBytesProcessed", "OtelCollectorExportStalled",
    ),
    _pattern(
        "bad-deploy", "rollback_deployment", 0.70, "a new revision is failing (stuck rollout, errors)",
        "KubeDeploymentRolloutStuck", "ErrorRateAfterDeploy", "HighErrorRateAfterDeploy",
    ),
    _pattern(
        "memory-limit-too-low", "increase_memory_limit", 0.65, "container running close to its memory limit",
        "ContainerMemoryNearLimit", "KubeContainerMemoryNearLimit", "MemoryLimitPressure",
    ),
    _pattern(
        "node-unhealthy", "drain_node", 0.65, "node not ready or under resource pressure",
        "KubeNodeNotReady", "KubeNodeUnreachable", "KubeNodePressure",
        "NodeMemoryPressure", "NodeDiskPressure",
    ),
)  # fmt: skip


def _evidence(alert: Alert) -> dict[str, str]:
    labels = alert.labels
    found = {k: labels[k] for k in ("namespace", "container") if labels.get(k)}
    if labels.get("severity") in EVIDENCE_SEVERITIES:
        found["severity"] = labels["severity"]
    return found


def _annotated(alert: Alert) -> tuple[list[float], list[str]]:
    """Confidences the alert's annotations state, and the annotations that are not 0..1 numbers."""
    values: list[float] = []
    problems: list[str] = []
    for key in CONFIDENCE_ANNOTATIONS:
        if key not in alert.annotations:
            continue
        try:
            value = float(alert.annotations[key])
        except ValueError:
            value = math.nan
        if 0.0 <= value <= 1.0:
            values.append(value)
        else:
            problems.append(f"annotation {key}={alert.annotations[key]!r} is not a number in 0..1; ignored")
    return values, problems


class CatalogDiagnoser:
    """:class:`pyagent.sources.Diagnoser` from the built-in pattern catalog and alert annotations."""

    def __init__(self, patterns: tuple[Pattern, ...] = PATTERNS) -> None:
        self._patterns = patterns

    def diagnose(self, alert: Alert) -> Diagnosis:
        if alert.labels.get(OPT_OUT_LABEL) == OPT_OUT_VALUE:
            return Diagnosis.untrusted(
                alert, f"the alert rule opts out of AI ({OPT_OUT_LABEL}={OPT_OUT_VALUE})"
            )
        pattern = next((p for p in self._patterns if p.matches(alert)), None)
        annotated, problems = _annotated(alert)
        if pattern is None:
            summary = f"{alert.name or 'an unnamed alert'} matches no known pattern"
            return Diagnosis.novel(alert, summary, tuple(problems))
        evidence = _evidence(alert)
        matched = {k: alert.labels[k] for k in pattern.labels if k in alert.labels}
        heuristic = round(min(CONFIDENCE_CAP, pattern.base_confidence + EVIDENCE_STEP * len(evidence)), 4)
        return Diagnosis(
            available=True,
            pattern_id=pattern.id,
            known=True,
            action_type=pattern.action_type,
            replicas_delta=pattern.replicas_delta,
            confidence=min([heuristic, *annotated]),
            summary=f"{pattern.summary}: proposing {pattern.action_type}",
            evidence=MappingProxyType({"alertname": alert.name, **matched, **evidence}),
            problems=tuple(problems),
        )


@dataclass(frozen=True)
class ActionSpec:
    """What the action catalog says about one action type."""

    type: str
    catalogued: bool
    idempotent: bool
    reversible: bool
    rollback_seconds: float


def _spec(name: str, entry: dict[str, Any]) -> ActionSpec:
    """One catalog entry, typed. Raises ``TypeError`` or ``KeyError`` for a malformed one."""
    idempotent, reversible, seconds = entry["idempotent"], entry["reversible"], entry["rollback_seconds"]
    if not isinstance(idempotent, bool) or not isinstance(reversible, bool):
        raise TypeError(f"{name}: idempotent and reversible must be booleans")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise TypeError(f"{name}: rollback_seconds must be a number >= 0, not {seconds!r}")
    return ActionSpec(
        name, catalogued=True, idempotent=idempotent, reversible=reversible, rollback_seconds=float(seconds)
    )


def policy_data(path: Path) -> dict[str, Any]:
    """The ``policy`` object of the policy data document at ``path``."""
    try:
        raw: Any = json.loads(path.read_text("utf-8"))
        policy: dict[str, Any] = raw["policy"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"policy data {path}: {type(exc).__name__}: {exc}") from exc
    return policy


def rate_limit_window(path: Path) -> int:
    """Seconds of the policy's autonomous rate-limit window."""
    try:
        return int(policy_data(path)["autonomous_rate_limit"]["window_seconds"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"policy data {path}: autonomous_rate_limit.window_seconds: {exc}") from exc


class ActionCatalog:
    """The action catalog of the policy data document."""

    def __init__(self, entries: Mapping[str, ActionSpec]) -> None:
        self._entries = dict(entries)

    @classmethod
    def load(cls, path: Path) -> ActionCatalog:
        """Read ``policy.catalog`` from ``path``. Raises :class:`ConfigError` naming what is wrong."""
        try:
            catalog: dict[str, Any] = policy_data(path)["catalog"]
            entries = {name: _spec(name, entry) for name, entry in catalog.items()}
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"action catalog {path}: {type(exc).__name__}: {exc}") from exc
        return cls(entries)

    def spec(self, action_type: str) -> ActionSpec:
        """The catalog entry, or the worst case for a type it does not know."""
        found = self._entries.get(action_type)
        if found is not None:
            return found
        return ActionSpec(
            action_type,
            catalogued=False,
            idempotent=False,
            reversible=False,
            rollback_seconds=UNCATALOGUED_ROLLBACK_SECONDS,
        )

    def __contains__(self, action_type: object) -> bool:
        return action_type in self._entries
