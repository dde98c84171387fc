"""Novelty: how much an alert resembles the nearest past incident in history.

The catalog recognises a pattern only by an exact match (alert name or labels). Beyond
that, an alert is compared with every past incident that started before ``now``, and the
pattern counts as *known* when the nearest one is at least as similar as the threshold
(``novelty_threshold``, default 0.5). Below it, the pattern is novel (``pattern.known``
false: ``novel_pattern``, level 1) unless the catalog matched.

Incidents are read once and then incrementally (rows added since the last read, by any
agent sharing the database) into an index that groups incidents with the same features
and lists, per label pair and word, the groups that have it; an alert is scored only
against groups that could be the nearest (see :class:`HistoryNovelty`).

**Method ``similarity-v1``** (deterministic, no model):

- *Labels*: weighted Jaccard over ``name=value`` pairs, ``sum of weights of the pairs both
  share / sum of weights of the pairs either has``. ``alertname`` weighs
  :data:`ALERTNAME_WEIGHT` (4), every other label 1. Labels that name one instance rather
  than the failure (:data:`IGNORED_LABELS`: ``pod``, ``instance``, ``pod_template_hash``,
  ...) are left out. An incident recorded without labels is compared by its alert name.
- *Text*: Jaccard over the sets of words (lower case, letters and digits, starting with a
  letter, at least 2 characters, minus a few stop words) of the ``summary``, ``description``
  and ``message`` annotations.
- *Score*: ``0.7 * labels + 0.3 * text`` when both sides have text, else the label score.
  Ties go to the latest incident; with a score of 0 there is no nearest incident.

The score, the threshold and the nearest incident are recorded with every decision.
A history that cannot be read gives the worst case: score 0, novel, with the reason.
"""

from __future__ import annotations

import bisect
import heapq
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pyagent.alerts import Alert
from pyagent.errors import HistoryError

METHOD = "similarity-v1"
DEFAULT_THRESHOLD = 0.5
ALERTNAME_WEIGHT = 4.0
LABEL_SHARE, TEXT_SHARE = 0.7, 0.3
TEXT_ANNOTATIONS = ("summary", "description", "message")
IGNORED_LABELS = frozenset(
    {"pod", "instance", "pod_template_hash", "container_id", "uid", "endpoint", "prometheus_replica"}
)
STOP_WORDS = frozenset(
    {"the", "an", "and", "or", "of", "in", "on", "for", "to", "is", "at", "by", "with", "than", "times"}
)
_WORD = re.compile(r"[a-z][a-z0-9]+")


@dataclass(frozen=True)
class IncidentRecord:
    """A past incident as history recorded it."""

    id: int
    fingerprint: str
    pattern_id: str
    alert_name: str
    started_at: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


@dataclass(frozen=True)
class NoveltyFacts:
    """The similarity to the nearest past incident, and whether that makes the alert novel."""

    score: float
    threshold: float
    nearest: IncidentRecord | None
    compared: int  # distinct feature sets of past incidents scored (the rest could not be nearer)
    problems: tuple[str, ...] = ()

    @property
    def novel(self) -> bool:
        return self.score < self.threshold

    def record(self) -> dict[str, object]:
        """As decisions record it."""
        nearest = self.nearest
        return {
            "method": METHOD,
            "score": self.score,
            "threshold": self.threshold,
            "novel": self.novel,
            "compared": self.compared,
            "nearest": None
            if nearest is None
            else {
                "id": nearest.id,
                "fingerprint": nearest.fingerprint,
                "pattern": nearest.pattern_id,
                "alertname": nearest.alert_name,
                "started_at": nearest.started_at,
            },
        }

    @classmethod
    def worst_case(cls, problem: str, threshold: float = DEFAULT_THRESHOLD) -> NoveltyFacts:
        """Nothing to compare with: novel."""
        return cls(score=0.0, threshold=threshold, nearest=None, compared=0, problems=(problem,))


class IncidentHistory(Protocol):
    def incidents_since(self, after_id: int) -> list[IncidentRecord]: ...


class NoveltySource(Protocol):
    def assess(self, alert: Alert, now: datetime) -> NoveltyFacts: ...

    def assess_many(self, alerts: Sequence[Alert], now: datetime) -> list[NoveltyFacts]:
        """One :meth:`assess` per alert, all against the same history."""
        ...


