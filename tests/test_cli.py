"""The command line, as a user runs it: the examples decide what the README says they do."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner, Result

from pyagent import settings
from pyagent.audit import AuditLog, verify
from pyagent.cli import main
from pyagent.errors import ConfigError
from pyagent.opa import EmbeddedOpa, free_port
from tests.execution_kit import wait_for
from tests.processes import stop
from tests.serving import EXAMPLES, answers

NOW = "2026-11-26T12:00:00Z"


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state directory with the example history imported."""
    result = _run("history", "import", str(EXAMPLES / "history.yaml"), "--state-dir", str(tmp_path))
    assert 0 == result.exit_code, result.output
    return tmp_path


def _evaluate(state: Path, opa: EmbeddedOpa, name: str) -> list[dict[str, object]]:
    result = _run(
        "evaluate", str(EXAMPLES / "alerts" / f"{name}.json"),
        "--state-dir", str(state), "--opa-url", opa.url,
        "--inventory", str(EXAMPLES / "inventory.yaml"), "--now", NOW, "--json",
    )  # fmt: skip
    assert 0 == result.exit_code, result.output
    evaluations: list[dict[str, object]] = json.loads(result.output)
    return evaluations


@pytest.mark.parametrize(
    ("name", "level", "triggers"),
    [
        ("level-0-ai-opted-out", 0, {"ai_unavailable", "regulated_asset"}),
        ("level-1-novel-pattern", 1, {"novel_pattern", "confidence_low"}),
        ("level-2-first-occurrence", 2, {"early_occurrence", "error_budget_degraded"}),
        ("level-3-rollback", 3, {"action_not_authorised_autonomous", "qualification_missing"}),
        ("level-4-oom-restart", 4, set()),
        ("regulated-pci", 2, {"regulated_asset"}),
    ],
)
def test_each_example_gets_its_documented_level(
    state: Path, opa_server: EmbeddedOpa, name: str, level: int, triggers: set[str]
) -> None:
    [evaluation] = _evaluate(state, opa_server, name)
    decision = evaluation["decision"]
    assert isinstance(decision, dict)
    assert level == decision["level"]
    assert triggers <= {t["id"] for t in decision["triggers"]}
    assert evaluation["context_problems"] == []


def test_a_replayed_restart_is_planned_at_the_replayed_moment(state: Path, opa_server: EmbeddedOpa) -> None:
    [evaluation] = _evaluate(state, opa_server, "level-4-oom-restart")
    assert '"kubectl.kubernetes.io/restartedAt": "2026-11-26T12:00:00+00:00"' in str(evaluation["plan"])


def test_regulated_example_requires_a_change_record(state: Path, opa_server: EmbeddedOpa) -> None:
    [evaluation] = _evaluate(state, opa_server, "regulated-pci")
    decision = evaluation["decision"]
    assert isinstance(decision, dict)
    assert decision["change_record_required"] is True


def test_resolved_example_decides_nothing(state: Path, opa_server: EmbeddedOpa) -> None:
    assert [] == _evaluate(state, opa_server, "resolved-oom-restart")


def test_evaluate_records_nothing(state: Path, opa_server: EmbeddedOpa) -> None:
    before = sorted(p.name for p in state.iterdir())
    _evaluate(state, opa_server, "level-4-oom-restart")
    assert before == sorted(p.name for p in state.iterdir())


def test_evaluate_explains_for_a_person(state: Path, opa_server: EmbeddedOpa) -> None:
    result = _run(
        "evaluate", str(EXAMPLES / "alerts" / "level-2-first-occurrence.json"),
        "--state-dir", str(state), "--opa-url", opa_server.url, "--now", NOW,
    )  # fmt: skip
    assert 0 == result.exit_code
    assert "level 2 (supervised): asks a human to approve" in result.output
    assert "[2] early_occurrence:" in result.output
    assert (
        "plan: dry-run: PATCH /apis/apps/v1/namespaces/search/deployments/search-api/scale" in result.output
    )


def test_evaluate_names_the_bad_field_of_a_payload(tmp_path: Path) -> None:
    body = json.loads((EXAMPLES / "alerts" / "level-1-novel-pattern.json").read_text())
    body["alerts"][0]["labels"] = "not an object"
    payload = tmp_path / "bad.json"
    payload.write_text(json.dumps(body))
    result = CliRunner().invoke(main, ["evaluate", str(payload)])
    assert 1 == result.exit_code
    assert "alerts[0].labels" in result.output


def test_history_import_twice_adds_nothing(state: Path) -> None:
    result = _run("history", "import", str(EXAMPLES / "history.yaml"), "--state-dir", str(state))
    assert "0 incidents imported, 23 already present" in result.output


def test_history_import_names_a_bad_entry(tmp_path: Path) -> None:
    bad = tmp_path / "history.yaml"
    bad.write_text("incidents:\n  - pattern: p\n    alertname: A\n    action: x\n    level: 9\n")
    result = CliRunner().invoke(main, ["history", "import", str(bad), "--state-dir", str(tmp_path)])
    assert 1 == result.exit_code
    assert "incidents[0]" in result.output


def test_decide_explains_the_design_example(opa_server: EmbeddedOpa) -> None:
    result = _run("decide", str(EXAMPLES / "input.json"), "--opa-url", opa_server.url, "--explain")
    assert 0 == result.exit_code
    assert result.output.startswith("level 4 (autonomous)")


def test_audit_verify_exit_codes(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, "test") as log:
        for index in range(3):
            log.append("decision", {"n": index})
    assert 0 == _run("audit", "verify", str(path)).exit_code
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[2])
    result = CliRunner().invoke(main, ["audit", "verify", str(path)])
    assert 1 == result.exit_code
    assert "chain broken at seq 3" in result.output


@pytest.mark.parametrize("key", ["workers", "server_threads", "max_concurrent_actions"])
def test_a_thread_count_below_one_is_refused(key: str) -> None:
    assert 2 == getattr(settings.load(None, {f"PYAGENT_{key.upper()}": "2"}, {}), key)
    with pytest.raises(ConfigError, match=f"{key}: must be at least 1"):
        settings.load(None, {f"PYAGENT_{key.upper()}": "0"}, {})


def test_serve_answers_then_stops_cleanly_on_sigterm_with_its_opa(tmp_path: Path) -> None:
    """``pyagent serve`` as a deployment runs it: its own OPA, a webhook answered, then SIGTERM
    stops it with exit 0 and takes the OPA it started down with it."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "pyagent", "serve", "--listen", f"127.0.0.1:{port}",
            "--state-dir", str(tmp_path), "--inventory", str(EXAMPLES / "inventory.yaml"),
        ],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        started = process.stderr.readline().decode()
        opa_url = started.rpartition("(OPA ")[2].rstrip(")\n")
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(url + "/healthz"), "the agent healthy")
        body = json.loads((EXAMPLES / "alerts" / "level-1-novel-pattern.json").read_text())
        response = requests.post(url + "/webhook/alertmanager", json=body, timeout=10)
        assert {"accepted": 1, "duplicates": 0} == response.json()
        process.send_signal(signal.SIGTERM)
        assert 0 == process.wait(timeout=30)
    finally:
        stop(process, timeout=10)
        if process.stderr is not None:
            process.stderr.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(opa_url + "/health", timeout=5)
    assert verify(tmp_path / "audit.jsonl").ok
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert "decision" in kinds  # the alert acknowledged before SIGTERM was decided before exit
