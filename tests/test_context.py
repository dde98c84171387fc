"""``gather()`` against real sources in ``tmp_path``: the policy input document and its health."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pyagent.alerts import Alert
from pyagent.context import Context, Sources, gather, gather_many
from pyagent.contract import validate
from pyagent.sources import Diagnoser, Diagnosis, InventoryFacts, InventorySource
from pyagent.sources.catalog import ActionCatalog, CatalogDiagnoser
from pyagent.sources.guardrails import FileGuardrails
from pyagent.sources.history_sqlite import HistorySQLite, OutcomeKind
from pyagent.sources.inventory_file import InventoryFile
from tests.builders import firing_alert

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ActionCatalog.load(ROOT / "rego" / "escalation" / "policy.json")
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

INVENTORY = """
environment: production
services:
  - name: checkout
    namespace: shop
    traffic_fraction: 0.05
    error_budget_remaining: 0.8
    deployments:
      - {name: checkout, replicas: 5, stateless: true}
  - name: docs
    namespace: web
    environment: staging
    error_budget_remaining: 0.9
    deployments:
      - {name: docs, replicas: 2, stateless: true}
"""

OOM_LABELS = {
    "alertname": "KubePodOOMKilled",
    "severity": "critical",
    "namespace": "shop",
    "deployment": "checkout",
    "container": "app",
}


def alert(labels: dict[str, str], annotations: dict[str, str] | None = None) -> Alert:
    return firing_alert(labels, annotations)


def remediate(history: HistorySQLite, pattern: str, outcome: OutcomeKind, at: datetime) -> None:
    incident = history.record_incident("c7f3a1b2d4e5f601", pattern, "SomeAlert", at)
    action = history.record_action(incident, "rolling_restart", 4, executed_at=at)
    history.record_outcome(action, outcome, at)


@pytest.fixture
def history(tmp_path: Path) -> HistorySQLite:
    """12 prior OOM incidents, all restarted successfully; 1 false positive in 20 outcomes this week."""
    db = HistorySQLite(tmp_path / "history.db")
    for i in range(1, 13):
        remediate(db, "oom-memory-leak", "success", NOW - timedelta(hours=6 * i))
    for day in range(1, 8):
        remediate(db, "process-deadlock", "success", NOW - timedelta(days=day, hours=-1))
    remediate(db, "log-pipeline-stalled", "false_positive", NOW - timedelta(days=2))
    return db


@pytest.fixture
def inventory(tmp_path: Path) -> InventoryFile:
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY)
    return InventoryFile(path)


def run(
    tmp_path: Path,
    subject: Alert,
    inventory: InventorySource,
    history: HistorySQLite,
    diagnoser: Diagnoser | None = None,
) -> tuple[Context, dict[str, Any]]:
    """Gather for ``subject`` and return the context with its validated policy input."""
    guardrails = FileGuardrails(tmp_path / "kill-switch", history.count_autonomous_actions, 3600)
    sources = Sources(inventory, history, diagnoser or CatalogDiagnoser(), guardrails, CATALOG)
    context = gather(subject, NOW, sources)
    document = context.policy_input()
    validate("input", document)
    return context, document


class UnreachableInventory:
    """An inventory whose backend is down: every lookup raises."""

    def lookup(self, alert: Alert) -> InventoryFacts:
        raise ConnectionError(f"inventory API refused {alert.name}")


class CrashingDiagnoser:
    """A diagnoser with a bug: every call raises."""

    def diagnose(self, alert: Alert) -> Diagnosis:
        raise KeyError(alert.name)


def test_gather_reproduces_the_design_example(
    tmp_path: Path, inventory: InventoryFile, history: HistorySQLite, example_input: dict[str, Any]
) -> None:
    """DESIGN.md's example, from an equivalent inventory and history, label for label except alert labels."""
    context, document = run(tmp_path, alert(OOM_LABELS, {"ai_confidence": "0.91"}), inventory, history)
    expected = {**example_input, "alert": {**example_input["alert"], "labels": OOM_LABELS}}
    assert expected == document
    assert context.problems == ()
    assert context.health_ceiling == 4


def test_gather_with_every_source_broken_is_schema_valid_and_ceiling_1(tmp_path: Path) -> None:
    corrupt = tmp_path / "history.db"
    corrupt.write_bytes(b"this is not a database, " * 100)
    history = HistorySQLite(corrupt)
    context, document = run(tmp_path, alert(OOM_LABELS), InventoryFile(tmp_path / "absent.yaml"), history)
    assert context.health_ceiling == 1
    assert [p.split(":")[0] for p in context.problems] == ["history", "inventory", "guardrails", "novelty"]
    assert document["blast_radius"]["replica_fraction"] == 1.0
    assert document["regulatory"] == {"regulated": True, "frameworks": ["unknown"]}
    assert document["guardrails"]["kill_switch"] is True
    assert document["pattern"]["consistent_outcomes"] is False
    assert document["ai"]["false_positive_rate_7d"] == 1.0


def test_gather_turns_a_raising_inventory_into_its_worst_case(tmp_path: Path, history: HistorySQLite) -> None:
    context, document = run(tmp_path, alert(OOM_LABELS), UnreachableInventory(), history)
    assert context.problems == ("inventory: ConnectionError: inventory API refused KubePodOOMKilled",)
    assert context.health_ceiling == 1
    assert document["blast_radius"]["shared_infrastructure"] is True
    assert document["action"]["target"]["name"] == "checkout"
    assert document["action"]["production_impact"] is True


