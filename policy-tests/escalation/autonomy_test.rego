package escalation_test

# the level-4 list and its limits

test_rollback_deployment_is_not_on_the_level_4_list if {
	d := data.escalation.decision with input as with_value("/action/type", "rollback_deployment")
	fires(d, "action_not_authorised_autonomous")
	fired(d, "action_not_authorised_autonomous")[0].message == `"rollback_deployment" is not on the level-4 list`
	d.level == 3
}

test_rolling_restart_of_a_statefulset_is_not_level_4 if {
	d := data.escalation.decision with input as with_value("/action/target/kind", "StatefulSet")
	fires(d, "action_not_authorised_autonomous")
	d.level == 3
}

test_rolling_restart_of_a_stateful_workload_is_not_level_4 if {
	d := data.escalation.decision with input as with_value("/blast_radius/stateless", false)
	fires(d, "action_not_authorised_autonomous")
	fired(d, "action_not_authorised_autonomous")[0].message == "rolling_restart is level 4 only for a stateless workload"
	d.level == 3
}

scale_up(delta, hpa_managed) := with_values({
	"/action/type": "scale_up",
	"/pattern/id": "cpu-saturation-hpa",
	"/action/replicas_delta": delta,
	"/action/target/hpa_managed": hpa_managed,
})

test_scale_up_by_2_of_an_hpa_deployment_is_autonomous if {
	doc := scale_up(2, true)
	data.escalation.decision.level == 4 with input as doc
}

test_scale_up_by_3_is_not_level_4 if {
	d := data.escalation.decision with input as scale_up(3, true)
	fires(d, "action_not_authorised_autonomous")
	fired(d, "action_not_authorised_autonomous")[0].message == "scale_up is level 4 only for 1 to 2 more replicas, not 3"
	d.level == 3
}

test_scale_up_by_0_is_not_level_4 if {
	doc := scale_up(0, true)
	fires(data.escalation.decision, "action_not_authorised_autonomous") with input as doc
}

test_scale_up_without_hpa_is_not_level_4 if {
	d := data.escalation.decision with input as scale_up(1, false)
	fires(d, "action_not_authorised_autonomous")
	fired(d, "action_not_authorised_autonomous")[0].message == "scale_up is level 4 only for an HPA-managed Deployment"
}

certificate_rotation(environment) := with_values({
	"/action/type": "certificate_rotation",
	"/pattern/id": "certificate-expiry",
	"/action/target/environment": environment,
})

test_certificate_rotation_in_staging_is_autonomous if {
	doc := certificate_rotation("staging")
	data.escalation.decision.level == 4 with input as doc
}

test_certificate_rotation_in_production_is_not_level_4 if {
	d := data.escalation.decision with input as certificate_rotation("production")
	fires(d, "action_not_authorised_autonomous")
	fired(d, "action_not_authorised_autonomous")[0].message == concat(" ", [
		"certificate_rotation is level 4 only outside production,",
		`not in "production"`,
	])
	d.level == 3
}

log_pipeline_restart(production_impact) := with_values({
	"/action/type": "log_pipeline_restart",
	"/pattern/id": "log-pipeline-stalled",
	"/action/production_impact": production_impact,
})

test_log_pipeline_restart_without_production_impact_is_autonomous if {
	data.escalation.decision.level == 4 with input as log_pipeline_restart(false)
}

test_log_pipeline_restart_with_production_impact_is_not_level_4 if {
	d := data.escalation.decision with input as log_pipeline_restart(true)
	fires(d, "action_not_authorised_autonomous")
	d.level == 3
}

# qualifications

test_no_qualification_for_the_pattern_is_conditional if {
	d := data.escalation.decision with input as with_value("/pattern/id", "crashloop-bad-config")
	fires(d, "qualification_missing")
	d.level == 3
}

test_qualification_89_days_old_is_in_force if {
	qualifications := qualified_at("2026-08-29T12:00:00Z")
	data.escalation.decision.level == 4 with input as base with data.escalation.qualifications as qualifications
}

test_qualification_exactly_90_days_old_is_in_force if {
	qualifications := qualified_at("2026-08-28T12:00:00Z")
	data.escalation.decision.level == 4 with input as base with data.escalation.qualifications as qualifications
}

test_qualification_91_days_old_has_expired if {
	qualifications := qualified_at("2026-08-27T12:00:00Z")
	d := data.escalation.decision with input as base with data.escalation.qualifications as qualifications
	fires(d, "qualification_expired")
	fired(d, "qualification_expired")[0].message == concat(" ", [
		"the qualification of 2026-08-27T12:00:00Z",
		"is 91 days old, older than 90",
	])
	d.level == 3
}

test_latest_of_several_qualifications_counts if {
	qualifications := array.concat(qualified_at("2026-01-01T00:00:00Z"), qualified_at("2026-11-01T00:00:00Z"))
	data.escalation.decision.level == 4 with input as base with data.escalation.qualifications as qualifications
}

test_qualification_after_now_does_not_count if {
	qualifications := qualified_at("2026-12-01T00:00:00Z")
	d := data.escalation.decision with input as base with data.escalation.qualifications as qualifications
	fires(d, "qualification_missing")
}

test_qualification_without_approvers_does_not_count if {
	unapproved := [object.union(qualified_at("2026-11-01T00:00:00Z")[0], {"approved_by": []})]
	d := data.escalation.decision with input as base with data.escalation.qualifications as unapproved
	fires(d, "qualification_missing")
}

test_qualification_of_another_action_does_not_count if {
	d := data.escalation.decision with input as with_value("/action/type", "log_pipeline_restart")
	fires(d, "qualification_missing")
}

test_every_shipped_qualification_is_for_a_level_4_action if {
	reviewed := time.parse_rfc3339_ns(sprintf("%sT23:59:59Z", [data.escalation.policy.last_review]))
	every q in data.escalation.qualifications {
		data.escalation.policy.level_4[q.action]
		count(q.approved_by) > 0
		time.parse_rfc3339_ns(q.qualified_at) <= reviewed
	}
}

# suboptimal outcomes

test_suboptimal_outcome_after_qualification_is_supervised if {
	doc := with_value("/pattern/last_suboptimal_at", "2026-11-20T03:00:00Z")
	qualifications := qualified_at("2026-11-01T00:00:00Z")
	d := data.escalation.decision with input as doc with data.escalation.qualifications as qualifications
	fires(d, "suboptimal_outcome")
	fired(d, "suboptimal_outcome")[0].message == concat(" ", [
		"a suboptimal outcome at 2026-11-20T03:00:00Z",
		"follows the qualification of 2026-11-01T00:00:00Z",
	])
	d.level == 2
}

test_suboptimal_outcome_before_requalification_is_forgiven if {
	doc := with_value("/pattern/last_suboptimal_at", "2026-10-20T03:00:00Z")
	qualifications := qualified_at("2026-11-01T00:00:00Z")
	d := data.escalation.decision with input as doc with data.escalation.qualifications as qualifications
	d.level == 4
}

test_suboptimal_outcome_without_any_qualification_is_supervised if {
	doc := with_value("/pattern/last_suboptimal_at", "2026-10-20T03:00:00Z")
	d := data.escalation.decision with input as doc with data.escalation.qualifications as []
	fires(d, "suboptimal_outcome")
	fires(d, "qualification_missing")
	d.level == 2
}
