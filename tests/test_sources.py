"""The context sources against real files and a real SQLite database in ``tmp_path``."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pyagent.alerts import Alert
from pyagent.errors import ConfigError, HistoryError
from pyagent.sources import NO_ACTION, WORST_CASE_ACTIONS, history_sqlite
from pyagent.sources.catalog import ActionCatalog, CatalogDiagnoser
from pyagent.sources.guardrails import FileGuardrails
from pyagent.sources.history_sqlite import HistorySQLite, OutcomeKind
from pyagent.sources.inventory_file import InventoryFile
from tests.builders import firing_alert

ROOT = Path(__file__).resolve().parent.parent
POLICY_JSON = ROOT / "rego" / "escalation" / "policy.json"
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
      - {name: checkout-worker, replicas: 4, stateless: false, hpa: {min: 2, max: 8}, max_unavailable: 2}
  - name: payments
    namespace: pay
    environment: staging
    error_budget_remaining: 0.5
    regulated_frameworks: [PCI-DSS]
    deployments:
      - {name: payments-api, replicas: 3, stateless: true}
  - name: grafana
    namespace: monitoring
    error_budget_remaining: 1.0
    deployments:
      - {name: grafana, replicas: 0, stateless: true}
"""


def alert(annotations: dict[str, str] | None = None, **labels: str) -> Alert:
    return firing_alert(labels, annotations)


@pytest.fixture
def inventory_path(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY)
    return path


# --- inventory --------------------------------------------------------------------------------


def test_inventory_finds_deployment_by_namespace_and_deployment_label(inventory_path: Path) -> None:
    facts = InventoryFile(inventory_path).lookup(alert(namespace="shop", deployment="checkout"))
    assert facts.problems == ()
    assert (facts.target.kind, facts.target.namespace, facts.target.name) == (
        "Deployment",
        "shop",
        "checkout",
    )
    assert facts.target.environment == "production"
    assert facts.target.hpa_managed is False
    assert facts.target.replicas == 5
    assert facts.stateless is True
    assert facts.services == 1
    assert facts.namespaces == ("shop",)
    assert facts.replica_fraction == 0.2
    assert facts.traffic_fraction == 0.05
    assert facts.shared_infrastructure is False
    assert (facts.regulated, facts.frameworks) == (False, ())
    assert facts.error_budget_remaining == 0.8


def test_inventory_replica_fraction_is_max_unavailable_over_replicas(inventory_path: Path) -> None:
    facts = InventoryFile(inventory_path).lookup(alert(namespace="shop", deployment="checkout-worker"))
    assert facts.replica_fraction == 0.5
    assert facts.target.hpa_managed is True
    assert facts.stateless is False


def test_inventory_service_label_finds_the_services_only_deployment(inventory_path: Path) -> None:
    facts = InventoryFile(inventory_path).lookup(alert(namespace="pay", service="payments"))
    assert facts.target.name == "payments-api"
    assert facts.target.environment == "staging"
    assert (facts.regulated, facts.frameworks) == (True, ("PCI-DSS",))


def test_inventory_shared_infrastructure_namespace_is_shared(inventory_path: Path) -> None:
    facts = InventoryFile(inventory_path).lookup(alert(namespace="monitoring", job="grafana"))
    assert facts.shared_infrastructure is True


def test_inventory_zero_replicas_is_whole_fraction_with_reason(inventory_path: Path) -> None:
    facts = InventoryFile(inventory_path).lookup(alert(namespace="monitoring", deployment="grafana"))
    assert facts.replica_fraction == 1.0
    assert "0 replicas" in facts.problems[0]


def assert_worst_case(inventory: InventoryFile, wanted: str) -> None:
    """Every inventory fact at its most dangerous, the target still named from the labels."""
    facts = inventory.lookup(alert(namespace="shop", deployment="checkout"))
    assert facts.services > 1
    assert len(facts.namespaces) > 1
    assert facts.replica_fraction == 1.0
    assert facts.shared_infrastructure is True
    assert (facts.regulated, facts.frameworks) == (True, ("unknown",))
    assert facts.stateless is False
    assert facts.error_budget_remaining == 0.0
    assert facts.target.environment == "production"
    assert (facts.target.namespace, facts.target.name) == ("shop", "checkout")
    assert wanted in facts.problems[0]


