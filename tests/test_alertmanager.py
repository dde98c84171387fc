"""The agent behind a real Alertmanager: alerts injected through Alertmanager's API reach the
webhook the way production deliveries do (grouping, repeats, resolved notifications, bearer
token), so the agent's deduplication and authentication are checked against the real sender."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pyagent.app import Running
from pyagent.audit import verify
from pyagent.opa import EmbeddedOpa, free_port
from pyagent.settings import Settings
from tests.serving import EXAMPLES, serve

TOKEN = "am-s3cret-token"
BINARY = "prometheus-alertmanager"
DEADLINE = 30.0
OOM_LABELS = {
    "alertname": "KubePodOOMKilled",
    "namespace": "shop",
    "deployment": "checkout",
    "container": "app",
    "severity": "critical",
}


@dataclass(frozen=True)
class Served:
    """The agent's webhook on loopback, with the agent and its state directory."""

    url: str
    running: Running
    state: Path


@dataclass(frozen=True)
class Alertmanager:
    """A running Alertmanager, driven through its v2 API."""

    url: str
    log: Path

    def post(self, *alerts: dict[str, Any]) -> None:
        response = requests.post(self.url + "/api/v2/alerts", json=list(alerts), timeout=10)
        assert 200 == response.status_code, response.text

    def fingerprints(self) -> set[str]:
        """Alertmanager's own fingerprints, which the agent must key its incidents on."""
        response = requests.get(self.url + "/api/v2/alerts", timeout=10)
        response.raise_for_status()
        return {alert["fingerprint"] for alert in response.json()}

    def counter(self, name: str, **labels: str) -> float:
        return _counter(self.url, name, labels)


StartAlertmanager = Callable[[str], Alertmanager]


def _binary() -> str:
    """The Debian package's binary; missing means the machine was not set up, which is a failure."""
    found = shutil.which(BINARY) or shutil.which(BINARY, path="/usr/bin")
    if found is None:
        pytest.fail(f"{BINARY} is not installed: `make setup` installs the prometheus-alertmanager package")
    return found


