package escalation_test

# ai_unavailable

test_ai_unavailable_is_manual if {
	doc := with_value("/ai/available", false)
	fires(data.escalation.decision, "ai_unavailable") with input as doc
}

test_ai_available_is_not_manual if not "ai_unavailable" in ids(data.escalation.decision) with input as base

# confidence_low and confidence_below_autonomous

test_confidence_0_5999_is_assisted if {
	d := data.escalation.decision with input as with_value("/ai/confidence", 0.5999)
	fires(d, "confidence_low")
	d.level == 1
	fired(d, "confidence_low")[0].message == "composite confidence 0.5999 is below 0.6"
}

test_confidence_0_60_is_supervised_not_assisted if {
	d := data.escalation.decision with input as with_value("/ai/confidence", 0.6)
	not "confidence_low" in ids(d)
	fires(d, "confidence_below_autonomous")
	d.level == 2
}

test_confidence_0_8499_requires_approval if {
	d := data.escalation.decision with input as with_value("/ai/confidence", 0.8499)
	fires(d, "confidence_below_autonomous")
	d.level == 2
}

test_confidence_0_85_may_be_autonomous if {
	d := data.escalation.decision with input as with_value("/ai/confidence", 0.85)
	d.level == 4
	d.triggers == []
}

# false_positive_rate_high

test_false_positive_rate_0_2001_is_assisted if {
	d := data.escalation.decision with input as with_value("/ai/false_positive_rate_7d", 0.2001)
	fires(d, "false_positive_rate_high")
	d.level == 1
}

test_false_positive_rate_0_20_is_fine if {
	doc := with_value("/ai/false_positive_rate_7d", 0.2)
	data.escalation.decision.level == 4 with input as doc
}

# novel_pattern

test_novel_pattern_is_assisted if {
	d := data.escalation.decision with input as with_value("/pattern/known", false)
	fires(d, "novel_pattern")
	fired(d, "novel_pattern")[0].message == `pattern "oom-memory-leak" is novel (pattern.known is false)`
}

# error_budget_exhausted and error_budget_degraded

test_error_budget_0_2499_is_frozen if {
	d := data.escalation.decision with input as with_value("/error_budget/remaining", 0.2499)
	fires(d, "error_budget_exhausted")
	not "error_budget_degraded" in ids(d)
	d.level == 1
}

test_error_budget_negative_is_frozen if {
	doc := with_value("/error_budget/remaining", -0.3)
	fires(data.escalation.decision, "error_budget_exhausted") with input as doc
}

test_error_budget_exactly_0_25_is_degraded if {
	d := data.escalation.decision with input as with_value("/error_budget/remaining", 0.25)
	not "error_budget_exhausted" in ids(d)
	fires(d, "error_budget_degraded")
	d.level == 2
}

test_error_budget_exactly_0_75_is_degraded if {
	d := data.escalation.decision with input as with_value("/error_budget/remaining", 0.75)
	fires(d, "error_budget_degraded")
	d.level == 2
}

test_error_budget_0_7501_is_healthy if {
	doc := with_value("/error_budget/remaining", 0.7501)
	data.escalation.decision.level == 4 with input as doc
}

# early_occurrence and insufficient_history

test_first_occurrence_is_supervised if {
	d := data.escalation.decision with input as with_value("/pattern/occurrences", 0)
	fires(d, "early_occurrence")
	"insufficient_history" in ids(d)
	d.level == 2
}

test_second_occurrence_is_supervised if {
	d := data.escalation.decision with input as with_value("/pattern/occurrences", 1)
	fires(d, "early_occurrence")
	d.level == 2
}

test_two_prior_occurrences_is_not_early if {
	d := data.escalation.decision with input as with_value("/pattern/occurrences", 2)
	not "early_occurrence" in ids(d)
	fires(d, "insufficient_history")
	d.level == 3
}

test_nine_prior_occurrences_is_insufficient if {
	d := data.escalation.decision with input as with_value("/pattern/occurrences", 9)
	fires(d, "insufficient_history")
	d.level == 3
	fired(d, "insufficient_history")[0].message == `pattern "oom-memory-leak" was seen 9 times before, fewer than 10`
}

test_ten_prior_occurrences_is_enough if {
	doc := with_value("/pattern/occurrences", 10)
	data.escalation.decision.level == 4 with input as doc
}

# inconsistent_outcomes

test_inconsistent_outcomes_is_supervised if {
	doc := with_value("/pattern/consistent_outcomes", false)
	fires(data.escalation.decision, "inconsistent_outcomes") with input as doc
}

# blast radius

test_replica_fraction_0_2001_is_supervised if {
	d := data.escalation.decision with input as with_value("/blast_radius/replica_fraction", 0.2001)
	fires(d, "blast_radius_replicas")
	d.level == 2
}

test_replica_fraction_exactly_0_20_is_fine if {
	doc := with_value("/blast_radius/replica_fraction", 0.2)
	data.escalation.decision.level == 4 with input as doc
}

test_two_services_is_supervised if {
	d := data.escalation.decision with input as with_value("/blast_radius/services", 2)
	fires(d, "blast_radius_services")
	d.level == 2
}

test_one_service_is_fine if data.escalation.decision.level == 4 with input as with_value("/blast_radius/services", 1)

