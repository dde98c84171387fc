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
triggers contains {
	"id": "context_missing",
	"ceiling": 1,
	"field": field,
	"message": sprintf("%s %s", [field, problem]),
} if {
	not _well_formed
	some field, spec in _fields
	problem := _field_problem(object.get(_doc, spec.path, null), spec)
}

# Every field of the input document: where it is, its kind, and whether it must be present.
_fields := {
	"now": {"path": ["now"], "kind": "timestamp", "required": true},
	"alert.name": {"path": ["alert", "name"], "kind": "string", "required": true},
	"alert.fingerprint": {"path": ["alert", "fingerprint"], "kind": "string", "required": true},
	"alert.severity": {"path": ["alert", "severity"], "kind": "string", "required": true},
	"alert.labels": {"path": ["alert", "labels"], "kind": "object", "required": false},
	"ai.available": {"path": ["ai", "available"], "kind": "boolean", "required": true},
	"ai.confidence": {"path": ["ai", "confidence"], "kind": "fraction", "required": true},
	"ai.false_positive_rate_7d": {"path": ["ai", "false_positive_rate_7d"], "kind": "fraction", "required": true},
	"pattern.id": {"path": ["pattern", "id"], "kind": "string", "required": true},
	"pattern.known": {"path": ["pattern", "known"], "kind": "boolean", "required": true},
	"pattern.occurrences": {"path": ["pattern", "occurrences"], "kind": "count", "required": true},
	"pattern.consistent_outcomes": {"path": ["pattern", "consistent_outcomes"], "kind": "boolean", "required": true},
	"pattern.last_suboptimal_at": {"path": ["pattern", "last_suboptimal_at"], "kind": "timestamp", "required": false},
	"action.type": {"path": ["action", "type"], "kind": "string", "required": true},
	"action.target.kind": {"path": ["action", "target", "kind"], "kind": "string", "required": true},
	"action.target.namespace": {"path": ["action", "target", "namespace"], "kind": "string", "required": true},
	"action.target.name": {"path": ["action", "target", "name"], "kind": "string", "required": true},
	"action.target.environment": {"path": ["action", "target", "environment"], "kind": "string", "required": true},
	"action.target.hpa_managed": {"path": ["action", "target", "hpa_managed"], "kind": "boolean", "required": true},
	"action.idempotent": {"path": ["action", "idempotent"], "kind": "boolean", "required": true},
	"action.reversible": {"path": ["action", "reversible"], "kind": "boolean", "required": true},
	"action.rollback_seconds": {"path": ["action", "rollback_seconds"], "kind": "seconds", "required": true},
	"action.replicas_delta": {"path": ["action", "replicas_delta"], "kind": "integer", "required": true},
	"action.production_impact": {"path": ["action", "production_impact"], "kind": "boolean", "required": true},
	"blast_radius.services": {"path": ["blast_radius", "services"], "kind": "count", "required": true},
	"blast_radius.namespaces": {"path": ["blast_radius", "namespaces"], "kind": "names", "required": true},
	"blast_radius.replica_fraction": {"path": ["blast_radius", "replica_fraction"], "kind": "fraction", "required": true},
	"blast_radius.traffic_fraction": {"path": ["blast_radius", "traffic_fraction"], "kind": "fraction", "required": false},
	"blast_radius.shared_infrastructure": {
		"path": ["blast_radius", "shared_infrastructure"],
		"kind": "boolean", "required": true,
	},
	"blast_radius.stateless": {"path": ["blast_radius", "stateless"], "kind": "boolean", "required": true},
	"error_budget.remaining": {"path": ["error_budget", "remaining"], "kind": "budget", "required": true},
	"regulatory.regulated": {"path": ["regulatory", "regulated"], "kind": "boolean", "required": true},
	"regulatory.frameworks": {"path": ["regulatory", "frameworks"], "kind": "strings", "required": false},
	"guardrails.kill_switch": {"path": ["guardrails", "kill_switch"], "kind": "boolean", "required": true},
	"guardrails.autonomous_actions_in_window": {
		"path": ["guardrails", "autonomous_actions_in_window"],
		"kind": "count", "required": true,
	},
}

# Whether every field of _fields holds what its kind allows, checked path by path: the same
# facts as the table, without iterating it, so the loop above that names each bad field runs
# only when something is wrong. Nearly every input is well formed, so this check runs on
# every decision: it reads each field once and tests it in place, section by section, with
# no function call per field. The policy tests hold this rule to the table, field by field.
_well_formed if {
	_timestamp(input.now)
	_booleans_well_formed
	_alert_well_formed
	_ai_well_formed
	_pattern_well_formed
	_action_well_formed
	_blast_radius_well_formed

	# error budget at most 1, frameworks absent, null or a list of strings, and a whole
	# number of autonomous actions of at least 0
	remaining := input.error_budget.remaining
	is_number(remaining)
	remaining <= 1
	_optional_strings(object.get(input.regulatory, "frameworks", null))
	actions_in_window := input.guardrails.autonomous_actions_in_window
	is_number(actions_in_window)
	actions_in_window >= 0
	floor(actions_in_window) == actions_in_window
}