def _config(webhook_url: str, credentials: str) -> dict[str, Any]:
    """Short group timers so a repeat comes within seconds; Alertmanager only re-sends on a
    group_interval tick once repeat_interval has passed since the last successful notification."""
    return {
        "route": {
            "receiver": "pyagent",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "2s",
        },
        "receivers": [
            {
                "name": "pyagent",
                "webhook_configs": [
                    {
                        "url": webhook_url,
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials": credentials}},
                    }
                ],
            }
        ],
    }


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _ready(url: str) -> bool:
    try:
        return requests.get(url + "/-/ready", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def _came_up(url: str, process: subprocess.Popen[bytes]) -> bool:
    """Whether Alertmanager answers ready; False once it has exited (say, its port was taken)."""
    deadline = time.monotonic() + DEADLINE
    while process.poll() is None and time.monotonic() < deadline:
        if _ready(url):
            return True
        time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def _alertmanager(workdir: Path, webhook_url: str, credentials: str) -> Iterator[Alertmanager]:
    """Alertmanager on a free loopback port with clustering off (an empty cluster address), so
    it neither gossips nor waits for peers to settle before notifying."""
    workdir.mkdir()
    config = workdir / "alertmanager.yml"
    config.write_text(yaml.safe_dump(_config(webhook_url, credentials)))
    log = workdir / "alertmanager.log"
    for _attempt in range(3):  # another process may take the free port before Alertmanager binds it
        url = f"http://127.0.0.1:{free_port()}"
        command = [
            _binary(),
            f"--config.file={config}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
            "--cluster.listen-address=",
        ]
        with log.open("ab") as sink:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
        try:
            if _came_up(url, process):
                yield Alertmanager(url, log)
                return
        finally:
            _stop(process)
    pytest.fail(f"Alertmanager did not start; its log:\n{log.read_text()}")


@pytest.fixture
def served(tmp_path: Path, opa_server: EmbeddedOpa) -> Iterator[Served]:
    settings = Settings(
        state_dir=tmp_path / "agent",
        opa_url=opa_server.url,
        inventory=EXAMPLES / "inventory.yaml",
        webhook_token=TOKEN,
    )
    with serve(settings) as (url, running):
        yield Served(url, running, settings.state_dir)


@pytest.fixture
def start_alertmanager(tmp_path: Path, served: Served) -> Iterator[StartAlertmanager]:
    """Starts Alertmanagers that send to ``served`` with the credentials given. Their logs are
    printed at teardown, which pytest shows only when the test failed."""
    started: list[Alertmanager] = []
    with ExitStack() as stack:

        def start(credentials: str) -> Alertmanager:
            workdir = tmp_path / f"alertmanager-{len(started)}"
            manager = stack.enter_context(
                _alertmanager(workdir, served.url + "/webhook/alertmanager", credentials)
            )
            started.append(manager)
            return manager

        yield start
    for manager in started:
        print(f"--- {manager.log}\n{manager.log.read_text()}")


def _counter(base_url: str, name: str, labels: dict[str, str]) -> float:
    """A counter's value from a ``/metrics`` page, 0 while it has no sample with those labels."""
    text = requests.get(base_url + "/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def _oom_alert(starts_at: datetime, ends_at: datetime | None = None) -> dict[str, Any]:
    """The OOM alert as a rule would post it. Tests start it a minute back: Alertmanager skips
    group_wait for a new group whose alert started longer ago than that, so the first
    notification goes out at once. Without ``ends_at`` it fires until resolve_timeout (5m)."""
    alert: dict[str, Any] = {
        "labels": OOM_LABELS,
        "annotations": {"summary": "checkout's app container was OOM-killed"},
        "startsAt": starts_at.isoformat(timespec="seconds"),
        "generatorURL": "http://prometheus.example/graph?g0.expr=kube_pod_oom",
    }
    if ends_at is not None:
        alert["endsAt"] = ends_at.isoformat(timespec="seconds")
    return alert


def _records(state: Path, kind: str) -> list[dict[str, Any]]:
    path = state / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


def _settled(served: Served, table: str, at_least: int) -> None:
    """Wait for ``at_least`` rows in a store table, then for the workers to finish with them,
    so the audit log is complete before it is read."""
    store = served.running.agent.store
    _wait_until(lambda: store.counts()[table] >= at_least, f"{at_least} row(s) in {table}")
    assert served.running.agent.drain(DEADLINE)


def _first_decision(served: Served, manager: Alertmanager) -> dict[str, Any]:
    """Inject the OOM alert and return the one decision its first notification led to."""
    manager.post(_oom_alert(datetime.now(UTC) - timedelta(minutes=1)))
    _settled(served, "decisions", 1)
    [decision] = _records(served.state, "decision")
    return decision


def test_firing_alert_is_delivered_and_decided(served: Served, start_alertmanager: StartAlertmanager) -> None:
    manager = start_alertmanager(TOKEN)
    decision = _first_decision(served, manager)
    assert {decision["fingerprint"]} == manager.fingerprints()
    assert "KubePodOOMKilled" == decision["alert_name"]
    # no history yet: the first occurrence of a known pattern needs approval
    assert 2 == decision["level"]
    assert "early_occurrence" in {trigger["id"] for trigger in decision["triggers"]}
    assert decision["fallback"] is None
    assert verify(served.state / "audit.jsonl").ok


def test_resolved_notification_closes_the_incident(
    served: Served, start_alertmanager: StartAlertmanager
) -> None:
    manager = start_alertmanager(TOKEN)
    starts_at = datetime.now(UTC) - timedelta(minutes=1)
    manager.post(_oom_alert(starts_at))
    _settled(served, "decisions", 1)
    manager.post(_oom_alert(starts_at, ends_at=datetime.now(UTC) - timedelta(seconds=1)))
    # the alert row is visible a moment before intake queues it, so wait for its processing
    _wait_until(lambda: bool(_records(served.state, "resolved")), "the resolved notice to be processed")
    [decision] = _records(served.state, "decision")
    [resolved] = _records(served.state, "resolved")
    assert decision["fingerprint"] == resolved["fingerprint"]
    assert ["firing", "resolved"] == [r["status"] for r in _records(served.state, "intake")]


def test_repeated_notification_is_acknowledged_as_a_duplicate(
    served: Served, start_alertmanager: StartAlertmanager
) -> None:
    manager = start_alertmanager(TOKEN)
    _first_decision(served, manager)
    _wait_until(
        lambda: _counter(served.url, "pyagent_webhook_requests_total", {"status": "200"}) >= 2,
        "Alertmanager to repeat the notification",
    )
    assert served.running.agent.drain(DEADLINE)
    counts = served.running.agent.store.counts()
    assert (1, 1, 1, 1) == (counts["deliveries"], counts["alerts"], counts["incidents"], counts["decisions"])
    assert 1 == len(_records(served.state, "decision"))
    assert 1 == len(_records(served.state, "intake"))


def test_alertmanager_with_a_wrong_token_is_refused_and_nothing_is_recorded(
    served: Served, start_alertmanager: StartAlertmanager
) -> None:
    manager = start_alertmanager("not-the-token")
    manager.post(_oom_alert(datetime.now(UTC) - timedelta(minutes=1)))
    _wait_until(
        lambda: manager.counter("alertmanager_notifications_failed_total", integration="webhook") >= 1,
        "Alertmanager to count a failed notification",
    )
    assert 1 <= _counter(served.url, "pyagent_webhook_requests_total", {"status": "401"})
    assert 0 == _counter(served.url, "pyagent_webhook_requests_total", {"status": "200"})
    assert served.running.agent.drain(DEADLINE)
    assert not any(served.running.agent.store.counts().values())
    assert [] == _records(served.state, "intake")
