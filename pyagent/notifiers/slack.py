"""Slack: Block Kit messages through the Web API, and verification of interactive requests.

Messages go out through the outbox (:mod:`pyagent.notifiers.outbox`): ``chat.postMessage``
for a new message, ``chat.update`` with the first message's ``channel`` and ``ts`` when an
approval is decided or expires, and a POST to the click's ``response_url`` to answer one
person. Requests Slack sends to ``/slack/interactions`` are verified with the signing
secret: ``v0=`` + hex HMAC-SHA256 over ``v0:{timestamp}:{raw body}``, compared in constant
time, and refused when the timestamp is more than five minutes from now.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from pyagent.errors import DeliveryFailed
from pyagent.notifiers.outbox import Delivery

SIGNATURE_WINDOW = 300
RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
SECTION_LIMIT = 2900  # Slack refuses section text over 3000 characters


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Slack-Signature`` Slack would send for ``body`` at ``timestamp``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str | None, given: str | None, body: bytes, now: float) -> str | None:
    """Why a request is not from Slack, or None when its signature verifies."""
    if not secret:
        return "no signing secret is configured"
    if not timestamp or not given:
        return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
    try:
        sent = int(timestamp)
    except ValueError:
        return "malformed timestamp"
    if abs(now - sent) > SIGNATURE_WINDOW:
        return "stale timestamp (more than 5 minutes from now)"
    if not hmac.compare_digest(signature(secret, timestamp, body).encode(), given.encode()):
        return "signature mismatch"
    return None


@dataclass(frozen=True)
class Click:
    """One button click from a verified ``block_actions`` payload."""

    user_id: str
    action_id: str
    value: str
    response_url: str | None


def parse_click(body: bytes) -> Click | None:
    """The first action of a ``block_actions`` payload; None for anything else."""
    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    try:
        payload = json.loads(form["payload"][0])
        if payload.get("type") != "block_actions":
            return None
        action = payload["actions"][0]
        return Click(
            str(payload["user"]["id"]),
            str(action["action_id"]),
            str(action.get("value", "")),
            payload.get("response_url"),
        )
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def esc(text: object) -> str:
    """Text from alerts, models and people, made inert in mrkdwn: Slack reads ``<...>`` as
    links and mentions (``<!channel>``) and ``&`` as an entity, so those three are escaped."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _text(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _fields(pairs: Mapping[str, str]) -> dict[str, Any]:
    return {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in pairs.items()],
    }


