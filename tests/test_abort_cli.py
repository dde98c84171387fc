"""``pyagent abort`` from a terminal, through the running agent's authenticated API."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from pyagent.cli import main
from pyagent.sources import history_import as history_file
from pyagent.sources.history_sqlite import HistorySQLite
from tests.humans import PASSWORDS, audit_records, humans_settings, saas, served
from tests.serving import EXAMPLES, example, post


def test_cli_aborts_a_level_3_action_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    history_file.import_incidents(
        HistorySQLite(state / "history.db"), history_file.load(EXAMPLES / "history.yaml")
    )
    with saas() as fakes, served(humans_settings(state, fakes)) as (url, running):
        post(url, example("level-3-rollback"))
        assert running.agent.drain(30)
        [decision] = audit_records(state, "decision")
        assert 3 == decision["level"]
        runner = CliRunner()
        env = {"PYAGENT_URL": url, "PYAGENT_USER": "bob", "PYAGENT_PASSWORD": PASSWORDS["bob"]}
        aborted = runner.invoke(main, ["abort", decision["decision_id"]], env=env)
        assert 0 == aborted.exit_code, aborted.output
        assert f"decision {decision['decision_id']}: aborted" in aborted.output
        again = runner.invoke(main, ["abort", decision["decision_id"]], env=env)
        assert 1 == again.exit_code
        assert "already aborted by bob" in again.output
        unknown = runner.invoke(main, ["abort", "no-such-decision"], env=env)
        assert 1 == unknown.exit_code
        assert "no action was executed for decision no-such-decision" in unknown.output
    steps = [
        r["step"] for r in audit_records(state, "action_step") if r["decision_id"] == decision["decision_id"]
    ]
    assert ["abort_requested", "rollback", "rolled_back"] == steps[-3:]
    [requested] = [r for r in audit_records(state, "action_step") if r["step"] == "abort_requested"]
    assert ("bob", "api") == (requested["by"], requested["via"])
