"""Seed the history database from a reviewed YAML file of past incidents.

A team that adopts the agent has incident history already; without it every known
pattern starts at ``early_occurrence`` (level 2). The file lists, per pattern and
action, when it happened and how the remediation ended::

    incidents:
      - pattern: oom-memory-leak
        alertname: KubePodOOMKilled
        action: rolling_restart
        level: 2            # the level it was handled at
        outcome: success
        started_at: [2026-09-02T03:14:00Z, 2026-09-09T22:40:00Z]
        labels: {namespace: shop, deployment: checkout, severity: critical}   # optional
        annotations: {summary: checkout OOMKilled}                            # optional

Each time becomes one incident, its action (executed at that time) and its outcome.
``labels`` (``alertname`` is added) and ``annotations`` are what the novelty similarity
compares a new alert with (:mod:`pyagent.sources.novelty`).
An imported incident's fingerprint is ``import:<pattern>:<time>``, so importing the
same file again adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import yaml

from pyagent.contract import validate
from pyagent.errors import ConfigError, InvalidDocument
from pyagent.sources.history_sqlite import HistorySQLite, OutcomeKind


@dataclass(frozen=True)
class PastIncident:
    pattern: str
    alertname: str
    action: str
    level: int
    outcome: OutcomeKind
    started_at: datetime
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def fingerprint(self) -> str:
        return f"import:{self.pattern}:{self.started_at.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def _timestamps_as_text(node: Any) -> Any:
    """YAML reads unquoted timestamps as datetimes; the schema wants RFC 3339 text."""
    if isinstance(node, datetime):
        moment = node if node.tzinfo else node.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(node, dict):
        return {key: _timestamps_as_text(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_timestamps_as_text(value) for value in node]
    return node


def load(path: Path) -> list[PastIncident]:
    """The incidents in ``path``; raises :class:`ConfigError` naming the first problem."""
    try:
        document: Any = _timestamps_as_text(yaml.safe_load(path.read_text("utf-8")))
        validate("history-import", document)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"history file {path}: {exc}") from exc
    except InvalidDocument as exc:
        raise ConfigError(f"history file {path}: {exc}") from exc
    return [
        PastIncident(
            pattern=entry["pattern"],
            alertname=entry["alertname"],
            action=entry["action"],
            level=entry["level"],
            outcome=cast("OutcomeKind", entry["outcome"]),
            started_at=datetime.fromisoformat(moment.replace("Z", "+00:00")),
            labels=MappingProxyType({"alertname": entry["alertname"], **entry.get("labels", {})}),
            annotations=MappingProxyType(dict(entry.get("annotations", {}))),
        )
        for entry in document["incidents"]
        for moment in entry["started_at"]
    ]


def import_incidents(history: HistorySQLite, incidents: list[PastIncident]) -> tuple[int, int]:
    """Record each incident not recorded before; (imported, already present)."""
    imported = 0
    for incident in incidents:
        if history.has_incident(incident.fingerprint, incident.started_at):
            continue
        incident_id = history.record_incident(
            incident.fingerprint,
            incident.pattern,
            incident.alertname,
            incident.started_at,
            labels=incident.labels,
            annotations=incident.annotations,
        )
        action_id = history.record_action(incident_id, incident.action, incident.level, incident.started_at)
        history.record_outcome(action_id, incident.outcome, incident.started_at)
        imported += 1
    return imported, len(incidents) - imported
