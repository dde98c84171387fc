"""The agent end to end: webhook in through uvicorn, real OPA, audit log out."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from pyagent.alerts import parse_webhook
from pyagent.app import Running, running_agent
from pyagent.audit import verify
from pyagent.opa import EmbeddedOpa
from pyagent.settings import Settings
from tests.serving import (
    EXAMPLES,
    example,
    post,
    record_decided_without_acting,
    record_without_deciding,
    records,
    serve,
)

TOKEN = "s3cret-token"


@pytest.fixture
def served(tmp_path: Path, opa_server: EmbeddedOpa) -> Iterator[tuple[str, Running, Path]]:
    settings = Settings(
        state_dir=tmp_path,
        opa_url=opa_server.url,
        inventory=EXAMPLES / "inventory.yaml",
        webhook_token=TOKEN,
        max_body_bytes=64 * 1024,
    )
    with serve(settings) as (url, running):
        yield url, running, tmp_path


def _payload() -> dict[str, Any]:
    return example("level-4-oom-restart")


def test_alert_is_decided_and_audited(served: tuple[str, Running, Path]) -> None:
    url, running, state = served
    response = post(url, _payload(), TOKEN)
    assert 200 == response.status_code
    assert {"accepted": 1, "duplicates": 0} == response.json()
    assert running.agent.drain(30)
    [decision] = records(state, "decision")
    # no history yet: the first occurrence of a known pattern needs approval
    assert 2 == decision["level"]
    assert "early_occurrence" in {t["id"] for t in decision["triggers"]}
    steps = [r["step"] for r in records(state, "action_step")]
    assert ["approval_requested"] == steps
    assert verify(state / "audit.jsonl").ok


def test_request_without_token_is_refused_and_not_recorded(served: tuple[str, Running, Path]) -> None:
    url, running, _ = served
    assert 401 == post(url, _payload(), None).status_code
    assert 401 == post(url, _payload(), "wrong").status_code
    assert 0 == running.agent.store.counts()["alerts"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"not json", "$"),
        (b"[1, 2]", "$"),
        (b'{"version": "4"}', "$"),
    ],
)
def test_bad_input_is_400_naming_the_path(served: tuple[str, Running, Path], body: bytes, path: str) -> None:
    url, _, _ = served
    response = requests.post(
        url + "/webhook/alertmanager",
        data=body,
        timeout=10,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert 400 == response.status_code
    assert path == response.json()["path"]


def test_schema_problem_names_the_alert_field(served: tuple[str, Running, Path]) -> None:
    url, _, _ = served
    body = _payload()
    body["alerts"][0]["labels"] = {"alertname": 5}
    response = post(url, body, TOKEN)
    assert 400 == response.status_code
    assert "alerts[0].labels.alertname" == response.json()["path"]


def test_body_over_the_limit_is_413(served: tuple[str, Running, Path]) -> None:
    url, _, _ = served
    body = _payload()
    body["commonAnnotations"]["description"] = "x" * (70 * 1024)
    assert 413 == post(url, body, TOKEN).status_code
    assert 200 == requests.get(url + "/healthz", timeout=10).status_code


def test_five_concurrent_deliveries_make_one_incident_and_one_decision(
    served: tuple[str, Running, Path],
) -> None:
    url, running, state = served
    with ThreadPoolExecutor(5) as pool:
        codes = list(pool.map(lambda _: post(url, _payload(), TOKEN).status_code, range(5)))
    assert [200] * 5 == codes
    assert running.agent.drain(30)
    counts = running.agent.store.counts()
    assert (1, 1) == (counts["incidents"], counts["decisions"])
    assert 1 == len(records(state, "decision"))


def test_resolved_alert_closes_the_incident_without_action(served: tuple[str, Running, Path]) -> None:
    url, running, state = served
    post(url, _payload(), TOKEN)
    assert running.agent.drain(30)  # decided first; a resolved notice seen before it skips the decision
    resolved = _payload()
    resolved["status"] = "resolved"
    resolved["alerts"][0]["status"] = "resolved"
    resolved["alerts"][0]["endsAt"] = "2026-11-26T12:10:00Z"
    assert 200 == post(url, resolved, TOKEN).status_code
    assert running.agent.drain(30)
    assert 1 == len(records(state, "resolved"))
    assert 1 == len(records(state, "decision"))


def test_metrics_count_requests_and_decisions(served: tuple[str, Running, Path]) -> None:
    url, running, _ = served
    post(url, _payload(), TOKEN)
    assert running.agent.drain(30)
    text = requests.get(url + "/metrics", timeout=10).text
    assert 'pyagent_webhook_requests_total{status="200"} 1.0' in text
    assert 'pyagent_decisions_total{level="2"} 1.0' in text
    assert "pyagent_decision_seconds_count 1.0" in text
    assert "pyagent_alerts_waiting 0.0" in text


def test_recorded_but_undecided_alerts_are_decided_after_a_restart(
    tmp_path: Path, opa_server: EmbeddedOpa
) -> None:
    record_without_deciding(tmp_path, _payload())  # intake happened; the agent died before deciding
    settings = Settings(state_dir=tmp_path, opa_url=opa_server.url, inventory=EXAMPLES / "inventory.yaml")
    with running_agent(settings) as running:
        assert running.agent.drain(30)
        drained = time.time()
        assert 1 == running.agent.store.counts()["decisions"]
        latency = running.agent.metrics.registry.get_sample_value("pyagent_decision_seconds_sum")
    [decision] = records(tmp_path, "decision")
    [intake] = records(tmp_path, "intake")
    # the latency counts from intake, before the restart, to the decision audited
    assert latency is not None
    decided = datetime.fromisoformat(decision["ts"]).timestamp()
    received = datetime.fromisoformat(intake["received_at"]).timestamp()
    assert decided <= received + latency <= drained


def test_a_decision_never_carried_out_is_dropped_and_decided_again_after_a_restart(
    tmp_path: Path, opa_server: EmbeddedOpa
) -> None:
    """The agent stopped between committing a decision and its first durable step: nothing
    was done for the alert, so it is decided again, and the audit says what was dropped."""
    [dropped] = record_decided_without_acting(tmp_path, _payload())
    settings = Settings(state_dir=tmp_path, opa_url=opa_server.url, inventory=EXAMPLES / "inventory.yaml")
    with running_agent(settings) as running:
        assert running.agent.drain(30)
        left = running.agent.store.not_carried_out()
        counts = running.agent.store.counts()
    [abandoned] = records(tmp_path, "decision_abandoned")
    [decision] = records(tmp_path, "decision")
    [outcome] = records(tmp_path, "outcome")
    assert dropped == abandoned["decision_id"]
    assert abandoned["seq"] < decision["seq"]
    assert dropped != decision["decision_id"]
    assert (decision["decision_id"], "approval_requested") == (outcome["decision_id"], outcome["outcome"])
    assert [] == left
    assert 1 == counts["decisions"]
    assert verify(tmp_path / "audit.jsonl").ok


@pytest.mark.parametrize(
    "name", ["level-0-ai-opted-out", "level-1-novel-pattern", "level-2-first-occurrence", "level-3-rollback"]
)
def test_a_decision_carried_out_is_not_decided_again_after_a_restart(
    tmp_path: Path, opa_server: EmbeddedOpa, name: str
) -> None:
    settings = Settings(state_dir=tmp_path, opa_url=opa_server.url, inventory=EXAMPLES / "inventory.yaml")
    with running_agent(settings) as running:
        running.agent.intake(parse_webhook(json.dumps(example(name)).encode()))
        assert running.agent.drain(30)
    with running_agent(settings) as running:
        assert running.agent.drain(30)
        counts = running.agent.store.counts()
    assert 1 == counts["decisions"]
    assert 1 == len(records(tmp_path, "decision"))
    assert [] == records(tmp_path, "decision_abandoned")


def test_alert_resolved_before_it_is_decided_is_not_acted_on(tmp_path: Path, opa_server: EmbeddedOpa) -> None:
    """Workers may take a group's resolved notification before its firing one."""
    resolved = _payload()
    resolved["status"] = resolved["alerts"][0]["status"] = "resolved"
    resolved["alerts"][0]["endsAt"] = "2026-11-26T12:10:00Z"
    record_without_deciding(tmp_path, _payload(), resolved)  # the agent stopped before deciding either
    settings = Settings(state_dir=tmp_path, opa_url=opa_server.url, inventory=EXAMPLES / "inventory.yaml")
    with running_agent(settings) as running:
        assert running.agent.drain(30)
        assert 0 == running.agent.store.counts()["decisions"]
    assert 1 == len(records(tmp_path, "skipped"))
    assert [] == records(tmp_path, "action_step")
