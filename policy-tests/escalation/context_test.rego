package escalation_test

# JSON pointers of every required field of the input document
required := [
	"/now",
	"/alert/name", "/alert/fingerprint", "/alert/severity",
	"/ai/available", "/ai/confidence", "/ai/false_positive_rate_7d",
	"/pattern/id", "/pattern/known", "/pattern/occurrences", "/pattern/consistent_outcomes",
	"/action/type", "/action/target/kind", "/action/target/namespace", "/action/target/name",
	"/action/target/environment", "/action/target/hpa_managed", "/action/idempotent",
	"/action/reversible", "/action/rollback_seconds", "/action/replicas_delta",
	"/action/production_impact",
	"/blast_radius/services", "/blast_radius/namespaces", "/blast_radius/replica_fraction",
	"/blast_radius/shared_infrastructure", "/blast_radius/stateless",
	"/error_budget/remaining",
	"/regulatory/regulated",
	"/guardrails/kill_switch", "/guardrails/autonomous_actions_in_window",
]

# the dotted field name of a JSON pointer
field(pointer) := replace(trim_prefix(pointer, "/"), "/", ".")

missing(decision, pointer) if names_field(decision, pointer, sprintf("%s is missing or null", [field(pointer)]))

test_each_required_field_removed_is_context_missing if {
	every pointer in required {
		missing(data.escalation.decision, pointer) with input as without(pointer)
	}
}

test_each_required_field_null_is_context_missing if {
	every pointer in required {
		missing(data.escalation.decision, pointer) with input as with_value(pointer, null)
	}
}

test_optional_fields_may_be_absent if {
	optional := ["alert/labels", "regulatory/frameworks", "blast_radius/traffic_fraction", "pattern/last_suboptimal_at"]
	d := data.escalation.decision with input as json.remove(base, optional)
	d.level == 4
}

test_empty_input_is_defined_and_assisted if {
	d := data.escalation.decision with input as {}
	d.level == 1
	d.execute == false
	{t.field | some t in fired(d, "context_missing")} == {field(p) | some p in required}
}

test_absent_input_is_defined_and_assisted if {
	d := data.escalation.decision
	d.level == 1
	count(fired(d, "context_missing")) == count(required)
}

test_input_that_is_not_an_object_is_assisted if {
	every doc in ["a string", [1, 2], 42, true, null] {
		data.escalation.decision.level == 1 with input as doc
	}
}

# the decision lists context_missing for the field at pointer with message, and is at most level 1
names_field(decision, pointer, message) if {
	decision.level <= 1
	some t in fired(decision, "context_missing")
	t.field == field(pointer)
	t.message == message
}

test_confidence_as_string_is_context_missing if {
	doc := with_value("/ai/confidence", "0.9")
	d := data.escalation.decision with input as doc
	names_field(d, "/ai/confidence", `ai.confidence must be a number from 0 to 1, got "0.9"`)
}

test_confidence_above_one_is_context_missing if {
	doc := with_value("/ai/confidence", 1.5)
	d := data.escalation.decision with input as doc
	names_field(d, "/ai/confidence", "ai.confidence must be a number from 0 to 1, got 1.5")
}

test_fractional_occurrences_is_context_missing if {
	doc := with_value("/pattern/occurrences", 9.5)
	d := data.escalation.decision with input as doc
	names_field(d, "/pattern/occurrences", "pattern.occurrences must be a whole number of at least 0, got 9.5")
}

test_negative_services_is_context_missing if {
	doc := with_value("/blast_radius/services", -1)
	d := data.escalation.decision with input as doc
	names_field(d, "/blast_radius/services", "blast_radius.services must be a whole number of at least 0, got -1")
}

test_namespaces_as_string_is_context_missing if {
	doc := with_value("/blast_radius/namespaces", "shop")
	d := data.escalation.decision with input as doc
	names_field(d, "/blast_radius/namespaces", `blast_radius.namespaces must be a non-empty list of strings, got "shop"`)
}