# every true-or-false field holds true or false
_booleans_well_formed if {
	object.subset({true, false}, {
		input.ai.available,
		input.pattern.known,
		input.pattern.consistent_outcomes,
		input.action.target.hpa_managed,
		input.action.idempotent,
		input.action.reversible,
		input.action.production_impact,
		input.blast_radius.shared_infrastructure,
		input.blast_radius.stateless,
		input.regulatory.regulated,
		input.guardrails.kill_switch,
	})
}

# non-empty strings, and labels absent, null or an object
_alert_well_formed if {
	name := input.alert.name
	is_string(name)
	name != ""
	fingerprint := input.alert.fingerprint
	is_string(fingerprint)
	fingerprint != ""
	severity := input.alert.severity
	is_string(severity)
	severity != ""
	_optional_object(object.get(input.alert, "labels", null))
}

# fractions from 0 to 1
_ai_well_formed if {
	confidence := input.ai.confidence
	is_number(confidence)
	confidence >= 0
	confidence <= 1
	rate := input.ai.false_positive_rate_7d
	is_number(rate)
	rate >= 0
	rate <= 1
}

# a non-empty id, a whole number of occurrences of at least 0, and the last suboptimal
# outcome absent, null or a timestamp
_pattern_well_formed if {
	id := input.pattern.id
	is_string(id)
	id != ""
	occurrences := input.pattern.occurrences
	is_number(occurrences)
	occurrences >= 0
	floor(occurrences) == occurrences
	_optional_timestamp(object.get(input.pattern, "last_suboptimal_at", null))
}

# non-empty strings, seconds of at least 0, and a whole number of replicas
_action_well_formed if {
	type := input.action.type
	is_string(type)
	type != ""
	kind := input.action.target.kind
	is_string(kind)
	kind != ""
	namespace := input.action.target.namespace
	is_string(namespace)
	namespace != ""
	name := input.action.target.name
	is_string(name)
	name != ""
	environment := input.action.target.environment
	is_string(environment)
	environment != ""
	seconds := input.action.rollback_seconds
	is_number(seconds)
	seconds >= 0
	delta := input.action.replicas_delta
	is_number(delta)
	floor(delta) == delta
}

# a whole number of services of at least 0, a non-empty list of namespace names, a replica
# fraction from 0 to 1, and a traffic fraction absent, null or from 0 to 1
_blast_radius_well_formed if {
	services := input.blast_radius.services
	is_number(services)
	services >= 0
	floor(services) == services
	_names(input.blast_radius.namespaces)
	fraction := input.blast_radius.replica_fraction
	is_number(fraction)
	fraction >= 0
	fraction <= 1
	_optional_fraction(object.get(input.blast_radius, "traffic_fraction", null))
}

# How a message names what each kind of field must hold.
_kinds := {
	"string": "a non-empty string",
	"boolean": "true or false",
	"fraction": "a number from 0 to 1",
	"count": "a whole number of at least 0",
	"integer": "a whole number",
	"seconds": "a number of seconds of at least 0",
	"budget": "a number of at most 1",
	"timestamp": "an RFC 3339 timestamp",
	"object": "an object",
	"strings": "a list of strings",
	"names": "a non-empty list of strings",
}

# each kind of _kinds as a function of the value
_string(value) if {
	is_string(value)
	value != ""
}

_fraction(value) if {
	is_number(value)
	value >= 0
	value <= 1
}

_count(value) if {
	is_number(value)
	value >= 0
	floor(value) == value
}

_integer(value) if {
	is_number(value)
	floor(value) == value
}

_seconds(value) if {
	is_number(value)
	value >= 0
}

_budget(value) if {
	is_number(value)
	value <= 1
}

_timestamp(value) if {
	is_string(value)
	_is_timestamp(value)
}

_strings(value) if {
	is_array(value)
	every item in value {
		is_string(item)
	}
}

_names(value) if {
	_strings(value)
	count(value) > 0
}

# an optional field may be absent or null
_optional_object(null)

_optional_object(value) if is_object(value)

_optional_timestamp(null)

_optional_timestamp(value) if _timestamp(value)

_optional_fraction(null)

_optional_fraction(value) if _fraction(value)

_optional_strings(null)

_optional_strings(value) if _strings(value)

# what is wrong with a field's value, undefined when nothing is
_field_problem(null, spec) := "is missing or null" if spec.required

_field_problem(value, spec) := sprintf("must be %s, got %s", [_kinds[spec.kind], _quote(value)]) if {
	value != null
	not _valid(spec.kind, value)
}

# whether a value is what its kind of field may hold; OPA indexes the kind, so a check
# evaluates one definition, not all of them. _well_formed tests the same kinds in place; the
# policy tests fail if the two disagree on any field for any of a range of probe values.
_valid("string", value) if _string(value)

_valid("boolean", value) if is_boolean(value)

_valid("fraction", value) if _fraction(value)

_valid("count", value) if _count(value)

_valid("integer", value) if _integer(value)

_valid("seconds", value) if _seconds(value)

_valid("budget", value) if _budget(value)

_valid("timestamp", value) if _timestamp(value)

_valid("object", value) if is_object(value)

_valid("strings", value) if _strings(value)

_valid("names", value) if _names(value)

# a builtin error is undefined inside a function, so a bad timestamp is not valid
_is_timestamp(value) if is_number(time.parse_rfc3339_ns(value))

# a short JSON rendering of a value for messages
_quote(value) := substring(json.marshal(value), 0, 80)
