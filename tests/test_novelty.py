"""Novelty: the similarity of an alert to past incidents, against a real SQLite history."""

from __future__ import annotations

import copy
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pyagent.alerts import Alert
from pyagent.context import Context, Sources, gather
from pyagent.opa import EmbeddedOpa
from pyagent.settings import Settings
from pyagent.sources.catalog import ActionCatalog, CatalogDiagnoser
from pyagent.sources.guardrails import FileGuardrails
from pyagent.sources.history_import import import_incidents, load
from pyagent.sources.history_sqlite import HistorySQLite
from pyagent.sources.inventory_file import InventoryFile
from pyagent.sources.novelty import (
    HistoryNovelty,
    IncidentRecord,
    label_similarity,
    similarity,
    text_similarity,
)
from tests.builders import firing_alert
from tests.serving import EXAMPLES, example, post, records, serve

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ActionCatalog.load(ROOT / "rego" / "escalation" / "policy.json")
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
LAG = {
    "alertname": "KafkaConsumerLagGrowing",
    "namespace": "orders",
    "service": "billing",
    "severity": "warning",
}
ELSEWHERE = {**LAG, "namespace": "payments", "service": "ledger"}


def alert(labels: dict[str, str], summary: str = "") -> Alert:
    return firing_alert(labels, {"summary": summary} if summary else {}, fingerprint="0123456789abcdef")


@pytest.fixture
def history(tmp_path: Path) -> HistorySQLite:
    return HistorySQLite(tmp_path / "history.db")


def remember(history: HistorySQLite, labels: dict[str, str], ago: timedelta, summary: str = "") -> int:
    return history.record_incident(
        f"fp-{ago.total_seconds():.0f}",
        f"novel:{labels['alertname']}",
        labels["alertname"],
        NOW - ago,
        labels=labels,
        annotations={"summary": summary} if summary else {},
    )


# --- the score ---------------------------------------------------------------------------------


def test_identical_labels_score_one_and_instance_labels_are_ignored() -> None:
    assert 1.0 == label_similarity({**LAG, "pod": "billing-1"}, {**LAG, "pod": "billing-2"})


def test_label_score_is_weighted_jaccard_with_alertname_weighing_four() -> None:
    """Shared: alertname (4) and severity (1); union adds two namespaces and two services (1 each)."""
    assert 5 / 9 == label_similarity(LAG, ELSEWHERE)


def test_text_score_is_jaccard_of_words_without_numbers_or_stop_words() -> None:
    """Words: consumer, lag, growing, topic, orders, minutes against consumer, lag, growing,
    topic, payments: 4 shared of 7."""
    mine = alert(LAG, "consumer lag growing on topic orders for 10 minutes")
    theirs = alert(LAG, "Consumer lag growing on topic payments")
    assert round(0.7 * 1.0 + 0.3 * 4 / 7, 6) == similarity(mine, _record(theirs))


def test_text_jaccard_of_two_empty_sets_is_one() -> None:
    assert 1.0 == text_similarity(frozenset(), frozenset())


def _record(source: Alert) -> IncidentRecord:
    return IncidentRecord(
        1, "fp", "p", source.name, "2026-11-25T00:00:00Z", source.labels, source.annotations
    )


def test_label_and_text_scores_combine_70_30() -> None:
    mine = alert(LAG, "consumer lag growing on topic orders")
    theirs = alert(ELSEWHERE, "consumer lag growing on topic payments")
    assert round(0.7 * 5 / 9 + 0.3 * 4 / 6, 6) == similarity(mine, _record(theirs))


# --- against history ---------------------------------------------------------------------------


def test_empty_history_makes_any_alert_novel(history: HistorySQLite) -> None:
    facts = HistoryNovelty(history).assess(alert(LAG), NOW)
    assert (0.0, True, None, ()) == (facts.score, facts.novel, facts.nearest, facts.problems)


def test_similar_past_incident_is_the_nearest_and_makes_it_known(history: HistorySQLite) -> None:
    remember(
        history,
        {**LAG, "namespace": "payments", "service": "ledger", "severity": "critical"},
        timedelta(days=9),
    )
    close = remember(history, {**LAG, "pod": "billing-0"}, timedelta(days=3))
    facts = HistoryNovelty(history).assess(alert({**LAG, "pod": "billing-7"}), NOW)
    # the identical one scores 1 first; the other, at most its label score, cannot beat it
    assert (1.0, False, 1) == (facts.score, facts.novel, facts.compared)
    assert facts.nearest is not None
    assert close == facts.nearest.id
    nearest = facts.record()["nearest"]
    assert isinstance(nearest, dict)
    assert (close, "novel:KafkaConsumerLagGrowing") == (nearest["id"], nearest["pattern"])


