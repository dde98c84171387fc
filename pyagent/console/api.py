"""The JSON API under ``/api/`` (the console's pages and the CLI use it) and Slack's
``POST /slack/interactions``."""

from __future__ import annotations

import logging
import uuid

from pyagent.access import Identity
from pyagent.console import queries
from pyagent.console.desk import Desk
from pyagent.console.web import Request, Response, json_response
from pyagent.notifiers import slack

log = logging.getLogger("pyagent.console.api")
VERDICTS = {"approve": "approved", "reject": "rejected"}


def approvals(desk: Desk, request: Request) -> Response:
    state = request.query.get("state") or None
    if state not in {None, "pending", "approved", "rejected", "expired"}:
        return json_response(400, {"error": f"unknown state {state!r}"})
    listed = desk.supervisor.approvals.listed(state)
    return json_response(200, {"approvals": [a.to_json() for a in listed], "now": desk.clock()})


def approval(desk: Desk, approval_id: str) -> Response:
    found = desk.supervisor.approvals.get(approval_id)
    if found is None:
        return json_response(404, {"error": f"no approval {approval_id}"})
    change = desk.supervisor.changes.for_decision(found.decision_id)
    return json_response(200, {**found.to_json(), "change_record": change.to_json() if change else None})


def decide(desk: Desk, request: Request, identity: Identity, approval_id: str, verb: str) -> Response:
    """``POST /api/approvals/{id}/approve|reject`` with ``{"plan_hash": ...}``: the plan seen."""
    plan_hash = str(request.json().get("plan_hash", ""))
    if not plan_hash:
        return json_response(400, {"error": "plan_hash is required: the hash of the plan you approve"})
    status, message, decided = desk.decide(approval_id, VERDICTS[verb], plan_hash, identity)
    body = {"message": message, "approval": decided.to_json() if decided else None}
    return json_response(status, body if status == 200 else {"error": message})


def decisions(desk: Desk, request: Request) -> Response:
    level = request.query.get("level", "")
    rows = queries.decisions(
        desk.store,
        int(level) if level.isdigit() else None,
        request.query.get("service", ""),
        request.query.get("trigger", ""),
    )
    return json_response(
        200, {"decisions": [row.__dict__ | {"triggers": list(row.triggers)} for row in rows]}
    )


def abort(desk: Desk, identity: Identity, decision_id: str) -> Response:
    status, message = desk.abort_action(decision_id, identity)
    return json_response(status, {"message": message} if status == 200 else {"error": message})


def slack_interactions(desk: Desk, request: Request) -> Response:
    """A button click from Slack: verified, mapped to a person, then decided; refusals answered
    to the clicker alone (ephemeral) and changing nothing."""
    problem = slack.verify(
        desk.slack_signing_secret or "",
        request.headers.get("x-slack-request-timestamp"),
        request.headers.get("x-slack-signature"),
        request.body,
        desk.clock(),
    )
    if problem is not None:
        log.warning("refused a Slack request: %s", problem)
        return json_response(401, {"error": f"not verified: {problem}"})
    click = slack.parse_click(request.body)
    if click is None:
        return json_response(200, {"ok": True, "ignored": "not a block_actions click"})
    identity = desk.supervisor.access.slack(click.user_id)
    if identity is None:
        message = f"Slack user {click.user_id} is not in the access file; nothing changed"
        status = 403
    elif click.action_id in VERDICTS:
        approval_id, _, plan_hash = click.value.partition(":")
        status, message, _ = desk.decide(approval_id, VERDICTS[click.action_id], plan_hash, identity)
    elif click.action_id == "abort":
        status, message = desk.abort_action(click.value, identity)
    else:
        status, message = 400, f"unknown action {click.action_id!r}; nothing changed"
    if status != 200:
        desk.outbox.post(*desk.messages.reply(click.response_url, message, f"reply-{uuid.uuid4()}"))
    return json_response(200, {"ok": status == 200, "status": status, "message": message})