def test_gather_turns_a_raising_diagnoser_into_ai_unavailable(
    tmp_path: Path, inventory: InventoryFile, history: HistorySQLite
) -> None:
    context, document = run(tmp_path, alert(OOM_LABELS), inventory, history, CrashingDiagnoser())
    assert document["ai"]["available"] is False
    assert document["ai"]["confidence"] == 0.0
    assert document["action"]["type"] == "no_action"
    assert context.problems[0].startswith("diagnosis: KeyError")
    assert context.health_ceiling == 1


def test_gather_novel_alert_proposes_an_uncatalogued_action(
    tmp_path: Path, inventory: InventoryFile, history: HistorySQLite
) -> None:
    labels = {
        "alertname": "DiskFullOnMoon",
        "severity": "critical",
        "namespace": "shop",
        "deployment": "checkout",
    }
    _, document = run(tmp_path, alert(labels), inventory, history)
    assert document["pattern"] == {
        "id": "novel:DiskFullOnMoon",
        "known": False,
        "occurrences": 0,
        "consistent_outcomes": True,
        "last_suboptimal_at": None,
    }
    action = document["action"]
    assert (action["type"], action["idempotent"], action["reversible"]) == ("no_action", False, False)
    assert action["rollback_seconds"] == 3600


def test_gather_novel_alert_seen_in_history_is_known(
    tmp_path: Path, inventory: InventoryFile, history: HistorySQLite
) -> None:
    history.record_incident(
        "c7f3a1b2d4e5f601", "novel:DiskFullOnMoon", "DiskFullOnMoon", NOW - timedelta(days=1)
    )
    labels = {"alertname": "DiskFullOnMoon", "namespace": "shop", "deployment": "checkout"}
    _, document = run(tmp_path, alert(labels), inventory, history)
    assert (document["pattern"]["known"], document["pattern"]["occurrences"]) == (True, 1)


def test_gather_staging_target_has_no_production_impact(
    tmp_path: Path, inventory: InventoryFile, history: HistorySQLite
) -> None:
    labels = {"alertname": "CertificateExpiringSoon", "namespace": "web", "deployment": "docs"}
    _, document = run(tmp_path, alert(labels), inventory, history)
    assert document["action"]["target"]["environment"] == "staging"
    assert document["action"]["production_impact"] is False
    assert document["action"]["type"] == "certificate_rotation"
    assert document["action"]["rollback_seconds"] == 180


def test_gather_counts_recent_autonomous_actions_and_the_kill_switch_file(
    tmp_path: Path, inventory: InventoryFile, history: HistorySQLite
) -> None:
    remediate(history, "oom-memory-leak", "success", NOW - timedelta(minutes=20))
    (tmp_path / "kill-switch").touch()
    context, document = run(tmp_path, alert(OOM_LABELS), inventory, history)
    assert document["guardrails"] == {"kill_switch": True, "autonomous_actions_in_window": 1}
    assert context.health_ceiling == 4


def test_gather_many_gives_each_alert_what_gather_gives_it_alone(
    tmp_path: Path, inventory: InventoryFile, history: HistorySQLite
) -> None:
    """Sources asked once per batch (guardrails), per pattern and action (history) or once for
    the novelty index must not blur alerts together: each context is the one it gets alone."""
    subjects = [
        alert(OOM_LABELS),
        alert({**OOM_LABELS, "pod": "checkout-2"}),
        alert({"alertname": "KubeDeploymentReplicasMismatch", "namespace": "web", "deployment": "docs"}),
        alert({"alertname": "SomethingNeverSeen", "namespace": "shop", "deployment": "checkout"}),
        alert(OOM_LABELS, {"summary": "checkout OOM again"}),
    ]
    (tmp_path / "kill-switch").touch()
    guardrails = FileGuardrails(tmp_path / "kill-switch", history.count_autonomous_actions, 3600)
    sources = Sources(inventory, history, CatalogDiagnoser(), guardrails, CATALOG)
    together = gather_many(subjects, NOW, sources)
    alone = [gather(subject, NOW, sources) for subject in subjects]
    assert [c.policy_input() for c in alone] == [c.policy_input() for c in together]
    assert [c.problems for c in alone] == [c.problems for c in together]
    assert {c.diagnosis.pattern_id for c in together} >= {"oom-memory-leak"}
    assert all(c.guardrails.kill_switch for c in together)


def test_gather_many_with_every_source_broken_gives_each_alert_its_worst_case(tmp_path: Path) -> None:
    corrupt = tmp_path / "history.db"
    corrupt.write_bytes(b"this is not a database, " * 100)
    history = HistorySQLite(corrupt)
    guardrails = FileGuardrails(tmp_path / "kill-switch", history.count_autonomous_actions, 3600)
    sources = Sources(UnreachableInventory(), history, CrashingDiagnoser(), guardrails, CATALOG)
    contexts = gather_many([alert(OOM_LABELS), alert({"alertname": "Other"})], NOW, sources)
    for context in contexts:
        validate("input", context.policy_input())
        assert context.health_ceiling == 1
        sources_down = [p.split(":")[0] for p in context.problems]
        assert sources_down == ["diagnosis", "history", "inventory", "guardrails", "novelty"]
