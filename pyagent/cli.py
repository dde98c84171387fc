"""The command line: a thin layer that parses options, calls the library, and turns
the project's errors into one-line messages with a non-zero exit."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from pyagent import settings as settings_module
from pyagent.audit import verify
from pyagent.contract import Decision, validate
from pyagent.errors import InvalidDocument, PyagentError
from pyagent.opa import EmbeddedOpa, OpaClient, default_policy_dir


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{path}: {exc}") from exc


@contextmanager
def _opa_client(opa_url: str | None, opa_binary: str | None, policy_dir: Path) -> Iterator[OpaClient]:
    """A client for ``opa_url``, or for an OPA started here on the policy directory."""
    if opa_url:
        client = OpaClient(opa_url)
        try:
            yield client
        finally:
            client.close()
        return
    with EmbeddedOpa(policy_dir, binary=opa_binary) as opa:
        client = OpaClient(opa.url)
        try:
            yield client
        finally:
            client.close()


def explain(decision: Decision) -> str:
    """A decision as a person reads it: level, what the agent will do, and every reason."""
    does = {
        0: "records the alert only; shows no AI output",
        1: "posts context to humans; recommends no action",
        2: f"asks a human to approve (timeout {decision.approval.timeout_seconds} s, "
        f"then {decision.approval.on_timeout})",
        3: f"executes, notifies humans, who may abort within {decision.abort_window_seconds} s",
        4: "executes and verifies; notifies humans only if verification fails",
    }[decision.level]
    lines = [f"level {decision.level} ({decision.name}): {does}"]
    if decision.change_record_required:
        lines.append("a change record is required before any action")
    if decision.triggers:
        lines.append("triggers:")
        lines.extend(f"  [{t.ceiling}] {t.id}: {t.message}" for t in decision.triggers)
    else:
        lines.append("triggers: none fired")
    lines.append(f"must log: {', '.join(decision.logging)}")
    lines.append(f"policy {decision.policy.version}, next review {decision.policy.next_review}")
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pyagent")
def main() -> None:
    """Escalation policy engine for AI-assisted incident response."""


@main.command()
@click.argument("input_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--opa-url", help="An OPA to ask; without it, one is started on the policy directory.")
@click.option("--opa-binary", help="The opa binary to start (default: opa on PATH, then .tools/bin/opa).")
@click.option(
    "--policy-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=default_policy_dir,
    show_default="the project's rego/",
    help="Policy and data directory for the OPA started here.",
)
@click.option("--explain", "as_text", is_flag=True, help="Print the decision for a person instead of JSON.")
def decide(
    input_file: Path, opa_url: str | None, opa_binary: str | None, policy_dir: Path, as_text: bool
) -> None:
    """Print the decision for a policy INPUT_FILE (the input document OPA receives)."""
    policy_input = _load_json(input_file)
    try:
        validate("input", policy_input)
    except InvalidDocument as problem:
        click.echo(f"warning: {problem}; the policy will fire context_missing", err=True)
    try:
        with _opa_client(opa_url, opa_binary, policy_dir) as client:
            decision = client.decide(policy_input)
    except PyagentError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_text:
        click.echo(explain(decision))
    else:
        json.dump(decision.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")


@main.command()
@click.option("--listen", help="HOST:PORT to serve on (default 127.0.0.1:9095).")
@click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), help="Store, audit log (default ./var)."
)
@click.option("--opa-url", help="An OPA to ask; without it, one is started on the policy directory.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--inventory", type=click.Path(dir_okay=False, path_type=Path), help="Inventory YAML file.")
def serve(
    listen: str | None,
    state_dir: Path | None,
    opa_url: str | None,
    config_file: Path | None,
    inventory: Path | None,
) -> None:
    """Serve the Alertmanager webhook: POST /webhook/alertmanager, GET /healthz, GET /metrics."""
    import os  # noqa: PLC0415 - the environment is read here, once, not at import

    from waitress import serve as waitress_serve  # noqa: PLC0415

    from pyagent.app import running_agent  # noqa: PLC0415
    from pyagent.server import WebhookApp  # noqa: PLC0415

    flags = {"listen": listen, "state_dir": state_dir, "opa_url": opa_url, "inventory": inventory}
    try:
        settings = settings_module.load(config_file, os.environ, {k: v for k, v in flags.items() if v})
        with running_agent(settings) as running:
            app = WebhookApp(running.agent, settings.webhook_token, settings.max_body_bytes)
            click.echo(f"pyagent serving on http://{settings.listen} (OPA {running.opa_url})", err=True)
            waitress_serve(
                app,
                host=settings.host,
                port=settings.port,
                threads=8,
                max_request_body_size=settings.max_body_bytes + 1,
                ident="pyagent",
            )
    except PyagentError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def audit_verify(path: Path) -> None:
    """Recompute the chain of the audit log at PATH; exit 1 naming the first bad seq."""
    result = verify(path)
    if not result.ok:
        raise click.ClickException(f"{path}: chain broken at seq {result.first_bad_seq}: {result.reason}")
    click.echo(f"{path}: {result.records} records, chain intact")
