"""PagerDuty Events API v2: page on-call when an approval expires or cannot be asked.

``POST /v2/enqueue`` with ``event_action: trigger`` and a ``dedup_key`` derived from the
approval id, so every page about one approval (Slack down, then the timeout) is one
incident at PagerDuty even if it is sent again. 202 is accepted; 429 and 5xx are retried
by the outbox; 400 is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from pyagent.errors import DeliveryFailed
from pyagent.notifiers.outbox import Delivery

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


def dedup_key(approval_id: str) -> str:
    """The one dedup key of every page about an approval."""
    return f"pyagent-approval-{approval_id}"


def trigger_event(approval: Mapping[str, Any], reason: str, console_url: str | None) -> dict[str, Any]:
    """The event (without the routing key) for an approval nobody answered."""
    request, briefing = approval["request"], approval["request"]["briefing"]
    target = request["action"]["target"]
    where = f"{target['kind']} {target['namespace']}/{target['name']}"
    summary = f"Approval needed ({reason}): {request['action']['type']} of {where}: {request['summary']}"
    event: dict[str, Any] = {
        "event_action": "trigger",
        "dedup_key": dedup_key(approval["id"]),
        "payload": {
            "summary": summary[:1024],
            "source": where,
            "severity": "critical" if briefing["regulated"] else "error",
            "component": briefing["service"],
            "group": target["namespace"],
            "class": request["action"]["type"],
            "custom_details": {
                "reason": reason,
                "approval_id": approval["id"],
                "decision_id": approval["decision_id"],
                "target": target,
                "plan": request["plan"],
                "triggers": [f"{t['id']}: {t['message']}" for t in request["triggers"]],
                "confidence": briefing["confidence"],
                "policy_version": request["policy_version"],
            },
        },
    }
    if console_url:
        event["links"] = [
            {"href": f"{console_url}/console/approvals/{approval['id']}", "text": "Open in the console"}
        ]
    return event


class PagerDutyChannel:
    """The outbox's PagerDuty sender."""

    def __init__(self, routing_key: str, url: str = EVENTS_URL, timeout: float = 5.0) -> None:
        self.routing_key, self.url, self.timeout = routing_key, url, timeout
        self.session = requests.Session()

    def deliver(self, delivery: Delivery) -> dict[str, Any]:
        body = {**delivery.notice.payload, "routing_key": self.routing_key}
        try:
            response = self.session.post(self.url, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise DeliveryFailed(f"PagerDuty: {type(exc).__name__}: {exc}", retryable=True) from exc
        if response.status_code == 202:
            return {"dedup_key": body.get("dedup_key")}
        retryable = response.status_code == 429 or response.status_code >= 500
        raise DeliveryFailed(
            f"PagerDuty: HTTP {response.status_code}: {response.text[:200]}", retryable=retryable
        )

    def close(self) -> None:
        self.session.close()