def test_score_exactly_at_the_threshold_is_known_and_just_below_is_novel(history: HistorySQLite) -> None:
    remember(history, ELSEWHERE, timedelta(days=1))
    assert HistoryNovelty(history, threshold=5 / 9).assess(alert(LAG), NOW).novel is False
    assert HistoryNovelty(history, threshold=5 / 9 + 1e-6).assess(alert(LAG), NOW).novel is True


def test_incidents_after_now_are_not_compared(history: HistorySQLite) -> None:
    """A replayed decision sees only what history held then."""
    remember(history, LAG, -timedelta(hours=1))
    facts = HistoryNovelty(history).assess(alert(LAG), NOW)
    assert (0.0, None) == (facts.score, facts.nearest)


def test_incidents_recorded_later_are_picked_up(history: HistorySQLite) -> None:
    novelty = HistoryNovelty(history)
    assert novelty.assess(alert(LAG), NOW).novel is True
    remember(history, LAG, timedelta(minutes=5))
    assert novelty.assess(alert(LAG), NOW).novel is False


def test_the_latest_of_equally_similar_incidents_is_the_nearest(history: HistorySQLite) -> None:
    remember(history, LAG, timedelta(days=5))
    latest = remember(history, LAG, timedelta(days=1))
    remember(history, LAG, timedelta(days=3))
    nearest = HistoryNovelty(history).assess(alert(LAG), NOW).nearest
    assert nearest is not None
    assert latest == nearest.id


def test_unreadable_history_is_novel_with_the_reason(tmp_path: Path) -> None:
    corrupt = tmp_path / "history.db"
    corrupt.write_bytes(b"this is not a database, " * 100)
    facts = HistoryNovelty(HistorySQLite(corrupt)).assess(alert(LAG), NOW)
    assert (0.0, True) == (facts.score, facts.novel)
    assert 1 == len(facts.problems)


