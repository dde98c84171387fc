"""The command line of the human loop: approvals through the agent's JSON API, and the
console's access file. A thin layer: the API does the work, errors become one line."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from pyagent.access import hash_password
from pyagent.console.client import ApiClient
from pyagent.errors import PyagentError


@contextmanager
def api_client(url: str, user: str, password: str | None) -> Iterator[ApiClient]:
    """A client of the agent's JSON API (prompting for the password when none was given),
    closed after use; the project's errors become one-line click errors."""
    if password is None:
        password = click.prompt(f"password for {user}", hide_input=True)
    client = ApiClient(url, user, password)
    try:
        yield client
    except PyagentError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        client.close()


def api_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--url``, ``--user`` and the password (``PYAGENT_PASSWORD`` or a prompt) of the JSON API."""
    command = click.option(
        "--password", envvar="PYAGENT_PASSWORD", help="Prefer PYAGENT_PASSWORD or the prompt."
    )(command)
    command = click.option("--user", envvar="PYAGENT_USER", required=True, help="A user of the access file.")(
        command
    )
    return click.option(
        "--url", envvar="PYAGENT_URL", default="http://127.0.0.1:9095", show_default=True, help="The agent."
    )(command)


def describe_approval(approval: dict[str, Any], now: float) -> str:
    """One approval in a few lines: what, state or time left, and the triggers."""
    request, target = approval["request"], approval["request"]["action"]["target"]
    what = f"{request['action']['type']} of {target['kind']} {target['namespace']}/{target['name']}"
    if approval["state"] == "pending":
        status = f"pending, {max(0, int(approval['expires_at'] - now))} s left"
    else:
        who = approval.get("decided_by") or {}
        status = approval["state"] + (f" by {who['name']} via {who['via']}" if who else "")
    lines = [f"{approval['id']}  {what}  [{status}]", f"  {request['summary']}"]
    lines.extend(f"  [{t['ceiling']}] {t['id']}: {t['message']}" for t in request["triggers"])
    lines.append(f"  plan {approval['plan_hash'][:16]}: {request['plan']}")
    if approval.get("execution"):
        lines.append(f"  execution: {approval['execution']}")
    return "\n".join(lines)


@click.group()
def approvals() -> None:
    """Level-2 approvals, through the agent's JSON API (the console's)."""


@approvals.command("list")
@api_options
@click.option(
    "--state", type=click.Choice(["pending", "approved", "rejected", "expired"]), help="Only these."
)
def approvals_list(url: str, user: str, password: str | None, state: str | None) -> None:
    """List approvals, pending ones first by deadline."""
    with api_client(url, user, password) as client:
        listed = client.approvals(state)
    if not listed:
        click.echo("no approvals")
    for approval in listed:
        click.echo(describe_approval(approval, time.time()))


def _decide(  # noqa: PLR0913, PLR0917 - the verb and the command's options
    verb: str, approval_id: str, url: str, user: str, password: str | None, plan_hash: str | None
) -> None:
    with api_client(url, user, password) as client:
        seen = plan_hash or client.approval(approval_id)["plan_hash"]
        answer = client.decide(approval_id, verb, seen)
    click.echo(answer["message"])


plan_hash_option = click.option(
    "--plan-hash", help="The plan you reviewed (see `approvals list`); refused if the pending plan differs."
)


@approvals.command("approve")
@click.argument("approval_id")
@api_options
@plan_hash_option
def approvals_approve(
    approval_id: str, url: str, user: str, password: str | None, plan_hash: str | None
) -> None:
    """Approve APPROVAL_ID as USER; the agent re-asks the policy before executing."""
    _decide("approve", approval_id, url, user, password, plan_hash)


@approvals.command("reject")
@click.argument("approval_id")
@api_options
@plan_hash_option
def approvals_reject(
    approval_id: str, url: str, user: str, password: str | None, plan_hash: str | None
) -> None:
    """Reject APPROVAL_ID as USER."""
    _decide("reject", approval_id, url, user, password, plan_hash)


@click.group()
def console() -> None:
    """The web console's access file."""


@console.command("hash-password")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="Prefer the prompt.")
def console_hash_password(password: str) -> None:
    """Print the scrypt hash of a password for the access file's ``password_hash``."""
    click.echo(hash_password(password))
