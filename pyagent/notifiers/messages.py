"""The notices each event produces, one per configured channel, and the dispatch notifier.

``log`` (the terminal and the log, the embedded default) is always on; ``slack`` and
``pagerduty`` when configured. Every notice goes out through the outbox, so nothing a
caller does waits for a channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyagent.approvals import Approval
from pyagent.notifiers import pagerduty, slack
from pyagent.notifiers.outbox import Notice, Outbox

LOG, SLACK, PAGERDUTY = "log", "slack", "pagerduty"


@dataclass(frozen=True)
class Messages:
    """Builds notices for the channels that are configured."""

    channels: frozenset[str]
    console_url: str | None = None

    def _what(self, approval: Approval) -> str:
        action = approval.request.action
        return f"{action.type} of {action.kind} {action.namespace}/{action.name}"

    def approval_requested(self, approval: Approval, change: str | None) -> list[Notice]:
        data = approval.to_json()
        text = f"Approval needed: {self._what(approval)} ({approval.request.summary})"
        notices = [
            Notice(
                LOG,
                "approval_request",
                approval.id,
                {"text": text, "approval_id": approval.id, "plan_hash": approval.plan_hash},
            )
        ]
        if SLACK in self.channels:
            blocks = slack.approval_blocks(data, self.console_url, change)
            notices.append(Notice(SLACK, "approval_request", approval.id, {"text": text, "blocks": blocks}))
        return notices

    def approval_closed(self, approval: Approval, change: str | None) -> list[Notice]:
        """The update when an approval is decided or expires."""
        data = approval.to_json()
        line = slack.outcome_line(data)
        notices = [Notice(LOG, "approval_closed", approval.id, {"text": f"{self._what(approval)}: {line}"})]
        if SLACK in self.channels:
            blocks = slack.approval_blocks(data, self.console_url, change)
            notices.append(
                Notice(
                    SLACK,
                    "approval_closed",
                    approval.id,
                    {"text": line, "blocks": blocks},
                    update_of="approval_request",
                )
            )
        return notices

    def escalation(self, approval: Approval, reason: str) -> list[Notice]:
        """The page to on-call; one per approval whatever the reason (one dedup key)."""
        event = pagerduty.trigger_event(approval.to_json(), reason, self.console_url)
        notices = [
            Notice(
                LOG,
                "escalation",
                approval.id,
                {"text": event["payload"]["summary"], "dedup_key": event["dedup_key"]},
            )
        ]
        if PAGERDUTY in self.channels:
            notices.append(Notice(PAGERDUTY, "escalation", approval.id, event))
        return notices

    def reply(self, response_url: str | None, text: str, subject: str) -> list[Notice]:
        """An answer to one person's click, shown only to them."""
        if SLACK not in self.channels or not response_url:
            return []
        body = {
            "response_url": response_url,
            "response_type": "ephemeral",
            "replace_original": False,
            "text": text,
        }
        return [Notice(SLACK, "reply", subject, body)]

    def event(self, kind: str, summary: str, details: Mapping[str, Any]) -> list[Notice]:
        """A level 1, 3 or 4 notice (context, done with an abort window, a failure)."""
        subject = str(details.get("decision_id", ""))
        window = details.get("abort_window_seconds")
        minutes = int(window) // 60 if isinstance(window, int) else None
        notices = [Notice(LOG, kind, subject, {"text": summary, "details": dict(details)})]
        if SLACK in self.channels:
            blocks = slack.event_blocks(kind, summary, details, minutes)
            notices.append(Notice(SLACK, kind, subject, {"text": f"{kind}: {summary}", "blocks": blocks}))
        return notices


class OutboxNotifier:
    """:class:`pyagent.notifiers.Notifier` for dispatch: every notice through the outbox."""

    def __init__(self, outbox: Outbox, messages: Messages) -> None:
        self.outbox, self.messages = outbox, messages

    def notify(self, kind: str, summary: str, details: dict[str, Any]) -> None:
        self.outbox.post(*self.messages.event(kind, summary, details))