def test_incident_recorded_before_labels_were_kept_compares_by_alert_name(tmp_path: Path) -> None:
    """A database from before the label columns gets them on open; its rows read as alertname only."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE incidents (id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL,"
            " pattern_id TEXT NOT NULL, alert_name TEXT NOT NULL, started_at TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO incidents (fingerprint, pattern_id, alert_name, started_at)"
            " VALUES ('old', 'novel:KafkaConsumerLagGrowing', 'KafkaConsumerLagGrowing',"
            " '2026-11-01T00:00:00Z')"
        )
    conn.close()
    facts = HistoryNovelty(HistorySQLite(path)).assess(alert(LAG), NOW)
    assert (
        round(4 / 7, 6) == facts.score
    )  # alertname (4) over alertname, namespace, service, severity (4 + 3)


# --- in the pipeline ---------------------------------------------------------------------------


def _gather(tmp_path: Path, history: HistorySQLite, subject: Alert, threshold: float = 0.5) -> Context:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("services: []\n")
    guardrails = FileGuardrails(tmp_path / "kill-switch", history.count_autonomous_actions, 3600)
    sources = Sources(
        InventoryFile(inventory),
        history,
        CatalogDiagnoser(),
        guardrails,
        CATALOG,
        novelty=HistoryNovelty(history, threshold),
    )
    return gather(subject, NOW, sources)


def test_uncatalogued_alert_similar_to_a_past_incident_is_a_known_pattern(
    tmp_path: Path, history: HistorySQLite
) -> None:
    remember(history, LAG, timedelta(days=2), "consumer lag growing")
    context = _gather(tmp_path, history, alert(LAG, "consumer lag growing"))
    assert context.policy_input()["pattern"]["known"] is True
    assert 1.0 == context.novelty.score


def test_same_alert_name_elsewhere_is_novel_below_the_threshold(
    tmp_path: Path, history: HistorySQLite
) -> None:
    """Same alert name, other namespace and service, no shared text: 5/9 under a 0.6 threshold."""
    remember(history, ELSEWHERE, timedelta(days=2))
    context = _gather(tmp_path, history, alert(LAG), threshold=0.6)
    record = context.novelty.record()
    assert (round(5 / 9, 6), True) == (record["score"], record["novel"])
    assert context.policy_input()["pattern"]["known"] is False


def test_catalogued_alert_is_known_however_novel_its_labels(tmp_path: Path, history: HistorySQLite) -> None:
    context = _gather(tmp_path, history, alert({"alertname": "KubePodOOMKilled", "namespace": "shop"}))
    assert context.novelty.novel is True
    assert context.policy_input()["pattern"]["known"] is True


def test_history_import_keeps_labels_and_annotations_for_novelty(
    tmp_path: Path, history: HistorySQLite
) -> None:
    source = tmp_path / "history.yaml"
    source.write_text(
        "incidents:\n"
        "  - pattern: kafka-lag\n    alertname: KafkaConsumerLagGrowing\n    action: scale_up\n"
        "    level: 2\n    outcome: success\n    started_at: [2026-11-20T10:00:00Z]\n"
        "    labels: {namespace: orders, service: billing, severity: warning}\n"
        "    annotations: {summary: consumer lag growing}\n"
    )
    import_incidents(history, load(source))
    facts = HistoryNovelty(history).assess(alert(LAG, "consumer lag growing"), NOW)
    assert 1.0 == facts.score


def test_agent_records_the_alert_labels_and_audits_the_novelty(
    tmp_path: Path, opa_server: EmbeddedOpa
) -> None:
    """A novel alert, decided twice: the second resembles the first incident the agent recorded."""
    settings = Settings(state_dir=tmp_path, opa_url=opa_server.url, inventory=EXAMPLES / "inventory.yaml")
    first = example("level-1-novel-pattern")
    second = copy.deepcopy(first)
    for item in second["alerts"]:
        item["fingerprint"] = "ffffffffffffffff"
        item["startsAt"] = "2026-11-26T11:59:30Z"
    with serve(settings) as (url, running):
        running.agent.clock = lambda: NOW
        assert 200 == post(url, first).status_code
        assert running.agent.drain(30)
        running.agent.clock = lambda: NOW + timedelta(minutes=1)
        assert 200 == post(url, second).status_code
        assert running.agent.drain(30)
    [incident, _] = HistorySQLite(tmp_path / "history.db").incidents_since(0)
    assert dict(first["alerts"][0]["labels"]) == dict(incident.labels)
    assert dict(first["alerts"][0]["annotations"]) == dict(incident.annotations)
    before, after = (d["novelty"] for d in records(tmp_path, "decision"))
    assert (0.0, True, None) == (before["score"], before["novel"], before["nearest"])
    assert after["nearest"]["id"] == incident.id
    assert after["novel"] is False


def test_the_index_finds_what_comparing_with_every_incident_finds(history: HistorySQLite) -> None:
    """Scoring only the incidents that share a label or a word gives the brute-force answer."""
    rng = random.Random(7)  # noqa: S311 - reproducible test data, not a secret
    names = ["KubePodOOMKilled", "KafkaConsumerLagGrowing", "HighLatency"]
    values = {"namespace": ["shop", "orders", "payments"], "service": ["api", "ledger", "web", "db"]}
    words = ["memory", "limit", "lag", "growing", "latency", "checkout", "disk", "pressure"]

    def labels() -> dict[str, str]:
        chosen = {"alertname": rng.choice(names)}
        chosen.update({k: rng.choice(v) for k, v in values.items() if rng.random() < 0.6})
        return chosen

    def text() -> str:
        # a pod name in the text makes nearly every incident a feature set of its own
        return " ".join([*rng.sample(words, rng.randint(0, 3)), f"pod{rng.randint(0, 10**6)}"])

    started = {}
    for n in range(300):
        ago = timedelta(seconds=rng.randint(-3600, 30 * 86400) * 1000 + n)  # distinct start times
        if n % 30:
            incident = remember(history, labels(), ago, text())
        else:  # only labels that are left out: compared by words alone, or alike to the same
            incident = history.record_incident(
                f"lonely-{n}", "novel:Lonely", "Lonely", NOW - ago, labels={"pod": f"p{n}"}, annotations={}
            )
        started[incident] = NOW - ago
    novelty = HistoryNovelty(history)
    incidents = {i.id: i for i in history.incidents_since(0)}
    for n in range(80):
        chosen = labels() if n % 10 else {"pod": "x"}  # no label that counts
        if n % 5 == 1:  # an alert never seen: its words may find a nearer neighbour than its labels
            chosen = {"alertname": "Unseen", "namespace": rng.choice(values["namespace"])}
        probe = alert(chosen, text() if n % 7 else "")
        facts = novelty.assess(probe, NOW)
        past = [(similarity(probe, incidents[i]), when, i) for i, when in started.items() if when < NOW]
        best, _, nearest = max(past)
        assert best == facts.score
        assert (nearest if best > 0 else None) == (facts.nearest.id if facts.nearest else None)


def test_an_incident_alike_only_in_words_can_be_the_nearest(history: HistorySQLite) -> None:
    """Sharing no label at all, an incident with the same words (0.3) beats one that shares a
    namespace and one word (0.7 * 1/11 + 0.3 * 1/3, about 0.16)."""
    some_label = remember(
        history,
        {"alertname": "DiskFilling", "namespace": "shop", "service": "db", "severity": "warning"},
        timedelta(days=2),
        "disk memory",
    )
    same_words = remember(history, {"alertname": "NodePressure"}, timedelta(days=3), "disk pressure")
    facts = HistoryNovelty(history).assess(
        alert({"alertname": "Unseen", "namespace": "shop"}, "disk pressure"), NOW
    )
    assert facts.nearest is not None
    assert (0.3, same_words) == (facts.score, facts.nearest.id)
    assert some_label != same_words