test_no_namespaces_is_context_missing if {
	doc := with_value("/blast_radius/namespaces", [])
	d := data.escalation.decision with input as doc
	names_field(d, "/blast_radius/namespaces", "blast_radius.namespaces must be a non-empty list of strings, got []")
}

test_boolean_as_string_is_context_missing if {
	doc := with_value("/guardrails/kill_switch", "false")
	d := data.escalation.decision with input as doc
	names_field(d, "/guardrails/kill_switch", `guardrails.kill_switch must be true or false, got "false"`)
}

test_budget_above_one_is_context_missing if {
	doc := with_value("/error_budget/remaining", 1.2)
	d := data.escalation.decision with input as doc
	names_field(d, "/error_budget/remaining", "error_budget.remaining must be a number of at most 1, got 1.2")
}

test_unreadable_now_is_context_missing if {
	doc := with_value("/now", "yesterday")
	d := data.escalation.decision with input as doc
	names_field(d, "/now", `now must be an RFC 3339 timestamp, got "yesterday"`)
}

test_empty_action_type_is_context_missing if {
	doc := with_value("/action/type", "")
	d := data.escalation.decision with input as doc
	names_field(d, "/action/type", `action.type must be a non-empty string, got ""`)
}

test_negative_rollback_is_context_missing if {
	doc := with_value("/action/rollback_seconds", -5)
	d := data.escalation.decision with input as doc
	names_field(d, "/action/rollback_seconds", "action.rollback_seconds must be a number of seconds of at least 0, got -5")
}

test_fractional_replicas_delta_is_context_missing if {
	doc := with_value("/action/replicas_delta", 1.5)
	d := data.escalation.decision with input as doc
	names_field(d, "/action/replicas_delta", "action.replicas_delta must be a whole number, got 1.5")
}

test_mistyped_optional_alert_labels_is_context_missing if {
	doc := with_value("/alert/labels", ["team"])
	d := data.escalation.decision with input as doc
	names_field(d, "/alert/labels", `alert.labels must be an object, got ["team"]`)
}

test_mistyped_optional_regulatory_frameworks_is_context_missing if {
	doc := with_value("/regulatory/frameworks", "pci-dss")
	d := data.escalation.decision with input as doc
	names_field(d, "/regulatory/frameworks", `regulatory.frameworks must be a list of strings, got "pci-dss"`)
}

test_mistyped_optional_blast_radius_traffic_fraction_is_context_missing if {
	doc := with_value("/blast_radius/traffic_fraction", 5)
	d := data.escalation.decision with input as doc
	names_field(d, "/blast_radius/traffic_fraction", "blast_radius.traffic_fraction must be a number from 0 to 1, got 5")
}

test_mistyped_optional_pattern_last_suboptimal_at_is_context_missing if {
	doc := with_value("/pattern/last_suboptimal_at", 1700000000)
	d := data.escalation.decision with input as doc
	message := "pattern.last_suboptimal_at must be an RFC 3339 timestamp, got 1700000000"
	names_field(d, "/pattern/last_suboptimal_at", message)
}

test_section_of_wrong_type_names_each_field if {
	d := data.escalation.decision with input as with_value("/ai", "unavailable")
	{t.field | some t in fired(d, "context_missing")} == {"ai.available", "ai.confidence", "ai.false_positive_rate_7d"}
	d.level == 1
}

test_long_values_are_cut_in_messages if {
	d := data.escalation.decision with input as with_value("/alert/name", numbers.range(1, 1000))
	[t] := fired(d, "context_missing")
	shown := substring(json.marshal(numbers.range(1, 1000)), 0, 80)
	t.message == sprintf("alert.name must be a non-empty string, got %s", [shown])
}

test_namespaces_with_a_non_string_is_context_missing if {
	doc := with_value("/blast_radius/namespaces", ["shop", 5])
	d := data.escalation.decision with input as doc
	message := `blast_radius.namespaces must be a non-empty list of strings, got ["shop",5]`
	names_field(d, "/blast_radius/namespaces", message)
}
