# METADATA
# title: Tests of the escalation policy
# description: >-
#   Inputs are built by small helpers that override one field of a known-good input
#   (DESIGN.md's example, which is level 4 with the shipped qualifications).
package escalation_test

# DESIGN.md's example input: level 4 with the shipped qualification for oom-memory-leak.
base := {
	"now": "2026-11-26T12:00:00Z",
	"alert": {
		"name": "KubePodOOMKilled",
		"fingerprint": "c7f3a1b2d4e5f601",
		"severity": "critical",
		"labels": {},
	},
	"ai": {"available": true, "confidence": 0.91, "false_positive_rate_7d": 0.05},
	"pattern": {
		"id": "oom-memory-leak",
		"known": true,
		"occurrences": 12,
		"consistent_outcomes": true,
		"last_suboptimal_at": null,
	},
	"action": {
		"type": "rolling_restart",
		"target": {
			"kind": "Deployment",
			"namespace": "shop",
			"name": "checkout",
			"environment": "production",
			"hpa_managed": false,
		},
		"idempotent": true,
		"reversible": true,
		"rollback_seconds": 120,
		"replicas_delta": 0,
		"production_impact": true,
	},
	"blast_radius": {
		"services": 1,
		"namespaces": ["shop"],
		"replica_fraction": 0.2,
		"traffic_fraction": 0.05,
		"shared_infrastructure": false,
		"stateless": true,
	},
	"error_budget": {"remaining": 0.8},
	"regulatory": {"regulated": false, "frameworks": []},
	"guardrails": {"kill_switch": false, "autonomous_actions_in_window": 0},
}

# base with the field at a JSON pointer (e.g. "/ai/confidence") set to value
with_value(pointer, value) := json.patch(base, [{"op": "add", "path": pointer, "value": value}])

# base with several fields set: {pointer: value}
with_values(values) := json.patch(base, [patch |
	some pointer, value in values
	patch := {"op": "add", "path": pointer, "value": value}
])

# base without the field at a JSON pointer
without(pointer) := json.patch(base, [{"op": "remove", "path": pointer}])

# ids of the triggers a decision lists
ids(decision) := {t.id | some t in decision.triggers}

# the triggers a decision lists with the given id
fired(decision, id) := [t | some t in decision.triggers; t.id == id]

# the decision lists exactly one trigger with this id, and the level is at most its ceiling
fires(decision, id) if {
	[t] := fired(decision, id)
	decision.level <= t.ceiling
}

# one qualification for base's action and pattern, qualified at the given time
qualified_at(ts) := [{
	"action": "rolling_restart",
	"pattern": "oom-memory-leak",
	"qualified_at": ts,
	"approved_by": ["SRE Lead"],
}]
