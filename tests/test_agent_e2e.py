"""The agent end to end: webhook in through waitress, real OPA, audit log out."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from waitress.server import create_server

from pyagent.app import Running, running_agent
from pyagent.audit import verify
from pyagent.opa import EmbeddedOpa
from pyagent.server import WebhookApp
from pyagent.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token"


@pytest.fixture
def served(tmp_path: Path, opa_server: EmbeddedOpa) -> Iterator[tuple[str, Running, Path]]:
    settings = Settings(
        state_dir=tmp_path,
        opa_url=opa_server.url,
        inventory=ROOT / "examples" / "inventory.yaml",
        webhook_token=TOKEN,
        max_body_bytes=64 * 1024,
    )
    with running_agent(settings) as running:
        app = WebhookApp(running.agent, settings.webhook_token, settings.max_body_bytes)
        server = create_server(app, host="127.0.0.1", port=0, threads=4)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.effective_port}", running, tmp_path  # type: ignore[union-attr]
        server.close()


def _payload() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (ROOT / "examples" / "alerts" / "level-4-oom-restart.json").read_text()
    )
    return loaded


def _post(url: str, body: object, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(url + "/webhook/alertmanager", json=body, headers=headers, timeout=10)


def _records(state: Path, kind: str) -> list[dict[str, Any]]:
    lines = (state / "audit.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_alert_is_decided_and_audited(served: tuple[str, Running, Path]) -> None:
    url, running, state = served
    response = _post(url, _payload())
    assert 200 == response.status_code
    assert {"accepted": 1, "duplicates": 0} == response.json()
    assert running.agent.drain(30)
    [decision] = _records(state, "decision")
    # no history yet: the first occurrence of a known pattern needs approval
    assert 2 == decision["level"]
    assert "early_occurrence" in {t["id"] for t in decision["triggers"]}
    steps = [r["step"] for r in _records(state, "action_step")]
    assert ["approval_requested"] == steps
    assert verify(state / "audit.jsonl").ok


def test_request_without_token_is_refused_and_not_recorded(served: tuple[str, Running, Path]) -> None:
    url, running, _ = served
    assert 401 == _post(url, _payload(), token=None).status_code
    assert 401 == _post(url, _payload(), token="wrong").status_code
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
    response = _post(url, body)
    assert 400 == response.status_code
    assert "alerts[0].labels.alertname" == response.json()["path"]


def test_body_over_the_limit_is_413(served: tuple[str, Running, Path]) -> None:
    url, _, _ = served
    body = _payload()
    body["commonAnnotations"]["description"] = "x" * (70 * 1024)
    assert 413 == _post(url, body).status_code
    assert 200 == requests.get(url + "/healthz", timeout=10).status_code


def test_five_concurrent_deliveries_make_one_incident_and_one_decision(
    served: tuple[str, Running, Path],
) -> None:
    url, running, state = served
    with ThreadPoolExecutor(5) as pool:
        codes = list(pool.map(lambda _: _post(url, _payload()).status_code, range(5)))
    assert [200] * 5 == codes
    assert running.agent.drain(30)
    counts = running.agent.store.counts()
    assert (1, 1) == (counts["incidents"], counts["decisions"])
    assert 1 == len(_records(state, "decision"))


def test_resolved_alert_closes_the_incident_without_action(served: tuple[str, Running, Path]) -> None:
    url, running, state = served
    _post(url, _payload())
    resolved = _payload()
    resolved["status"] = "resolved"
    resolved["alerts"][0]["status"] = "resolved"
    resolved["alerts"][0]["endsAt"] = "2026-11-26T12:10:00Z"
    assert 200 == _post(url, resolved).status_code
    assert running.agent.drain(30)
    assert 1 == len(_records(state, "resolved"))
    assert 1 == len(_records(state, "decision"))


def test_metrics_count_requests_and_decisions(served: tuple[str, Running, Path]) -> None:
    url, running, _ = served
    _post(url, _payload())
    assert running.agent.drain(30)
    text = requests.get(url + "/metrics", timeout=10).text
    assert 'pyagent_webhook_requests_total{status="200"} 1.0' in text
    assert 'pyagent_decisions_total{level="2"} 1.0' in text


def test_killed_opa_never_produces_an_action(tmp_path: Path) -> None:
    """With OPA dead, the alert is recorded at level 1 with policy_engine_unavailable."""
    from pyagent.opa import default_policy_dir  # noqa: PLC0415

    with EmbeddedOpa(default_policy_dir()) as opa:
        settings = Settings(
            state_dir=tmp_path, opa_url=opa.url, inventory=ROOT / "examples" / "inventory.yaml"
        )
        with running_agent(settings) as running:
            opa.kill()
            app_delivery = json.dumps(_payload()).encode()
            from pyagent.alerts import parse_webhook  # noqa: PLC0415

            running.agent.intake(parse_webhook(app_delivery))
            assert running.agent.drain(30)
    [decision] = _records(tmp_path, "decision")
    assert 1 == decision["level"]
    assert "policy_engine_unavailable" == decision["fallback"]
    assert ["context_posted"] == [r["step"] for r in _records(tmp_path, "action_step")]


def test_recorded_but_undecided_alerts_are_decided_after_a_restart(
    tmp_path: Path, opa_server: EmbeddedOpa
) -> None:
    from pyagent.alerts import parse_webhook  # noqa: PLC0415
    from pyagent.store import Store  # noqa: PLC0415

    store = Store(tmp_path / "agent.db")  # intake happened; the agent died before deciding
    store.record_delivery(parse_webhook(json.dumps(_payload()).encode()))
    store.close()
    settings = Settings(
        state_dir=tmp_path, opa_url=opa_server.url, inventory=ROOT / "examples" / "inventory.yaml"
    )
    with running_agent(settings) as running:
        assert running.agent.drain(30)
        assert 1 == running.agent.store.counts()["decisions"]
    assert 1 == len(_records(tmp_path, "decision"))
