"""An idle agent asks OPA about an alert while intake commits it, and decides it only once the
commit is durable and the alert is new.

The store's commit is held up the way a second writer holds it: another connection to the
same SQLite file holding its write lock.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from pyagent.alerts import Delivery, parse_webhook
from pyagent.app import Running, running_agent
from pyagent.errors import StoreUnavailable
from pyagent.opa import EmbeddedOpa
from pyagent.settings import Settings
from tests.execution_kit import wait_for
from tests.serving import EXAMPLES, example, records

# shorter than the store waits for a lock (5 s), so the commit is still held when OPA is asked
ASKED_WITHIN = 4.0


def _delivery(serial: int) -> Delivery:
    body = copy.deepcopy(example("level-2-first-occurrence"))
    body["alerts"][0]["fingerprint"] = f"{serial:016x}"
    return parse_webhook(json.dumps(body).encode())


@pytest.fixture
def running(tmp_path: Path, opa_server: EmbeddedOpa) -> Iterator[Running]:
    settings = Settings(state_dir=tmp_path, opa_url=opa_server.url, inventory=EXAMPLES / "inventory.yaml")
    with running_agent(settings) as agent:
        yield agent


def _metric(running: Running, name: str, **labels: str) -> float:
    return running.agent.metrics.registry.get_sample_value(name, labels) or 0.0


def _asked(running: Running) -> float:
    """Policy inputs the agent has sent to OPA."""
    return _metric(running, "pyagent_opa_batch_alerts_sum")


def _decisions(running: Running) -> float:
    return sum(_metric(running, "pyagent_decisions_total", level=str(level)) for level in range(5))


def _decision_records(state: Path) -> list[dict[str, Any]]:
    return records(state, "decision") if (state / "audit.jsonl").exists() else []


def _hold_writes(state: Path) -> sqlite3.Connection:
    """Another writer of the agent's store, holding its write lock until it is closed."""
    writer = sqlite3.connect(state / "agent.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    return writer


def test_an_alert_is_asked_about_while_its_commit_waits_and_decided_once_durable(
    running: Running, tmp_path: Path
) -> None:
    with ThreadPoolExecutor(1) as intake:
        with closing(_hold_writes(tmp_path)):
            accepted = intake.submit(running.agent.intake, _delivery(1))
            wait_for(lambda: _asked(running) == 1, "OPA asked", timeout=ASKED_WITHIN)
            assert not accepted.done()  # the webhook would not have answered yet
            assert [] == _decision_records(tmp_path)
            assert 0 == _decisions(running)
            assert 1 == _metric(running, "pyagent_alerts_waiting")
        assert (1, 0) == accepted.result(timeout=30)
    assert running.agent.drain(30)
    assert 0 == _metric(running, "pyagent_alerts_waiting")
    assert 1 == _metric(running, "pyagent_decision_seconds_count")
    [decision] = _decision_records(tmp_path)
    assert 2 == decision["level"]
    [intake_record] = records(tmp_path, "intake")
    assert intake_record["alert_id"] == decision["alert_id"]
    assert ["approval_requested"] == [r["step"] for r in records(tmp_path, "action_step")]


def test_an_alert_whose_commit_fails_is_never_decided(running: Running, tmp_path: Path) -> None:
    # the lock is held for longer than the store waits for it
    with ThreadPoolExecutor(1) as intake, closing(_hold_writes(tmp_path)):
        accepted = intake.submit(running.agent.intake, _delivery(1))
        wait_for(lambda: _asked(running) == 1, "OPA asked", timeout=ASKED_WITHIN)
        with pytest.raises(StoreUnavailable):  # the webhook answers 503: Alertmanager retries
            accepted.result(timeout=30)
    assert running.agent.drain(30)
    assert [] == _decision_records(tmp_path)
    assert 0 == _decisions(running)
    assert 0 == running.agent.store.counts()["alerts"]
    # the retry is recorded and decided
    assert (1, 0) == running.agent.intake(_delivery(1))
    assert running.agent.drain(30)
    assert 1 == len(_decision_records(tmp_path))
    assert 1 == _decisions(running)


def test_a_redelivery_to_an_idle_agent_is_asked_about_but_not_decided_again(
    running: Running, tmp_path: Path
) -> None:
    assert (1, 0) == running.agent.intake(_delivery(1))
    assert running.agent.drain(30)
    assert (0, 1) == running.agent.intake(_delivery(1))
    assert running.agent.drain(30)
    assert 2 == _asked(running)  # the re-delivery went to OPA while its commit found it known
    assert 1 == _decisions(running)
    assert 1 == len(_decision_records(tmp_path))
    assert 1 == running.agent.store.counts()["decisions"]
    assert 1 == len(records(tmp_path, "intake"))