def _pairs(labels: Mapping[str, str]) -> dict[tuple[str, str], float]:
    return {
        (key, value): ALERTNAME_WEIGHT if key == "alertname" else 1.0
        for key, value in labels.items()
        if key not in IGNORED_LABELS and value
    }


def _words(annotations: Mapping[str, str]) -> frozenset[str]:
    text = " ".join(annotations.get(key, "") for key in TEXT_ANNOTATIONS).lower()
    return frozenset(word for word in _WORD.findall(text) if word not in STOP_WORDS)


def _weighted_jaccard(left: Mapping[tuple[str, str], float], right: Mapping[tuple[str, str], float]) -> float:
    union = sum({**left, **right}.values())
    shared = sum(weight for pair, weight in left.items() if pair in right)
    return 1.0 if union == 0 else shared / union


def label_similarity(a: Mapping[str, str], b: Mapping[str, str]) -> float:
    """Weighted Jaccard of two label sets (1.0 for two empty ones)."""
    return _weighted_jaccard(_pairs(a), _pairs(b))


def text_similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard of two word sets."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


@dataclass(frozen=True)
class Features:
    """What the similarity compares: weighted label pairs (and their total weight) and words."""

    pairs: Mapping[tuple[str, str], float]
    weight: float
    words: frozenset[str]

    @classmethod
    def of(cls, labels: Mapping[str, str], annotations: Mapping[str, str]) -> Features:
        pairs = _pairs(labels)
        return cls(pairs, sum(pairs.values()), _words(annotations))

    @classmethod
    def of_alert(cls, alert: Alert) -> Features:
        return cls.of(alert.labels, alert.annotations)

    @classmethod
    def of_incident(cls, incident: IncidentRecord) -> Features:
        labels = incident.labels if incident.labels else {"alertname": incident.alert_name}
        return cls.of(labels, incident.annotations)

    def key(self) -> tuple[frozenset[tuple[str, str]], frozenset[str]]:
        return frozenset(self.pairs), self.words


def score(alert: Features, incident: Features) -> float:
    """The ``similarity-v1`` score of an alert against one past incident, 0..1.

    A pair weighs the same on both sides, so the union's weight is the two totals less
    the shared weight (and likewise for word counts): no set is built per comparison."""
    shared = sum(weight for pair, weight in alert.pairs.items() if pair in incident.pairs)
    return _combined(alert, incident, shared, len(alert.words & incident.words))


def _combined(alert: Features, incident: Features, shared: float, common: int) -> float:
    """The score from the weight of the label pairs and the number of words both share."""
    value = _label_score(alert, incident, shared)
    if alert.words and incident.words:
        words = common / (len(alert.words) + len(incident.words) - common)
        value = LABEL_SHARE * value + TEXT_SHARE * words
    return round(value, 6)


def similarity(alert: Alert, incident: IncidentRecord) -> float:
    """:func:`score` of an alert and an incident as recorded."""
    return score(Features.of_alert(alert), Features.of_incident(incident))


@dataclass
class _Group:
    """Past incidents with the same features, in the order they started."""

    features: Features
    incidents: list[IncidentRecord]

    def latest_before(self, at: str) -> IncidentRecord | None:
        if self.incidents[-1].started_at < at:  # deciding live: every incident is in the past
            return self.incidents[-1]
        index = bisect.bisect_left(self.incidents, at, key=lambda incident: incident.started_at)
        return self.incidents[index - 1] if index else None


_SLACK = 1e-6  # scores are rounded to 6 places: a bound this close to the best is not below it


def _label_score(alert: Features, incident: Features, shared: float) -> float:
    union = alert.weight + incident.weight - shared
    return 1.0 if union == 0 else shared / union


@dataclass
class _Nearest:
    """The best-scoring incident so far (the latest one on a tie), and how many were scored."""

    best: float = 0.0
    found: IncidentRecord | None = None
    compared: int = 0

    def consider(self, group: _Group, mine: Features, shared: float, at: str) -> None:
        incident = group.latest_before(at)
        if incident is None:
            return
        self.compared += 1
        value = _combined(mine, group.features, shared, len(mine.words & group.features.words))
        found = self.found
        later = found is not None and value == self.best and incident.started_at > found.started_at
        if found is None or value > self.best or later:
            self.best, self.found = value, incident


