"""Stage 1, the webhook in: parse and validate Alertmanager's payload once, into frozen types."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast

from pyagent.contract import validate
from pyagent.errors import InvalidDocument

Labels = MappingProxyType[str, str]


def _labels(raw: dict[str, str]) -> Labels:
    return MappingProxyType(dict(raw))


@dataclass(frozen=True)
class Alert:
    """One alert of a webhook delivery, with the group it came in."""

    group_key: str
    fingerprint: str
    status: str  # firing | resolved
    starts_at: str
    ends_at: str
    labels: Labels
    annotations: Labels
    generator_url: str = ""
    receiver: str = ""
    truncated_alerts: int = 0

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "none")

    @property
    def delivery_key(self) -> tuple[str, str, str, str]:
        """What makes a delivery a re-delivery: Alertmanager resends the same four."""
        return (self.group_key, self.fingerprint, self.starts_at, self.status)

    def to_json(self) -> dict[str, Any]:
        return {
            "group_key": self.group_key,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "generator_url": self.generator_url,
            "receiver": self.receiver,
            "truncated_alerts": self.truncated_alerts,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Alert:
        return cls(
            group_key=raw["group_key"],
            fingerprint=raw["fingerprint"],
            status=raw["status"],
            starts_at=raw["starts_at"],
            ends_at=raw["ends_at"],
            labels=_labels(raw["labels"]),
            annotations=_labels(raw["annotations"]),
            generator_url=raw.get("generator_url", ""),
            receiver=raw.get("receiver", ""),
            truncated_alerts=raw.get("truncated_alerts", 0),
        )


@dataclass(frozen=True)
class Delivery:
    """One webhook POST: a group of alerts."""

    group_key: str
    status: str
    receiver: str
    truncated_alerts: int
    alerts: tuple[Alert, ...] = field(default_factory=tuple)


def parse_webhook(body: bytes) -> Delivery:
    """Parse and validate a webhook body. Raises :class:`InvalidDocument` naming the first problem."""
    try:
        raw: object = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidDocument("alertmanager-webhook", "$", "json", f"not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidDocument("alertmanager-webhook", "$", "type", "the payload must be a JSON object")
    validate("alertmanager-webhook", raw)
    payload = cast(dict[str, Any], raw)
    truncated = int(payload.get("truncatedAlerts", 0))
    alerts = tuple(
        Alert.from_json(
            {
                "group_key": payload["groupKey"],
                "fingerprint": a["fingerprint"],
                "status": a["status"],
                "starts_at": a["startsAt"],
                "ends_at": a["endsAt"],
                "labels": a["labels"],
                "annotations": a["annotations"],
                "generator_url": a.get("generatorURL", ""),
                "receiver": payload["receiver"],
                "truncated_alerts": truncated,
            }
        )
        for a in payload["alerts"]
    )
    return Delivery(
        group_key=payload["groupKey"],
        status=payload["status"],
        receiver=payload["receiver"],
        truncated_alerts=truncated,
        alerts=alerts,
    )
