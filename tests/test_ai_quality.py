"""The AI's false-positive rate: from recorded outcomes (a human's rejection included) into the
policy input and onto ``/metrics``, against a real SQLite history and a served agent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest

from pyagent.cli import main
from pyagent.metrics import AIQuality
from pyagent.sources.history_sqlite import HistorySQLite, OutcomeKind
from tests.humans import PASSWORDS, audit_records, humans_settings, pending_approval, saas, served, wait_until
from tests.serving import example, post

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _outcome(history: HistorySQLite, pattern: str, outcome: OutcomeKind, ago: timedelta) -> None:
    incident = history.record_incident(
        f"fp-{pattern}-{ago}", pattern, "Alert", NOW - ago - timedelta(minutes=5)
    )
    action = history.record_action(incident, "rolling_restart", 3, NOW - ago)
    history.record_outcome(action, outcome, NOW - ago)


def _history(tmp_path: Path) -> HistorySQLite:
    """oom: 1 wrong of 4 in the window (and an old wrong one outside it); deadlock: 2 wrong of 2."""
    history = HistorySQLite(tmp_path / "history.db")
    for outcome in ("success", "success", "success", "rolled_back"):
        _outcome(history, "oom-memory-leak", outcome, timedelta(days=1))
    _outcome(history, "oom-memory-leak", "false_positive", timedelta(days=8))
    _outcome(history, "process-deadlock", "false_positive", timedelta(hours=2))
    _outcome(history, "process-deadlock", "aborted", timedelta(hours=3))
    return history


def test_false_positive_rate_per_pattern_and_overall_over_seven_days(tmp_path: Path) -> None:
    rates = _history(tmp_path).false_positive_rates(NOW)
    assert {"oom-memory-leak": 0.25, "process-deadlock": 1.0} == dict(rates.by_pattern)
    assert 3 / 6 == rates.overall


def test_policy_input_reads_the_overall_rate(tmp_path: Path) -> None:
    assert 3 / 6 == _history(tmp_path).stats("oom-memory-leak", "rolling_restart", NOW).false_positive_rate_7d


def test_metrics_expose_outcomes_and_rates(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(AIQuality(_history(tmp_path), lambda: NOW))
    text = generate_latest(registry).decode()
    assert 'pyagent_ai_outcomes_total{outcome="false_positive",pattern="oom-memory-leak"} 1.0' in text
    assert 'pyagent_ai_outcomes_total{outcome="success",pattern="oom-memory-leak"} 3.0' in text
    assert "pyagent_ai_false_positive_rate_7d 0.5" in text
    assert 'pyagent_ai_pattern_false_positive_rate_7d{pattern="process-deadlock"} 1.0' in text


def test_unreadable_history_leaves_the_ai_samples_out_and_the_scrape_working(tmp_path: Path) -> None:
    corrupt = tmp_path / "history.db"
    corrupt.write_bytes(b"this is not a database, " * 100)
    registry = CollectorRegistry()
    registry.register(AIQuality(HistorySQLite(corrupt), lambda: NOW))
    text = generate_latest(registry).decode()
    assert "pyagent_ai_outcomes_total{" not in text
    assert "pyagent_ai_false_positive_rate_7d " not in text


def test_a_rejected_approval_is_a_false_positive_on_metrics_and_in_the_next_decision(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with saas() as fakes, served(humans_settings(state, fakes)) as (url, _):
        post(url, example("level-4-oom-restart"))  # no history: level 2, an approval
        approval = pending_approval(url)
        env = {"PYAGENT_URL": url, "PYAGENT_USER": "bob", "PYAGENT_PASSWORD": PASSWORDS["bob"]}
        rejected = CliRunner().invoke(main, ["approvals", "reject", approval["id"]], env=env)
        assert 0 == rejected.exit_code, rejected.output
        metrics = wait_until(
            lambda: "false_positive" in (text := requests.get(url + "/metrics", timeout=10).text) and text
        )
    assert 'pyagent_ai_outcomes_total{outcome="false_positive",pattern="oom-memory-leak"} 1.0' in metrics
    assert "pyagent_ai_false_positive_rate_7d 1.0" in metrics
    assert [] == audit_records(state, "history_problem")
    stats = HistorySQLite(state / "history.db").stats("oom-memory-leak", "rolling_restart", datetime.now(UTC))
    assert 1.0 == stats.false_positive_rate_7d  # the next decision fires false_positive_rate_high
