package escalation

# METADATA
# title: Action not authorised for level 4
# description: >-
#   The action is not on the level-4 list, or it breaks that entry's limits: a rolling
#   restart only of one stateless Deployment; a scale-up only of an HPA-managed Deployment
#   by at most 2 replicas; a certificate rotation only outside production; a log pipeline
#   restart only without production impact.
# custom:
#   id: action_not_authorised_autonomous
#   ceiling: 3
#   source: >-
#     Authorised actions at Level 4: Rolling restart of single stateless deployment (OOM,
#     deadlock); Scale-up of single HPA-managed deployment by ≤ 2 replicas; Certificate
#     rotation on non-production workloads; Log pipeline gateway restart (telemetry outage,
#     no production impact)
triggers contains {"id": "action_not_authorised_autonomous", "ceiling": 3, "message": msg} if {
	some msg in _level_4_refusals
}

# METADATA
# title: Qualification missing
# description: No reviewed level-4 qualification exists for this action type and pattern.
# custom:
#   id: qualification_missing
#   ceiling: 3
#   source: >-
#     CRITICAL CONSTRAINT: No action may exist permanently at Level 4. Every Level 4
#     automation must have a scheduled re-qualification review.
triggers contains {"id": "qualification_missing", "ceiling": 3, "message": msg} if {
	count(_qualified_ns) == 0
	msg := sprintf(
		"no qualification for action %s on pattern %s",
		[_quote(object.get(_doc, ["action", "type"], null)), _pattern_label],
	)
}

# METADATA
# title: Qualification expired
# description: The latest qualification for this action type and pattern is older than 90 days.
# custom:
#   id: qualification_expired
#   ceiling: 3
#   source: >-
#     Re-qualification: every 90 days or after any incident where autonomous action was taken
#     and outcome was suboptimal
triggers contains {"id": "qualification_expired", "ceiling": 3, "message": msg} if {
	age_ns := _now_ns - _latest_qualification_ns
	age_ns > _policy.requalification_days * _day_ns
	msg := sprintf(
		"the qualification of %s is %v days old, older than %v",
		[time.format(_latest_qualification_ns), floor(age_ns / _day_ns), _policy.requalification_days],
	)
}

# METADATA
# title: Suboptimal outcome
# description: >-
#   A suboptimal outcome of this action and pattern was recorded after its latest
#   qualification, or with no qualification at all; it stays until a human re-qualifies.
# custom:
#   id: suboptimal_outcome
#   ceiling: 2
#   source: >-
#     Re-qualification: every 90 days or after any incident where autonomous action was taken
#     and outcome was suboptimal
triggers contains {"id": "suboptimal_outcome", "ceiling": 2, "message": _suboptimal_reason} if {
	# most inputs record no suboptimal outcome (null): then there is nothing to compare
	is_number(_last_suboptimal_ns)
}

# why the action may not run at level 4; empty when it may
_level_4_refusals contains msg if {
	not _policy.level_4[input.action.type]
	msg := sprintf("%s is not on the level-4 list", [_quote(object.get(_doc, ["action", "type"], null))])
}

_level_4_refusals contains msg if {
	input.action.type == "rolling_restart"
	not input.action.target.kind == "Deployment"
	msg := sprintf(
		"rolling_restart is level 4 only for a Deployment, not %s",
		[_quote(object.get(_doc, ["action", "target", "kind"], null))],
	)
}

_level_4_refusals contains "rolling_restart is level 4 only for a stateless workload" if {
	input.action.type == "rolling_restart"
	not input.blast_radius.stateless == true
}

_level_4_refusals contains "scale_up is level 4 only for an HPA-managed Deployment" if {
	input.action.type == "scale_up"
	not input.action.target.hpa_managed == true
}

_level_4_refusals contains msg if {
	input.action.type == "scale_up"
	not _scale_up_delta_allowed
	msg := sprintf(
		"scale_up is level 4 only for 1 to %v more replicas, not %s",
		[_policy.level_4.scale_up.max_replicas_delta, _quote(object.get(_doc, ["action", "replicas_delta"], null))],
	)
}

_level_4_refusals contains msg if {
	input.action.type == "certificate_rotation"
	not _outside_forbidden_environment
	msg := sprintf(
		"certificate_rotation is level 4 only outside %v, not in %s",
		[
			_policy.level_4.certificate_rotation.forbidden_environment,
			_quote(object.get(_doc, ["action", "target", "environment"], null)),
		],
	)
}

_level_4_refusals contains "log_pipeline_restart is level 4 only without production impact" if {
	input.action.type == "log_pipeline_restart"
	not input.action.production_impact == false
}

_scale_up_delta_allowed if {
	delta := input.action.replicas_delta
	is_number(delta)
	delta >= 1
	delta <= _policy.level_4.scale_up.max_replicas_delta
}

_outside_forbidden_environment if {
	environment := input.action.target.environment
	is_string(environment)
	environment != _policy.level_4.certificate_rotation.forbidden_environment
}

# qualification times (ns) for this action and pattern, approved and in force at `now`
_qualified_ns contains qualified_ns if {
	some qualification in data.escalation.qualifications
	qualification.action == input.action.type
	qualification.pattern == input.pattern.id
	count(qualification.approved_by) > 0
	qualified_ns := time.parse_rfc3339_ns(qualification.qualified_at)
	qualified_ns <= _now_ns
}

# the latest qualification time; undefined when there is none (max of an empty set is undefined)
_latest_qualification_ns := max(_qualified_ns)

_suboptimal_reason := sprintf(
	"a suboptimal outcome at %v follows the qualification of %v",
	[input.pattern.last_suboptimal_at, time.format(_latest_qualification_ns)],
) if {
	_last_suboptimal_ns > _latest_qualification_ns
} else := sprintf(
	"a suboptimal outcome at %v and no qualification after it",
	[input.pattern.last_suboptimal_at],
) if {
	is_number(_last_suboptimal_ns)
	count(_qualified_ns) == 0
}

# when the last suboptimal outcome was recorded; undefined when none was (null) or the time
# cannot be read. Only a string is parsed: most inputs have null here, and parsing null
# would only fail.
_last_suboptimal_ns := time.parse_rfc3339_ns(at) if {
	at := input.pattern.last_suboptimal_at
	is_string(at)
}
