"""Properties of the policy, checked against a real OPA with generated inputs.

* Making any single dimension riskier never raises the level (monotonicity).
* The level always equals the lowest listed ceiling, 4 when none is listed.
* Any JSON object gets a defined, schema-valid decision; a valid input with one
  required field removed is never above level 1.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyagent.contract import Decision, schema
from pyagent.opa import OpaClient

EXAMPLES = 2000

Doc = dict[str, Any]

# values on and around every boundary of the trigger table, mixed with the whole range
fractions = st.one_of(
    st.sampled_from([0.0, 0.2, 0.2001, 0.25, 0.5999, 0.6, 0.75, 0.7501, 0.8499, 0.85, 1.0]),
    st.floats(min_value=0, max_value=1, allow_nan=False),
)
budgets = st.one_of(
    st.sampled_from([-0.5, 0.0, 0.2499, 0.25, 0.5, 0.75, 0.7501, 1.0]),
    st.floats(min_value=-1, max_value=1, allow_nan=False),
)
occurrences = st.one_of(st.sampled_from([0, 1, 2, 9, 10, 11]), st.integers(min_value=0, max_value=500))
timestamps = st.sampled_from(
    [
        "2026-09-01T00:00:00Z",
        "2026-10-15T08:30:00Z",
        "2026-11-26T12:00:00Z",
        "2026-12-30T09:00:00Z",
        "2027-01-20T00:00:00Z",
        "2027-02-16T00:00:00Z",
    ]
)
namespace_names = st.sampled_from(["shop", "payments", "search", "monitoring", "argocd"])

# each level-4 action with a pattern it is qualified for and the target facts its limits ask for
QUALIFIED: dict[str, tuple[str, Doc, Doc]] = {
    "rolling_restart": ("oom-memory-leak", {"kind": "Deployment", "hpa_managed": False}, {}),
    "scale_up": ("cpu-saturation-hpa", {"kind": "Deployment", "hpa_managed": True}, {"replicas_delta": 2}),
    "certificate_rotation": ("certificate-expiry", {"environment": "staging"}, {}),
    "log_pipeline_restart": ("log-pipeline-stalled", {}, {"production_impact": False}),
}


# how often a field leaves its safe value: often never, so that many inputs reach levels
# 3 and 4, where a rule that wrongly raised the level would show
risk_rates = st.sampled_from([0.0, 0.0, 0.0, 0.03, 0.1, 0.3])


@st.composite
def inputs(draw: st.DrawFn) -> Doc:
    """A valid policy input: every field present and of its type, values anywhere in range."""
    rate = draw(risk_rates)

    def usually(safe: Any, risky: st.SearchStrategy[Any]) -> Any:
        return draw(risky) if draw(st.floats(min_value=0, max_value=1)) < rate else safe

    action_type = usually(
        draw(st.sampled_from(sorted(QUALIFIED))),
        st.sampled_from(
            [
                "rollback_deployment",
                "increase_memory_limit",
                "drain_node",
                "restart_container",
                "delete_namespace",
            ]
        ),
    )
    pattern_id, target_facts, action_facts = QUALIFIED.get(action_type, ("crashloop-bad-config", {}, {}))
    namespaces = usually(["shop"], st.lists(namespace_names, min_size=1, max_size=3))
    regulated = usually(False, st.just(True))
    target: Doc = {
        "kind": "Deployment",
        "namespace": namespaces[0],
        "name": "checkout",
        "environment": "production",
        "hpa_managed": False,
        **target_facts,
    }
    action: Doc = {
        "type": action_type,
        "target": target,
        "idempotent": True,
        "reversible": True,
        "rollback_seconds": 120,
        "replicas_delta": 0,
        "production_impact": True,
        **action_facts,
    }
    action_risks: list[tuple[str, st.SearchStrategy[Any]]] = [
        ("idempotent", st.just(False)),
        ("reversible", st.just(False)),
        ("rollback_seconds", st.sampled_from([0, 300, 301, 900])),
        ("replicas_delta", st.integers(min_value=0, max_value=4)),
        ("production_impact", st.booleans()),
    ]
    for key, risky in action_risks:
        action[key] = usually(action[key], risky)
    target_risks: list[tuple[str, st.SearchStrategy[Any]]] = [
        ("kind", st.just("StatefulSet")),
        ("environment", st.sampled_from(["production", "staging"])),
        ("hpa_managed", st.booleans()),
    ]
    for key, risky in target_risks:
        target[key] = usually(target[key], risky)
    return {
        "now": usually("2026-11-26T12:00:00Z", timestamps),
        "alert": {
            "name": "KubePodOOMKilled",
            "fingerprint": "c7f3a1b2d4e5f601",
            "severity": "critical",
            "labels": {},
        },
        "ai": {
            "available": usually(True, st.just(False)),
            "confidence": usually(0.91, fractions),
            "false_positive_rate_7d": usually(0.05, fractions),
        },
        "pattern": {
            "id": usually(pattern_id, st.sampled_from(["process-deadlock", "crashloop-bad-config"])),
            "known": usually(True, st.just(False)),
            "occurrences": usually(12, occurrences),
            "consistent_outcomes": usually(True, st.just(False)),
            "last_suboptimal_at": usually(None, timestamps),
        },
        "action": action,
        "blast_radius": {
            "services": usually(1, st.integers(min_value=0, max_value=4)),
            "namespaces": namespaces,
            "replica_fraction": usually(0.2, fractions),
            "traffic_fraction": draw(fractions),
            "shared_infrastructure": usually(False, st.just(True)),
            "stateless": usually(True, st.just(False)),
        },
        "error_budget": {"remaining": usually(0.9, budgets)},
        "regulatory": {"regulated": regulated, "frameworks": ["pci-dss"] if regulated else []},
        "guardrails": {
            "kill_switch": usually(False, st.just(True)),
            "autonomous_actions_in_window": usually(0, st.integers(min_value=0, max_value=5)),
        },
    }


def _with(doc: Doc, path: str, value: Callable[[Any], Any]) -> Doc:
    """A copy of ``doc`` with the field at a dotted path replaced by a function of its old value."""
    out = copy.deepcopy(doc)
    *parents, leaf = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    node[leaf] = value(node[leaf])
    return out


# dimension -> (field, its values from safest to riskiest where they are ordered, and
# whether risk grows with the value). Boolean dimensions list their safe then risky value.
DIMENSIONS: dict[str, tuple[str, list[Any], bool]] = {
    "lower confidence": ("ai.confidence", [1.0, 0.85, 0.8499, 0.6, 0.5999, 0.2, 0.0], False),
    "higher false-positive rate": ("ai.false_positive_rate_7d", [0.0, 0.2, 0.2001, 0.5, 1.0], True),
    "fewer occurrences": ("pattern.occurrences", [50, 11, 10, 9, 2, 1, 0], False),
    "larger replica fraction": ("blast_radius.replica_fraction", [0.0, 0.2, 0.2001, 0.5, 1.0], True),
    "more services": ("blast_radius.services", [0, 1, 2, 3], True),
    "less budget": ("error_budget.remaining", [1.0, 0.7501, 0.75, 0.5, 0.25, 0.2499, 0.0, -0.5], False),
    "slower rollback": ("action.rollback_seconds", [0, 120, 299, 300, 301, 900], True),
    "more autonomous actions": ("guardrails.autonomous_actions_in_window", [0, 1, 2, 3, 4], True),
    "regulated": ("regulatory.regulated", [False, True], True),
    "irreversible": ("action.reversible", [True, False], False),
    "not idempotent": ("action.idempotent", [True, False], False),
    "kill switch": ("guardrails.kill_switch", [False, True], True),
    "novel": ("pattern.known", [True, False], False),
    "inconsistent": ("pattern.consistent_outcomes", [True, False], False),
    "shared infrastructure": ("blast_radius.shared_infrastructure", [False, True], True),
    "AI unavailable": ("ai.available", [True, False], False),
    "more namespaces": ("blast_radius.namespaces", [], True),
}


def _ladder(path: str, values: list[Any], rising: bool, start: Any, extra: Any) -> list[Any]:
    """``start``, then every listed value and ``extra`` that is riskier, safest first."""
    if path == "blast_radius.namespaces":
        return [start, [*start, "payments"], [*start, "payments", "search"]]
    if isinstance(start, bool):
        return [start, values[1]]
    candidates = values if extra is None else [*values, extra]
    riskier = {v for v in candidates if (v > start if rising else v < start)}
    return [start, *sorted(riskier, reverse=not rising)]


def _constant(value: Any) -> Callable[[Any], Any]:
    return lambda _old: value


@st.composite
def ladders(draw: st.DrawFn) -> tuple[str, list[Doc]]:
    """A dimension, and a valid input with that dimension made riskier step by step.

    The dimension starts anywhere in its range (boundaries included) while the other
    fields are usually safe, and the steps visit every boundary beyond the start.
    """
    name = draw(st.sampled_from(sorted(DIMENSIONS)))
    path, values, rising = DIMENSIONS[name]
    doc = draw(inputs())
    if path == "blast_radius.namespaces":
        start, extra = doc["blast_radius"]["namespaces"], None
    elif isinstance(values[0], float):
        anywhere = st.floats(min(values), max(values))
        start, extra = draw(st.sampled_from(values) | anywhere), draw(anywhere)
    else:
        start, extra = draw(st.sampled_from(values)), None
    steps = []
    for value in _ladder(path, values, rising, start, extra):
        step = _with(doc, path, _constant(value))
        if path == "regulatory.regulated":
            step["regulatory"]["frameworks"] = ["pci-dss"] if value else []
        steps.append(step)
    return name, steps


def _lowest_ceiling(decision: Decision) -> int:
    return min([t.ceiling for t in decision.triggers] + [4])


def test_riskier_never_raises_the_level(opa: OpaClient) -> None:
    """For 2,000 random valid inputs, each step that makes one dimension riskier never raises the level."""
    seen: list[int] = []

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ladders())
    def check(ladder: tuple[str, list[Doc]]) -> None:
        name, steps = ladder
        levels = []
        for step in steps:
            decision = opa.decide(step)
            assert decision.level == _lowest_ceiling(decision)
            levels.append(decision.level)
        assert levels == sorted(levels, reverse=True), f"{name} raised the level: {levels}"
        seen.append(levels[0])

    check()
    assert len(seen) >= EXAMPLES
    # the inputs start at every level, so a rule that wrongly raised one would show
    assert set(seen) == {0, 1, 2, 3, 4}


def _required_paths(node: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in node.get("required", []):
        path = f"{prefix}{key}"
        out.append(path)
        child = node["properties"][key]
        if child.get("type") == "object" and "properties" in child:
            out.extend(_required_paths(child, path + "."))
    return out


REQUIRED = _required_paths(schema("input"))


def test_schema_required_fields_are_the_policys() -> None:
    """The schema lists as required exactly the leaf fields the policy names when missing."""
    assert "ai.confidence" in REQUIRED
    assert "pattern.last_suboptimal_at" not in REQUIRED


@settings(max_examples=300, deadline=None)
@given(inputs(), st.sampled_from(REQUIRED))
def test_a_missing_required_field_is_at_most_assisted(opa: OpaClient, doc: Doc, path: str) -> None:
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    del node[leaf]
    decision = opa.decide(doc)
    assert decision.level <= 1
    assert any(t.id == "context_missing" and (t.field or "").startswith(path) for t in decision.triggers)


scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_values = st.recursive(
    scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object", type(None): "null"}[type(value)]


def _schema_types(path: str) -> set[str]:
    node = schema("input")
    for key in path.split("."):
        node = node["properties"][key]
    declared = node["type"]
    types = {declared} if isinstance(declared, str) else set(declared)
    return {"number" if t == "integer" else t for t in types}


LEAVES = [p for p in REQUIRED if "object" not in _schema_types(p)]


@settings(max_examples=300, deadline=None)
@given(inputs(), st.sampled_from(LEAVES), json_values)
def test_a_mistyped_required_field_is_at_most_assisted(
    opa: OpaClient, doc: Doc, path: str, value: Any
) -> None:
    """Any required field replaced by a value of another JSON type is named, and the level is at most 1."""
    if _json_type(value) in _schema_types(path):
        return
    decision = opa.decide(_with(doc, path, _constant(value)))
    assert decision.level <= 1
    assert any(t.id == "context_missing" and t.field == path for t in decision.triggers)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["now", "ai", "pattern", "action", "alert", "x"]), json_values))
def test_any_json_object_gets_a_valid_decision_at_most_assisted(opa: OpaClient, doc: Doc) -> None:
    decision = opa.decide(doc)  # raises PolicyInvalid unless the result fits the decision schema
    assert decision.level <= 1
