"""The command line: a thin layer that parses options, calls the library, and turns
the project's errors into one-line messages with a non-zero exit."""

from __future__ import annotations

import json
import signal
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from click.decorators import FC

from pyagent import settings as settings_module
from pyagent.alerts import parse_webhook
from pyagent.app import build_executor, build_sources, policy_client
from pyagent.audit import verify
from pyagent.cli_humans import api_client, api_options, approvals, console
from pyagent.contract import Decision, validate
from pyagent.errors import InvalidDocument, PyagentError
from pyagent.evaluate import Evaluation
from pyagent.evaluate import evaluate as evaluate_payload
from pyagent.opa import default_policy_dir
from pyagent.sources import history_import as history_file
from pyagent.sources.history_sqlite import HistorySQLite


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{path}: {exc}") from exc


def _settings(config_file: Path | None, **flags: Any) -> settings_module.Settings:
    """Settings from defaults, the config file, ``PYAGENT_*`` variables and the flags given."""
    import os  # noqa: PLC0415 - the environment is read here, once, not at import

    given = {key: value for key, value in flags.items() if value is not None}
    try:
        return settings_module.load(config_file, os.environ, given)
    except PyagentError as exc:
        raise click.ClickException(str(exc)) from exc


opa_url_option = click.option(
    "--opa-url", help="An OPA to ask; without it, one is started on the policy directory."
)
config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML settings file (see examples/config.yaml).",
)
inventory_option = click.option(
    "--inventory", type=click.Path(dir_okay=False, path_type=Path), help="Inventory YAML file."
)


def state_dir_option(purpose: str) -> Callable[[FC], FC]:
    """``--state-dir``, with what the command uses it for."""
    return click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help=purpose)


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
@opa_url_option
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
    settings = _settings(None, opa_url=opa_url, opa_binary=opa_binary, policy_dir=policy_dir)
    try:
        with policy_client(settings) as client:
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
@state_dir_option("Store, audit log (default ./var).")
@opa_url_option
@config_option
@inventory_option
def serve(
    listen: str | None,
    state_dir: Path | None,
    opa_url: str | None,
    config_file: Path | None,
    inventory: Path | None,
) -> None:
    """Serve the Alertmanager webhook: POST /webhook/alertmanager, GET /healthz, GET /metrics."""
    from pyagent.app import running_agent  # noqa: PLC0415
    from pyagent.console.app import HumansApp  # noqa: PLC0415
    from pyagent.server import WebhookApp, server, settle_collector  # noqa: PLC0415

    settings = _settings(
        config_file, listen=listen, state_dir=state_dir, opa_url=opa_url, inventory=inventory
    )
    # unwind: drain workers, stop the embedded OPA. uvicorn catches SIGTERM while it serves,
    # stops taking requests and finishes those in progress, then raises it again to this.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        with running_agent(settings) as running:
            app = WebhookApp(
                running.agent,
                settings.webhook_token,
                settings.max_body_bytes,
                HumansApp(running.desk),
                threads=settings.server_threads,
            )
            click.echo(f"pyagent serving on http://{settings.listen} (OPA {running.opa_url})", err=True)
            uvicorn_server = server(app, settings.host, settings.port)
            settle_collector()
            try:
                uvicorn_server.run()
            finally:
                app.close()
    except PyagentError as exc:
        raise click.ClickException(str(exc)) from exc


def _exit_on_signal(_signum: int, _frame: object) -> None:
    """SIGTERM is how a service is stopped: the stack unwinds and the exit is clean (0)."""
    raise SystemExit(0)


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