test_two_namespaces_is_supervised if {
	d := data.escalation.decision with input as with_value("/blast_radius/namespaces", ["shop", "payments"])
	fires(d, "cross_namespace")
	fired(d, "cross_namespace")[0].message == "the action touches 2 namespaces: payments, shop"
	d.level == 2
}

test_one_namespace_named_twice_is_fine if {
	doc := with_value("/blast_radius/namespaces", ["shop", "shop"])
	data.escalation.decision.level == 4 with input as doc
}

test_shared_infrastructure_is_supervised if {
	d := data.escalation.decision with input as with_value("/blast_radius/shared_infrastructure", true)
	fires(d, "shared_infrastructure")
	d.level == 2
}

# regulated_asset

test_regulated_asset_is_supervised_with_change_record if {
	doc := with_values({"/regulatory/regulated": true, "/regulatory/frameworks": ["pci-dss", "hipaa"]})
	d := data.escalation.decision with input as doc
	fires(d, "regulated_asset")
	fired(d, "regulated_asset")[0].message == "the target is a regulated asset (frameworks: pci-dss, hipaa)"
	d.level == 2
	d.change_record_required == true
}

test_named_framework_makes_asset_regulated if {
	d := data.escalation.decision with input as with_value("/regulatory/frameworks", ["nerc-cip"])
	fires(d, "regulated_asset")
	d.change_record_required == true
}

test_unregulated_asset_needs_no_change_record if {
	data.escalation.decision.change_record_required == false with input as base
}

# irreversible, not_idempotent, slow_rollback, action_not_catalogued

test_irreversible_action_is_supervised if {
	d := data.escalation.decision with input as with_value("/action/reversible", false)
	fires(d, "irreversible")
	fired(d, "irreversible")[0].message == "action.reversible is false"
}

test_catalog_marks_drain_node_irreversible_whatever_the_input_says if {
	doc := with_values({"/action/type": "drain_node", "/action/rollback_seconds": 10})
	d := data.escalation.decision with input as doc
	fires(d, "irreversible")
	fired(d, "irreversible")[0].message == "the action catalog marks drain_node irreversible"
	fired(d, "slow_rollback")[0].message == "the action catalog gives drain_node a rollback of 900 s, over 300 s"
}

test_not_idempotent_action_is_conditional if {
	d := data.escalation.decision with input as with_value("/action/idempotent", false)
	fires(d, "not_idempotent")
	d.level == 3
}

test_catalog_marks_restart_container_not_idempotent if {
	d := data.escalation.decision with input as with_value("/action/type", "restart_container")
	fires(d, "not_idempotent")
	fired(d, "not_idempotent")[0].message == "the action catalog marks restart_container not idempotent"
}

test_rollback_301_seconds_is_conditional if {
	d := data.escalation.decision with input as with_value("/action/rollback_seconds", 301)
	fires(d, "slow_rollback")
	fired(d, "slow_rollback")[0].message == "rollback takes 301 s, over 300 s"
	d.level == 3
}

test_rollback_300_seconds_is_fine if {
	doc := with_value("/action/rollback_seconds", 300)
	data.escalation.decision.level == 4 with input as doc
}

test_uncatalogued_action_is_supervised if {
	d := data.escalation.decision with input as with_value("/action/type", "delete_namespace")
	fires(d, "action_not_catalogued")
	fired(d, "action_not_catalogued")[0].message == `action type "delete_namespace" is not in the action catalog`
	d.level == 2
}

# guardrails

test_kill_switch_is_supervised if {
	d := data.escalation.decision with input as with_value("/guardrails/kill_switch", true)
	fires(d, "kill_switch")
	d.level == 2
}

test_third_autonomous_action_in_window_is_supervised if {
	d := data.escalation.decision with input as with_value("/guardrails/autonomous_actions_in_window", 3)
	fires(d, "autonomous_rate_limit")
	d.level == 2
}

test_second_autonomous_action_in_window_is_fine if {
	data.escalation.decision.level == 4 with input as with_value("/guardrails/autonomous_actions_in_window", 2)
}

test_rate_limit_is_read_from_policy_data if {
	d := data.escalation.decision with input as with_value("/guardrails/autonomous_actions_in_window", 2)
		with data.escalation.policy.autonomous_rate_limit.max_actions as 2
	fires(d, "autonomous_rate_limit")
}

# policy_review_overdue

test_policy_review_due_on_the_review_date_is_not_overdue if {
	doc := with_value("/now", "2027-02-15T23:59:59Z")
	qualifications := qualified_at("2027-01-01T00:00:00Z")
	d := data.escalation.decision with input as doc with data.escalation.qualifications as qualifications
	d.level == 4
}

test_policy_review_past_the_review_date_is_overdue if {
	doc := with_value("/now", "2027-02-16T00:00:00Z")
	qualifications := qualified_at("2027-01-01T00:00:00Z")
	d := data.escalation.decision with input as doc with data.escalation.qualifications as qualifications
	fires(d, "policy_review_overdue")
	fired(d, "policy_review_overdue")[0].message == "the policy's next review date 2027-02-15 has passed"
	d.level == 2
}

test_unreadable_review_date_is_overdue if {
	d := data.escalation.decision with input as base with data.escalation.policy.next_review as "2027-Q1"
	fires(d, "policy_review_overdue")
	fired(d, "policy_review_overdue")[0].message == `the policy's next review date "2027-Q1" cannot be read`
}
