package escalation_test

test_design_example_is_autonomous if {
	d := data.escalation.decision with input as base
	d.level == 4
	d.name == "autonomous"
	d.triggers == []
}

test_level_4_fields if {
	d := data.escalation.decision with input as base
	d.execute == true
	d.approval == {"required": false, "timeout_seconds": 600, "on_timeout": "escalate_to_oncall"}
	d.abort_window_seconds == null
	d.change_record_required == false
	d.logging == ["structured_event", "action", "verification", "outcome"]
}

test_level_3_fields if {
	d := data.escalation.decision with input as with_value("/pattern/occurrences", 9)
	d.level == 3
	d.name == "conditional_autonomous"
	d.execute == true
	d.approval.required == false
	d.abort_window_seconds == data.escalation.policy.abort_window_seconds
	d.abort_window_seconds > 0
	d.logging == ["action", "notification", "abort", "outcome"]
}

test_level_2_fields if {
	d := data.escalation.decision with input as with_value("/ai/confidence", 0.72)
	d.level == 2
	d.name == "supervised"
	d.execute == false
	d.approval == {"required": true, "timeout_seconds": 600, "on_timeout": "escalate_to_oncall"}
	d.abort_window_seconds == null
	d.logging == ["recommendation", "approval", "outcome"]
	d.triggers == [{
		"id": "confidence_below_autonomous",
		"ceiling": 2,
		"message": "composite confidence 0.72 is below 0.85",
	}]
}

test_level_1_fields if {
	d := data.escalation.decision with input as with_value("/pattern/known", false)
	d.level == 1
	d.name == "assisted"
	d.execute == false
	d.approval.required == false
	d.abort_window_seconds == null
	d.logging == ["alert", "decision", "context"]
}

test_level_0_fields if {
	d := data.escalation.decision with input as with_value("/ai/available", false)
	d.level == 0
	d.name == "manual"
	d.execute == false
	d.approval.required == false
	d.abort_window_seconds == null
	d.logging == ["alert", "decision"]
	d.triggers == [{
		"id": "ai_unavailable",
		"ceiling": 0,
		"message": "the AI system is unavailable (ai.available is false)",
	}]
}

test_policy_block_names_version_approvers_and_reviews if {
	p := data.escalation.decision.policy with input as base
	p.version == data.escalation.policy.version
	p.approvers == data.escalation.policy.approvers
	p.last_review == data.escalation.policy.last_review
	p.next_review == data.escalation.policy.next_review
}

test_policy_version_is_at_least_1_3 if {
	semver.compare(sprintf("%s.0", [data.escalation.policy.version]), "1.3.0") >= 0
}

test_next_review_is_after_last_review if {
	data.escalation.policy.next_review > data.escalation.policy.last_review
}

test_several_triggers_all_listed_lowest_wins if {
	doc := with_values({
		"/ai/confidence": 0.7,
		"/guardrails/kill_switch": true,
		"/blast_radius/services": 3,
		"/action/rollback_seconds": 400,
		"/pattern/known": false,
	})
	d := data.escalation.decision with input as doc
	d.level == 1
	ids(d) == {
		"confidence_below_autonomous", "kill_switch", "blast_radius_services",
		"slow_rollback", "novel_pattern",
	}
}

test_triggers_are_ordered_by_ceiling if {
	doc := with_values({
		"/action/rollback_seconds": 400,
		"/ai/available": false,
		"/guardrails/kill_switch": true,
		"/pattern/known": false,
	})
	d := data.escalation.decision with input as doc
	d.level == 0
	[t.ceiling | some t in d.triggers] == [0, 1, 2, 3]
}

test_triggers_of_one_ceiling_are_ordered_by_id if {
	doc := with_values({
		"/ai/confidence": 0.7,
		"/blast_radius/services": 3,
		"/blast_radius/shared_infrastructure": true,
		"/guardrails/kill_switch": true,
	})
	d := data.escalation.decision with input as doc
	listed := [t.id | some t in d.triggers; t.ceiling == 2]
	count(listed) == 4
	listed == sort(listed)
}

test_level_is_the_lowest_listed_ceiling if {
	d := data.escalation.decision with input as with_values({"/error_budget/remaining": 0.5, "/pattern/occurrences": 5})
	d.level == min({t.ceiling | some t in d.triggers})
	d.level == 2
}

test_regulated_asset_requires_change_record_at_every_level if {
	doc := with_values({"/regulatory/regulated": true, "/regulatory/frameworks": ["pci-dss"]})
	d := data.escalation.decision with input as doc
	d.level == 2
	d.change_record_required == true
	d.logging == ["recommendation", "approval", "outcome", "change_record"]
	d0 := data.escalation.decision with input as with_values({"/regulatory/regulated": true, "/ai/available": false})
	d0.level == 0
	d0.change_record_required == true
}
