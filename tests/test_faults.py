"""Faults: whatever breaks, the agent records the alert, acts at level <= 1, and says why."""

from __future__ import annotations

import copy
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from pyagent.opa import EmbeddedOpa, default_policy_dir, free_port
from pyagent.settings import Settings
from pyagent.sources import history_import
from pyagent.sources.history_sqlite import HistorySQLite
from tests.serving import EXAMPLES, example, post, records, serve

INVENTORY = EXAMPLES / "inventory.yaml"


def _oom(serial: int) -> dict[str, Any]:
    """The level-4 example alert, made a distinct alert by its fingerprint and pod."""
    body = copy.deepcopy(example("level-4-oom-restart"))
    alert = body["alerts"][0]
    alert["fingerprint"] = f"{serial:016x}"
    alert["labels"]["pod"] = f"checkout-{serial}"
    return body


def _seed_history(state: Path) -> None:
    """The example history, so the OOM alert is level 4 while OPA answers."""
    state.mkdir(parents=True, exist_ok=True)
    history_import.import_incidents(
        HistorySQLite(state / "history.db"), history_import.load(EXAMPLES / "history.yaml")
    )


def _steps(state: Path, decision_id: str) -> list[str]:
    return [r["step"] for r in records(state, "action_step") if r["decision_id"] == decision_id]


def _policy_dir(tmp_path: Path, rego: str) -> Path:
    """A policy directory with one module: a misconfigured deployment of the sidecar."""
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "broken.rego").write_text(rego)
    return policy


def test_opa_killed_mid_run_never_produces_an_action(tmp_path: Path) -> None:
    _seed_history(tmp_path)
    with EmbeddedOpa(default_policy_dir()) as opa:
        settings = Settings(state_dir=tmp_path, opa_url=opa.url, inventory=INVENTORY)
        with serve(settings) as (url, running):
            assert 200 == post(url, _oom(1)).status_code
            assert running.agent.drain(30)
            opa.kill()
            for serial in range(2, 7):
                assert 200 == post(url, _oom(serial)).status_code
            assert running.agent.drain(30)
            health = requests.get(url + "/healthz", timeout=10)
    before, *after = records(tmp_path, "decision")
    assert 4 == before["level"]
    assert "execute" in _steps(tmp_path, before["decision_id"])
    assert 5 == len(after)
    for decision in after:
        assert 1 == decision["level"]
        assert "policy_engine_unavailable" == decision["fallback"]
        assert ["context_posted"] == _steps(tmp_path, decision["decision_id"])
    assert 503 == health.status_code
    assert {"opa": False, "store": True} == health.json()["checks"]


@pytest.mark.parametrize(
    ("rego", "fallback"),
    [
        # the decision rule is missing: OPA answers 200 with {} (no result)
        ('package escalation\n\nversion := "1.4"\n', "policy_undefined"),
        # the decision does not follow the contract
        ('package escalation\n\ndecision := {"level": 7}\n', "policy_invalid"),
    ],
)
def test_opa_without_a_valid_decision_gives_level_1(tmp_path: Path, rego: str, fallback: str) -> None:
    _seed_history(tmp_path / "state")
    with EmbeddedOpa(_policy_dir(tmp_path, rego)) as opa:
        settings = Settings(state_dir=tmp_path / "state", opa_url=opa.url, inventory=INVENTORY)
        with serve(settings) as (url, running):
            assert 200 == post(url, _oom(1)).status_code
            assert running.agent.drain(30)
    [decision] = records(tmp_path / "state", "decision")
    assert 1 == decision["level"]
    assert fallback == decision["fallback"]
    assert [fallback] == [t["id"] for t in decision["triggers"]]
    assert ["context_posted"] == _steps(tmp_path / "state", decision["decision_id"])


def test_opa_unreachable_at_start_records_alerts_at_level_1(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, opa_url=f"http://127.0.0.1:{free_port()}", inventory=INVENTORY)
    with serve(settings) as (url, running):
        health = requests.get(url + "/healthz", timeout=10)
        assert 200 == post(url, _oom(1)).status_code
        assert running.agent.drain(30)
    assert 503 == health.status_code
    [decision] = records(tmp_path, "decision")
    assert (1, "policy_engine_unavailable") == (decision["level"], decision["fallback"])


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, so the test can fill the disk under the agent's store."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"mounting a tmpfs needs root (CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)  # noqa: S607


def _fill(disk: Path) -> Path:
    """Write zeros to a file on ``disk`` until no space is left; returns the file."""
    filler = disk / "filler"
    chunk = b"\0" * 4096
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(descriptor, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return filler
    finally:
        os.close(descriptor)


def test_store_that_cannot_write_answers_503_and_recovers(small_disk: Path) -> None:
    with EmbeddedOpa(default_policy_dir()) as opa:
        settings = Settings(state_dir=small_disk / "state", opa_url=opa.url, inventory=INVENTORY)
        with serve(settings) as (url, running):
            assert 200 == post(url, _oom(1)).status_code
            assert running.agent.drain(30)
            filler = _fill(small_disk)
            refused = post(url, _oom(2))
            counted = running.agent.store.counts()
            filler.unlink()
            retried = post(url, _oom(2))  # Alertmanager retries a 5xx
            assert running.agent.drain(30)
    assert 503 == refused.status_code
    assert "retry" in refused.json()["error"]
    assert 1 == counted["alerts"]
    assert {"accepted": 1, "duplicates": 0} == retried.json()
    assert 2 == len(records(small_disk / "state", "decision"))