def test_inventory_missing_file_is_worst_case(tmp_path: Path) -> None:
    assert_worst_case(InventoryFile(tmp_path / "absent.yaml"), "cannot be read")


def test_inventory_bad_yaml_is_worst_case(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text("services: [unclosed\n")
    assert_worst_case(InventoryFile(path), "not valid YAML")


def test_inventory_wrong_shape_is_worst_case_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY.replace("replicas: 5", "replicas: five"))
    assert_worst_case(InventoryFile(path), "services[0].deployments[0].replicas")


def test_inventory_unknown_target_is_worst_case(inventory_path: Path) -> None:
    facts = InventoryFile(inventory_path).lookup(alert(namespace="shop", deployment="basket"))
    assert facts.replica_fraction == 1.0
    assert facts.shared_infrastructure is True
    assert "is not in inventory" in facts.problems[0]


def test_inventory_alert_without_target_labels_is_worst_case(inventory_path: Path) -> None:
    facts = InventoryFile(inventory_path).lookup(alert(alertname="KubeNodeNotReady", node="n1"))
    assert facts.target.kind == "Unknown"
    assert "does not name its target" in facts.problems[0]


def test_inventory_is_reread_when_the_file_changes(inventory_path: Path) -> None:
    inventory = InventoryFile(inventory_path)
    target = alert(namespace="shop", deployment="checkout")
    assert inventory.lookup(target).error_budget_remaining == 0.8
    inventory_path.write_text(INVENTORY.replace("error_budget_remaining: 0.8", "error_budget_remaining: 0.3"))
    stat = inventory_path.stat()
    os.utime(inventory_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert inventory.lookup(target).error_budget_remaining == 0.3


def test_inventory_recovers_when_a_missing_file_appears(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    inventory = InventoryFile(path)
    assert inventory.lookup(alert(namespace="shop", deployment="checkout")).problems
    path.write_text(INVENTORY)
    assert inventory.lookup(alert(namespace="shop", deployment="checkout")).problems == ()


# --- history ----------------------------------------------------------------------------------


def remediation(
    history: HistorySQLite,
    pattern: str,
    outcome: OutcomeKind | None,
    at: datetime,
    action: str = "rolling_restart",
) -> int:
    """One incident of ``pattern`` with one action, its outcome recorded at ``at``; returns the action id."""
    incident = history.record_incident("c7f3a1b2d4e5f601", pattern, "KubePodOOMKilled", at)
    action_id = history.record_action(incident, action, 4, executed_at=at)
    if outcome is not None:
        history.record_outcome(action_id, outcome, at)
    return action_id


def test_history_counts_prior_occurrences_of_the_pattern_only(tmp_path: Path) -> None:
    history = HistorySQLite(tmp_path / "history.db")
    for days in range(1, 4):
        remediation(history, "oom-memory-leak", "success", NOW - timedelta(days=days))
    remediation(history, "process-deadlock", "success", NOW - timedelta(days=1))
    remediation(history, "oom-memory-leak", "success", NOW + timedelta(minutes=1))
    assert history.stats("oom-memory-leak", "rolling_restart", NOW).occurrences == 3


def test_history_all_successes_are_consistent(tmp_path: Path) -> None:
    history = HistorySQLite(tmp_path / "history.db")
    remediation(history, "oom-memory-leak", "success", NOW - timedelta(days=2))
    remediation(history, "oom-memory-leak", "success", NOW - timedelta(days=1))
    facts = history.stats("oom-memory-leak", "rolling_restart", NOW)
    assert facts.consistent_outcomes is True
    assert facts.last_suboptimal_at is None
    assert facts.problems == ()


def test_history_no_outcome_yet_counts_as_consistent(tmp_path: Path) -> None:
    history = HistorySQLite(tmp_path / "history.db")
    assert history.stats("oom-memory-leak", "rolling_restart", NOW).consistent_outcomes is True


def test_history_one_rollback_makes_outcomes_inconsistent(tmp_path: Path) -> None:
    history = HistorySQLite(tmp_path / "history.db")
    remediation(history, "oom-memory-leak", "success", NOW - timedelta(days=2))
    remediation(history, "oom-memory-leak", "rolled_back", NOW - timedelta(days=1))
    assert history.stats("oom-memory-leak", "rolling_restart", NOW).consistent_outcomes is False


def test_history_other_actions_do_not_affect_consistency(tmp_path: Path) -> None:
    history = HistorySQLite(tmp_path / "history.db")
    remediation(history, "oom-memory-leak", "error", NOW - timedelta(days=1), action="increase_memory_limit")
    assert history.stats("oom-memory-leak", "rolling_restart", NOW).consistent_outcomes is True


def test_history_last_suboptimal_is_the_latest_suboptimal_outcome(tmp_path: Path) -> None:
    history = HistorySQLite(tmp_path / "history.db")
    remediation(history, "oom-memory-leak", "aborted", NOW - timedelta(days=30))
    remediation(history, "oom-memory-leak", "verification_failed", NOW - timedelta(days=3))
    remediation(history, "oom-memory-leak", "success", NOW - timedelta(days=1))
    remediation(history, "oom-memory-leak", "error", NOW + timedelta(days=1))
    facts = history.stats("oom-memory-leak", "rolling_restart", NOW)
    assert facts.last_suboptimal_at == "2026-11-23T12:00:00Z"


def test_history_false_positive_rate_counts_the_last_seven_days_only(tmp_path: Path) -> None:
    history = HistorySQLite(tmp_path / "history.db")
    remediation(history, "oom-memory-leak", "false_positive", NOW - timedelta(days=8))
    remediation(history, "oom-memory-leak", "false_positive", NOW - timedelta(days=6))
    for hours in range(1, 4):
        remediation(history, "process-deadlock", "success", NOW - timedelta(hours=hours))
    assert history.stats("oom-memory-leak", "rolling_restart", NOW).false_positive_rate_7d == 0.25


def test_failed_verifications_rollbacks_and_aborts_count_as_false_positives_errors_do_not(
    tmp_path: Path,
) -> None:
    """A remedy that had to be undone shows the diagnosis was wrong; a broken tool does not."""
    history = HistorySQLite(tmp_path / "history.db")
    for outcome in ("verification_failed", "rolled_back", "aborted", "error"):
        remediation(history, "oom-memory-leak", outcome, NOW - timedelta(days=1))
    for _ in range(4):
        remediation(history, "oom-memory-leak", "success", NOW - timedelta(days=1))
    assert 3 / 8 == history.stats("oom-memory-leak", "rolling_restart", NOW).false_positive_rate_7d


def test_history_false_positive_rate_is_zero_without_outcomes(tmp_path: Path) -> None:
    history = HistorySQLite(tmp_path / "history.db")
    assert history.stats("oom-memory-leak", "rolling_restart", NOW).false_positive_rate_7d == 0.0


def test_history_unreadable_database_is_worst_case(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    path.write_bytes(b"this is not a database, " * 100)
    facts = HistorySQLite(path).stats("oom-memory-leak", "rolling_restart", NOW)
    assert (facts.occurrences, facts.consistent_outcomes, facts.false_positive_rate_7d) == (0, False, 1.0)
    assert "history" in facts.problems[0]


def test_history_uses_wal_journal(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    HistorySQLite(path).stats("oom-memory-leak", "rolling_restart", NOW)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_history_rejects_an_unknown_outcome(tmp_path: Path) -> None:
    history = HistorySQLite(tmp_path / "history.db")
    action_id = remediation(history, "oom-memory-leak", None, NOW)
    with pytest.raises(HistoryError, match="CHECK constraint"):
        history.record_outcome(action_id, "great", NOW)  # type: ignore[arg-type]


def test_history_refuses_an_outcome_for_no_action(tmp_path: Path) -> None:
    history = HistorySQLite(tmp_path / "history.db")
    with pytest.raises(HistoryError, match="no action 42"):
        history.record_outcome(42, "success", NOW)


def test_history_reads_a_patterns_outcomes_from_one_index_however_long_its_history(tmp_path: Path) -> None:
    """An outcome carries its pattern and action type, so the two questions about them are
    index seeks: through the joins, they read every incident of the pattern (77 ms per
    question with 25,000 outcomes)."""
    history = HistorySQLite(tmp_path / "history.db")
    remediation(history, "oom-memory-leak", "success", NOW - timedelta(days=1))
    conn = sqlite3.connect(tmp_path / "history.db")
    try:
        for query in (history_sqlite._ANY_NOT_SUCCESS, history_sqlite._LAST_SUBOPTIMAL):
            parameters = (None,) * query.count("?")
            plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + query, parameters))
            assert "USING COVERING INDEX outcomes_by_pattern_action" in plan
            assert not any(word in plan for word in ("incidents", "actions", "SCAN outcomes")), plan
    finally:
        conn.close()


def _stats_steps(history: HistorySQLite) -> int:
    """SQLite virtual machine instructions one ``stats`` question takes (not time: the count
    is the same on a busy machine)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    history.stats("oom-memory-leak", "rolling_restart", NOW)  # the connection opened first
    connection = history._connection()
    connection.set_progress_handler(count, 1)
    try:
        history.stats("oom-memory-leak", "rolling_restart", NOW)
    finally:
        connection.set_progress_handler(None, 1)
    return steps


def test_history_answers_for_a_pattern_in_the_same_work_however_long_its_history(tmp_path: Path) -> None:
    """Counting a pattern's incidents walked all of them, and its outcomes were read through
    every incident: each question took ten times the work with ten times the history."""
    history = HistorySQLite(tmp_path / "history.db")
    month_ago = NOW - timedelta(days=30)  # outside the 7-day window, whose count is another question
    steps = []
    for total in (100, 1000):
        while history.stats("oom-memory-leak", "rolling_restart", NOW).occurrences < total:
            remediation(history, "oom-memory-leak", "success", month_ago)
        steps.append(_stats_steps(history))
    assert steps[1] < steps[0] * 1.5, steps


def test_history_counts_incidents_written_by_any_writer_of_the_file(tmp_path: Path) -> None:
    """The count is kept by triggers in the file: a writer that knows nothing of it (an
    earlier release) keeps it exact too."""
    path = tmp_path / "history.db"
    history = HistorySQLite(path)
    remediation(history, "oom-memory-leak", "success", NOW - timedelta(days=2))
    other = sqlite3.connect(path)
    with other:
        other.execute(
            "INSERT INTO incidents (fingerprint, pattern_id, alert_name, started_at)"
            " VALUES ('f2', 'oom-memory-leak', 'KubePodOOMKilled', '2026-11-25T12:00:00Z')"
        )
    other.close()
    assert 2 == history.stats("oom-memory-leak", "rolling_restart", NOW).occurrences


def test_history_written_before_outcomes_carried_their_pattern_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE incidents (id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL,
            pattern_id TEXT NOT NULL, alert_name TEXT NOT NULL, started_at TEXT NOT NULL,
            labels TEXT NOT NULL DEFAULT '{}', annotations TEXT NOT NULL DEFAULT '{}');
        CREATE TABLE actions (id INTEGER PRIMARY KEY, incident_id INTEGER NOT NULL,
            action_type TEXT NOT NULL, decided_level INTEGER NOT NULL, executed_at TEXT);
        CREATE TABLE outcomes (action_id INTEGER NOT NULL, outcome TEXT NOT NULL, recorded_at TEXT NOT NULL);
        INSERT INTO incidents VALUES
            (1, 'f1', 'oom-memory-leak', 'KubePodOOMKilled', '2026-11-20T12:00:00Z', '{}', '{}'),
            (2, 'f2', 'oom-memory-leak', 'KubePodOOMKilled', '2026-11-21T12:00:00Z', '{}', '{}');
        INSERT INTO actions VALUES (1, 1, 'rolling_restart', 4, '2026-11-20T12:00:00Z');
        INSERT INTO actions VALUES (2, 2, 'rolling_restart', 4, '2026-11-21T12:00:00Z');
        INSERT INTO outcomes VALUES (1, 'rolled_back', '2026-11-20T12:05:00Z');
        INSERT INTO outcomes VALUES (2, 'success', '2026-11-21T12:05:00Z');
        """
    )
    old.close()
    facts = HistorySQLite(path).stats("oom-memory-leak", "rolling_restart", NOW)
    assert (2, False, "2026-11-20T12:05:00Z") == (
        facts.occurrences,
        facts.consistent_outcomes,
        facts.last_suboptimal_at,
    )


def test_history_counts_autonomous_actions_executed_since(tmp_path: Path) -> None:
    history = HistorySQLite(tmp_path / "history.db")
    incident = history.record_incident("c7f3a1b2d4e5f601", "oom-memory-leak", "KubePodOOMKilled", NOW)
    history.record_action(incident, "rolling_restart", 4, executed_at=NOW - timedelta(minutes=10))
    history.record_action(incident, "rolling_restart", 3, executed_at=NOW - timedelta(minutes=50))
    history.record_action(incident, "rolling_restart", 4, executed_at=NOW - timedelta(minutes=70))
    history.record_action(incident, "rolling_restart", 2, executed_at=NOW - timedelta(minutes=5))
    history.record_action(incident, "rolling_restart", 4)
    assert history.count_autonomous_actions(NOW - timedelta(hours=1)) == 2


# --- pattern catalog and action catalog --------------------------------------------------------


@pytest.mark.parametrize(
    ("alertname", "pattern", "action", "delta"),
    [
        ("KubePodOOMKilled", "oom-memory-leak", "rolling_restart", 0),
        ("ProcessDeadlock", "process-deadlock", "rolling_restart", 0),
        ("CPUSaturation", "cpu-saturation-hpa", "scale_up", 2),
        ("CertificateExpiringSoon", "certificate-expiry", "certificate_rotation", 0),
        ("LogPipelineStalled", "log-pipeline-stalled", "log_pipeline_restart", 0),
        ("KubeDeploymentRolloutStuck", "bad-deploy", "rollback_deployment", 0),
        ("ContainerMemoryNearLimit", "memory-limit-too-low", "increase_memory_limit", 0),
        ("KubeNodeNotReady", "node-unhealthy", "drain_node", 0),
    ],
)
def test_catalog_maps_alertname_to_pattern_and_action(
    alertname: str, pattern: str, action: str, delta: int
) -> None:
    diagnosis = CatalogDiagnoser().diagnose(alert(alertname=alertname))
    assert (diagnosis.pattern_id, diagnosis.action_type, diagnosis.replicas_delta) == (pattern, action, delta)
    assert diagnosis.known is True
    assert diagnosis.available is True
    assert action in ActionCatalog.load(POLICY_JSON)


def test_catalog_matches_oomkilled_reason_on_any_alert() -> None:
    diagnosis = CatalogDiagnoser().diagnose(alert(alertname="KubeContainerTerminated", reason="OOMKilled"))
    assert diagnosis.pattern_id == "oom-memory-leak"
    assert diagnosis.evidence["reason"] == "OOMKilled"


def test_catalog_confidence_is_base_plus_evidence_per_label() -> None:
    diagnoser = CatalogDiagnoser()
    bare = diagnoser.diagnose(alert(alertname="KubeDeploymentRolloutStuck"))
    full = diagnoser.diagnose(
        alert(alertname="KubeDeploymentRolloutStuck", severity="critical", namespace="shop", container="app")
    )
    assert bare.confidence == 0.7
    assert full.confidence == 0.85
    assert dict(full.evidence) == {
        "alertname": "KubeDeploymentRolloutStuck",
        "severity": "critical",
        "namespace": "shop",
        "container": "app",
    }


def test_catalog_confidence_is_capped_below_one() -> None:
    diagnosis = CatalogDiagnoser().diagnose(
        alert(alertname="CertificateExpiringSoon", severity="warning", namespace="shop", container="app")
    )
    assert diagnosis.confidence == 0.95


def test_catalog_annotation_lowers_confidence() -> None:
    diagnosis = CatalogDiagnoser().diagnose(alert({"ai_confidence": "0.62"}, alertname="KubePodOOMKilled"))
    assert diagnosis.confidence == 0.62


def test_catalog_annotation_never_raises_confidence() -> None:
    diagnosis = CatalogDiagnoser().diagnose(alert({"confidence": "0.99"}, alertname="KubePodOOMKilled"))
    assert diagnosis.confidence == 0.8


def test_catalog_malformed_annotation_is_ignored_with_reason() -> None:
    diagnosis = CatalogDiagnoser().diagnose(alert({"ai_confidence": "high"}, alertname="KubePodOOMKilled"))
    assert diagnosis.confidence == 0.8
    assert "ai_confidence" in diagnosis.problems[0]


def test_catalog_unknown_alert_is_novel_with_no_action() -> None:
    diagnosis = CatalogDiagnoser().diagnose(alert(alertname="DiskFullOnMoon", severity="critical"))
    assert diagnosis.known is False
    assert diagnosis.pattern_id == "novel:DiskFullOnMoon"
    assert diagnosis.action_type == NO_ACTION
    assert diagnosis.confidence == 0.0
    assert NO_ACTION not in ActionCatalog.load(POLICY_JSON)


def test_action_catalog_reads_policy_json() -> None:
    spec = ActionCatalog.load(POLICY_JSON).spec("drain_node")
    assert (spec.idempotent, spec.reversible, spec.rollback_seconds) == (True, False, 900)


def test_action_catalog_unknown_type_is_worst_case() -> None:
    spec = ActionCatalog.load(POLICY_JSON).spec("reboot_datacenter")
    assert (spec.catalogued, spec.idempotent, spec.reversible, spec.rollback_seconds) == (
        False,
        False,
        False,
        3600,
    )


def test_action_catalog_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.json"):
        ActionCatalog.load(tmp_path / "absent.json")


def test_action_catalog_rejects_a_non_boolean_flag(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(
        '{"policy": {"catalog": {"x": {"idempotent": "yes", "reversible": true, "rollback_seconds": 1}}}}'
    )
    with pytest.raises(ConfigError, match="booleans"):
        ActionCatalog.load(path)


# --- guardrails --------------------------------------------------------------------------------


def test_kill_switch_follows_the_file_without_restart(tmp_path: Path) -> None:
    switch = tmp_path / "kill-switch"
    guardrails = FileGuardrails(
        switch, HistorySQLite(tmp_path / "history.db"), 3600, config_kill_switch=False
    )
    assert guardrails.state(NOW).kill_switch is False
    switch.touch()
    assert guardrails.state(NOW).kill_switch is True
    switch.unlink()
    assert guardrails.state(NOW).kill_switch is False


def test_kill_switch_on_by_configuration(tmp_path: Path) -> None:
    guardrails = FileGuardrails(tmp_path / "kill-switch", lambda _since: 0, 3600, config_kill_switch=True)
    facts = guardrails.state(NOW)
    assert facts.kill_switch is True
    assert facts.problems == ()


def test_guardrails_count_autonomous_actions_over_the_window(tmp_path: Path) -> None:
    history = HistorySQLite(tmp_path / "history.db")
    remediation(history, "oom-memory-leak", "success", NOW - timedelta(minutes=30))
    remediation(history, "oom-memory-leak", "success", NOW - timedelta(minutes=90))
    assert FileGuardrails(tmp_path / "ks", history, 3600).state(NOW).autonomous_actions_in_window == 1
    assert FileGuardrails(tmp_path / "ks", history, 7200).state(NOW).autonomous_actions_in_window == 2


def test_guardrails_unreadable_history_turns_the_kill_switch_on(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    path.write_bytes(b"this is not a database, " * 100)
    facts = FileGuardrails(tmp_path / "kill-switch", HistorySQLite(path), 3600).state(NOW)
    assert facts.kill_switch is True
    assert facts.autonomous_actions_in_window == WORST_CASE_ACTIONS
    assert "cannot be counted" in facts.problems[0]