@main.command()
@click.argument("payload_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
@state_dir_option("Whose history to read (default ./var).")
@opa_url_option
@inventory_option
@click.option(
    "--now",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S%z"]),
    help="Decide as of this time (RFC 3339, default: now), to replay a past alert.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON, with the policy input.")
def evaluate(  # noqa: PLR0913, PLR0917 - one parameter per option
    payload_file: Path,
    config_file: Path | None,
    state_dir: Path | None,
    opa_url: str | None,
    inventory: Path | None,
    now: datetime | None,
    as_json: bool,
) -> None:
    """Run the pipeline for one Alertmanager webhook PAYLOAD_FILE and print each decision.

    Reads the history in the state directory but records nothing and executes nothing.
    """
    settings = _settings(config_file, state_dir=state_dir, opa_url=opa_url, inventory=inventory)
    try:
        delivery = parse_webhook(payload_file.read_bytes())
    except OSError as exc:
        raise click.ClickException(f"{payload_file}: {exc}") from exc
    except InvalidDocument as problem:
        raise click.ClickException(f"{payload_file}: {problem}") from problem
    moment = (now.replace(tzinfo=UTC) if now.tzinfo is None else now) if now else datetime.now(UTC)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="pyagent-evaluate-") as scratch,
            policy_client(settings) as client,
        ):
            recorded = settings.state_dir / "history.db"
            history = recorded if recorded.is_file() else Path(scratch) / "history.db"
            sources = build_sources(settings, history)
            executor = build_executor(settings, clock=lambda: moment)  # a replay's plan is of its moment
            evaluations = evaluate_payload(delivery, sources, client, executor, moment)
    except PyagentError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        json.dump([e.to_json() for e in evaluations], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if not evaluations:
        click.echo("no firing alerts: a resolved notification closes incidents and decides nothing")
    for evaluation in evaluations:
        click.echo(describe(evaluation))


def describe(evaluation: Evaluation) -> str:
    """One alert's evaluation as a person reads it."""
    alert, verdict = evaluation.alert, evaluation.verdict
    lines = [f"{alert.name} {alert.fingerprint}: {evaluation.context.diagnosis.summary}"]
    lines.append(explain(verdict.decision))
    if verdict.fallback:
        lines.append(f"OPA gave no decision ({verdict.fallback}): level 1 by the agent's fallback")
    if verdict.clamped_from is not None:
        lines.append(f"lowered from level {verdict.clamped_from} because a context source failed")
    lines.append(_novelty_line(evaluation))
    lines.extend(f"context problem: {problem}" for problem in evaluation.context.problems)
    if evaluation.plan:
        lines.append(f"plan: {evaluation.plan}")
    return "\n".join(lines) + "\n"


def _novelty_line(evaluation: Evaluation) -> str:
    novelty = evaluation.context.novelty
    side = "below" if novelty.novel else "at or above"
    nearest = novelty.nearest
    if nearest is None:
        return f"novelty: nothing in history resembles it ({side} the threshold {novelty.threshold:g})"
    return (
        f"novelty: {novelty.score:.2f} similar to incident {nearest.id} ({nearest.alert_name},"
        f" {nearest.started_at}), {side} the threshold {novelty.threshold:g}"
    )


@main.command("abort")
@click.argument("decision_id")
@api_options
def abort_command(decision_id: str, url: str, user: str, password: str | None) -> None:
    """Abort the level-3 action of DECISION_ID within its abort window: the agent rolls it back.

    Asks the running agent (``POST /api/actions/DECISION_ID/abort``, with the console's
    credentials); after the window the agent refuses and this exits 1 saying why.
    """
    with api_client(url, user, password) as client:
        answer = client.abort(decision_id)
    click.echo(f"decision {decision_id}: aborted; {answer.get('message', '')}")


@main.group()
def history() -> None:
    """The incident history the policy's pattern facts come from."""


@history.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
@state_dir_option("Where history.db is (default ./var).")
def history_import(file: Path, config_file: Path | None, state_dir: Path | None) -> None:
    """Import past incidents from a YAML FILE (see examples/history.yaml); importing twice adds nothing."""
    settings = _settings(config_file, state_dir=state_dir)
    try:
        incidents = history_file.load(file)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        imported, present = history_file.import_incidents(
            HistorySQLite(settings.state_dir / "history.db"), incidents
        )
    except PyagentError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{settings.state_dir / 'history.db'}: {imported} incidents imported, {present} already present"
    )


main.add_command(approvals)
main.add_command(console)