def _when(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return f"<!date^{int(epoch)}^{{date_short_pretty}} {{time_secs}}|{moment:%Y-%m-%d %H:%M:%S} UTC>"


def _button(label: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def _facts(approval: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers an approver weighs, as a fields section."""
    request, briefing = approval["request"], approval["request"]["briefing"]
    return _fields(
        {
            "Confidence": f"{briefing['confidence']:.2f}",
            "Blast radius": (
                f"{briefing['replica_fraction']:.0%} of replicas, {briefing['services']} service(s), "
                f"{', '.join(briefing['namespaces'])}"
            ),
            "Error budget left": f"{briefing['error_budget_remaining']:.0%}",
            "Policy": f"version {request['policy_version']}, level {request['level']}",
            "Expires": _when(approval["expires_at"]),
            "Regulated": ", ".join(briefing["frameworks"]) or ("yes" if briefing["regulated"] else "no"),
        }
    )


def approval_blocks(
    approval: Mapping[str, Any], console_url: str | None, change: str | None
) -> list[dict[str, Any]]:
    """The approval request (``Approval.to_json()``): what, why, the facts, and the buttons while pending."""
    request, briefing = approval["request"], approval["request"]["briefing"]
    action, target = request["action"], request["action"]["target"]
    what = f"{action['type']} of {target['kind']} {target['namespace']}/{target['name']}"
    place, summary = briefing["environment"], esc(request["summary"])
    triggers = "\n".join(
        f"• `{t['id']}` (ceiling {t['ceiling']}): {esc(t['message'])}" for t in request["triggers"]
    )
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Approval needed: {what}"[:150]}},
        _text(f"*{esc(briefing['alert_name'])}* on *{esc(briefing['service'])}* ({esc(place)}): {summary}"),
        _facts(approval),
        _text(f"*Why (every trigger):*\n{triggers or 'none'}"),
        _text(f"*Plan:*\n```{esc(request['plan'])}```"),
    ]
    if change:
        blocks.append(_text(f"*Change record:* {change}"))
    if briefing.get("analysis"):
        blocks.append(_text(f"*Analysis:*\n{esc(briefing['analysis'])}"))
    if console_url:
        blocks.append(_text(f"<{console_url}/console/approvals/{approval['id']}|Open in the console>"))
    blocks.append(
        _context(f"alert fingerprint {request['fingerprint']} · decision {approval['decision_id']}")
    )
    if approval["state"] == "pending":
        value = f"{approval['id']}:{approval['plan_hash']}"
        blocks.append(
            {
                "type": "actions",
                "block_id": f"approval:{approval['id']}",
                "elements": [
                    _button("Approve", "approve", value, "primary"),
                    _button("Reject", "reject", value, "danger"),
                ],
            }
        )
    else:
        blocks.append(_context(outcome_line(approval)))
    return blocks


def outcome_line(approval: Mapping[str, Any]) -> str:
    """How an approval ended, in one line."""
    who = approval.get("decided_by")
    if approval["state"] == "expired":
        fired = _when(approval["fired_at"] or approval["expires_at"])
        return f":alarm_clock: Expired unanswered at {fired}; escalated to on-call."
    if who:
        when = _when(approval["decided_at"])
        return f"*{approval['state'].capitalize()}* by {who['name']} via {who['via']} at {when}."
    return f"*{approval['state'].capitalize()}*."


def event_blocks(
    kind: str, summary: str, details: Mapping[str, Any], abort_minutes: int | None
) -> list[dict[str, Any]]:
    """A level 1, 3 or 4 notice: context only; level 3 adds the abort button."""
    action = details.get("action", {})
    target = action.get("target", {})
    what = f"{action.get('type', 'no action')} of {target.get('namespace', '?')}/{target.get('name', '?')}"
    title = {
        "context": f"For your information (level {details.get('level')}): no action recommended",
        "executed_abort_window": f"Done: {what}. Abort within {abort_minutes} minutes",
        "execution_failed": f"Execution FAILED: {what}",
        "verification_failed": f"Verification FAILED: {what}",
    }.get(kind, f"{kind}: {what}")
    triggers = "\n".join(f"• `{t['id']}`: {esc(t['message'])}" for t in details.get("triggers", []))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        _text(esc(summary)),
    ]
    if triggers:
        blocks.append(_text(f"*Triggers:*\n{triggers}"))
    if details.get("detail"):
        blocks.append(_text(f"*Detail:* {esc(details['detail'])}"))
    if kind == "executed_abort_window":
        blocks.append(
            {
                "type": "actions",
                "block_id": f"abort:{details['decision_id']}",
                "elements": [_button("Abort and roll back", "abort", str(details["decision_id"]), "danger")],
            }
        )
    return blocks


class SlackChannel:
    """The outbox's Slack sender: Web API calls with the bot token, each with a timeout."""

    def __init__(self, api_url: str, token: str, channel: str, timeout: float = 5.0) -> None:
        self.api_url, self.token, self.channel, self.timeout = api_url.rstrip("/"), token, channel, timeout
        self.session = requests.Session()

    def deliver(self, delivery: Delivery) -> dict[str, Any]:
        payload = dict(delivery.notice.payload)
        if "response_url" in payload:
            url = payload.pop("response_url")
            return self._post(url, payload, web_api=False)
        if delivery.previous and delivery.previous.get("ts"):
            body = {**payload, "channel": delivery.previous["channel"], "ts": delivery.previous["ts"]}
            return self._post(f"{self.api_url}/chat.update", body, web_api=True)
        return self._post(
            f"{self.api_url}/chat.postMessage", {**payload, "channel": self.channel}, web_api=True
        )

    def _post(self, url: str, body: dict[str, Any], *, web_api: bool) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if web_api else {}
        try:
            response = self.session.post(url, json=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise DeliveryFailed(f"Slack {url}: {type(exc).__name__}: {exc}", retryable=True) from exc
        if response.status_code == 429 or response.status_code >= 500:
            after = response.headers.get("Retry-After")
            raise DeliveryFailed(
                f"Slack {url}: HTTP {response.status_code}",
                retryable=True,
                retry_after=float(after) if after and after.isdigit() else None,
            )
        if response.status_code != 200:
            raise DeliveryFailed(f"Slack {url}: HTTP {response.status_code}", retryable=False)
        if not web_api:
            return {}
        try:
            answer = response.json()
        except ValueError as exc:
            raise DeliveryFailed(f"Slack {url}: not JSON", retryable=True) from exc
        if not answer.get("ok"):
            error = str(answer.get("error", "unknown"))
            raise DeliveryFailed(f"Slack {url}: {error}", retryable=error in RETRYABLE_ERRORS)
        return {"channel": answer.get("channel"), "ts": answer.get("ts")}

    def close(self) -> None:
        self.session.close()
