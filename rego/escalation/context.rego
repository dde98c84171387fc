package escalation

# METADATA
# title: Context missing
# description: >-
#   A required input field is absent, null, of the wrong type or out of its range, or an
#   optional field is present with the wrong type. The decision names the field. Without
#   the facts the policy cannot judge risk, so no action is recommended.
# custom:
#   id: context_missing
#   ceiling: 1
#   source: >-
#     LEVEL 0 — MANUAL ... Appropriate when: AI system is unavailable, untrusted, or context
#     is outside AI training distribution entirely.
triggers contains object.union(
	_trigger(rego.metadata.rule(), sprintf("%s %s", [field, problem])),
	{"field": field},
) if {
	some field, spec in _fields
	problem := _field_problem(object.get(_doc, split(field, "."), null), spec)
}

# Every field of the input document: its kind, and whether it must be present.
_fields := {
	"now": {"kind": "timestamp", "required": true},
	"alert.name": {"kind": "string", "required": true},
	"alert.fingerprint": {"kind": "string", "required": true},
	"alert.severity": {"kind": "string", "required": true},
	"alert.labels": {"kind": "object", "required": false},
	"ai.available": {"kind": "boolean", "required": true},
	"ai.confidence": {"kind": "fraction", "required": true},
	"ai.false_positive_rate_7d": {"kind": "fraction", "required": true},
	"pattern.id": {"kind": "string", "required": true},
	"pattern.known": {"kind": "boolean", "required": true},
	"pattern.occurrences": {"kind": "count", "required": true},
	"pattern.consistent_outcomes": {"kind": "boolean", "required": true},
	"pattern.last_suboptimal_at": {"kind": "timestamp", "required": false},
	"action.type": {"kind": "string", "required": true},
	"action.target.kind": {"kind": "string", "required": true},
	"action.target.namespace": {"kind": "string", "required": true},
	"action.target.name": {"kind": "string", "required": true},
	"action.target.environment": {"kind": "string", "required": true},
	"action.target.hpa_managed": {"kind": "boolean", "required": true},
	"action.idempotent": {"kind": "boolean", "required": true},
	"action.reversible": {"kind": "boolean", "required": true},
	"action.rollback_seconds": {"kind": "seconds", "required": true},
	"action.replicas_delta": {"kind": "integer", "required": true},
	"action.production_impact": {"kind": "boolean", "required": true},
	"blast_radius.services": {"kind": "count", "required": true},
	"blast_radius.namespaces": {"kind": "names", "required": true},
	"blast_radius.replica_fraction": {"kind": "fraction", "required": true},
	"blast_radius.traffic_fraction": {"kind": "fraction", "required": false},
	"blast_radius.shared_infrastructure": {"kind": "boolean", "required": true},
	"blast_radius.stateless": {"kind": "boolean", "required": true},
	"error_budget.remaining": {"kind": "budget", "required": true},
	"regulatory.regulated": {"kind": "boolean", "required": true},
	"regulatory.frameworks": {"kind": "strings", "required": false},
	"guardrails.kill_switch": {"kind": "boolean", "required": true},
	"guardrails.autonomous_actions_in_window": {"kind": "count", "required": true},
}

# what is wrong with a field's value, undefined when nothing is
_field_problem(value, spec) := "is missing or null" if {
	value == null
	spec.required
} else := sprintf("must be %s, got %s", [_kind_text(spec.kind), _quote(value)]) if {
	value != null
	not _kind_ok(value, spec.kind)
}

_kind_ok(value, "string") if {
	is_string(value)
	value != ""
}

_kind_ok(value, "boolean") if is_boolean(value)

_kind_ok(value, "fraction") if {
	is_number(value)
	value >= 0
	value <= 1
}

_kind_ok(value, "count") if {
	is_number(value)
	value >= 0
	floor(value) == value
}

_kind_ok(value, "integer") if {
	is_number(value)
	floor(value) == value
}

_kind_ok(value, "seconds") if {
	is_number(value)
	value >= 0
}

_kind_ok(value, "budget") if {
	is_number(value)
	value <= 1
}

_kind_ok(value, "timestamp") if {
	is_string(value)
	is_number(time.parse_rfc3339_ns(value))
}

_kind_ok(value, "object") if is_object(value)

_kind_ok(value, "strings") if _all_strings(value)

_kind_ok(value, "names") if {
	_all_strings(value)
	count(value) > 0
}

_kind_text("string") := "a non-empty string"

_kind_text("boolean") := "true or false"

_kind_text("fraction") := "a number from 0 to 1"

_kind_text("count") := "a whole number of at least 0"

_kind_text("integer") := "a whole number"

_kind_text("seconds") := "a number of seconds of at least 0"

_kind_text("budget") := "a number of at most 1"

_kind_text("timestamp") := "an RFC 3339 timestamp"

_kind_text("object") := "an object"

_kind_text("strings") := "a list of strings"

_kind_text("names") := "a non-empty list of strings"

_all_strings(value) if {
	is_array(value)
	every item in value {
		is_string(item)
	}
}

# a short JSON rendering of a value for messages
_quote(value) := substring(json.marshal(value), 0, 80)