class HistoryNovelty:
    """:class:`NoveltySource` comparing an alert with the incidents of a history.

    Incidents are grouped by their features, and each label pair and word points to the
    groups that have it (an inverted index). An alert is scored only against the groups
    that share at least one pair or word with it, from weights summed along those lists:
    every other group scores 0 and cannot be the nearest. So an alert costs the length of
    its pairs' and words' lists, not one comparison per group, which matters when
    incidents differ by a pod name in their text and nearly every one is its own group.
    """

    def __init__(self, history: IncidentHistory, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.history = history
        self.threshold = threshold
        self._groups: dict[object, int] = {}  # features' key -> index in _group_list
        self._group_list: list[_Group] = []
        self._by_pair: dict[tuple[str, str], list[int]] = {}
        self._by_word: dict[str, list[int]] = {}
        self._unlabelled: list[int] = []  # groups whose every label is left out: weight 0
        self._last_id = 0
        self._lock = threading.Lock()

    def assess(self, alert: Alert, now: datetime) -> NoveltyFacts:
        [facts] = self.assess_many([alert], now)
        return facts

    def assess_many(self, alerts: Sequence[Alert], now: datetime) -> list[NoveltyFacts]:
        """Each alert against the history as it stands: the index is brought up to date once."""
        mine, at = [Features.of_alert(alert) for alert in alerts], _rfc3339(now)
        with self._lock:
            try:
                self._refresh()
            except HistoryError as exc:
                return [NoveltyFacts.worst_case(str(exc), self.threshold) for _ in alerts]
            return [self._nearest(features, at) for features in mine]

    def _label_overlaps(self, mine: Features) -> dict[int, float]:
        """For each group sharing a label pair with ``mine``: the shared pairs' weight."""
        shared: dict[int, float] = {}
        for pair, weight in mine.pairs.items():
            for index in self._by_pair.get(pair, ()):
                shared[index] = shared.get(index, 0) + weight
        if not mine.pairs:  # two empty label sets are alike (label score 1)
            for index in self._unlabelled:
                shared.setdefault(index, 0)
        return shared

    def _nearest(self, mine: Features, at: str) -> NoveltyFacts:
        """The best score, visiting groups by their label score, highest first, and stopping
        where even identical text could not reach the best so far; groups that share no
        label (text alone, at most ``TEXT_SHARE``) are visited only when that could matter."""
        nearest = _Nearest()
        shared = self._label_overlaps(mine)
        # a heap, not a sort: usually only the first few are visited
        ranked = [(-_label_score(mine, self._group_list[i].features, w), i) for i, w in shared.items()]
        heapq.heapify(ranked)
        while ranked:
            negative, index = heapq.heappop(ranked)
            if (LABEL_SHARE * -negative + TEXT_SHARE if mine.words else -negative) + _SLACK < nearest.best:
                break
            nearest.consider(self._group_list[index], mine, shared[index], at)
        if mine.words and nearest.best <= TEXT_SHARE + _SLACK:
            by_text = {i for word in mine.words for i in self._by_word.get(word, ()) if i not in shared}
            for index in sorted(by_text):
                nearest.consider(self._group_list[index], mine, 0, at)
        found = nearest.found if nearest.best > 0 else None
        # an incident that shares nothing with the alert is not "nearest" in any useful sense
        return NoveltyFacts(
            score=nearest.best, threshold=self.threshold, nearest=found, compared=nearest.compared
        )

    def _refresh(self) -> None:
        """Add the incidents recorded since the last call to the index. Raises :class:`HistoryError`."""
        for incident in self.history.incidents_since(self._last_id):
            features = Features.of_incident(incident)
            index = self._groups.get(features.key())
            if index is None:
                index = self._add_group(features)
            group = self._group_list[index]
            bisect.insort(group.incidents, incident, key=lambda i: (i.started_at, i.id))
            self._last_id = max(self._last_id, incident.id)

    def _add_group(self, features: Features) -> int:
        index = len(self._group_list)
        self._group_list.append(_Group(features, []))
        self._groups[features.key()] = index
        for pair in features.pairs:
            self._by_pair.setdefault(pair, []).append(index)
        for word in features.words:
            self._by_word.setdefault(word, []).append(index)
        if not features.pairs:
            self._unlabelled.append(index)
        return index


def _rfc3339(moment: datetime) -> str:
    """``2026-11-26T12:00:00Z``, as history stores times (so text order is time order)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
