package escalation

# Each trigger rule adds {"id", "ceiling", "message"} to triggers; its head names the id and
# ceiling its METADATA gives (make docs-check fails when the two differ).
#
# A trigger on a number compares first and checks the type after: for most inputs the
# comparison fails and the rule stops there. A value that is not a number can pass a
# comparison (Rego orders null and booleans before numbers, strings after them), and the
# type check then stops the rule; a field of the wrong type is reported by context_missing.

# METADATA
# title: AI unavailable
# description: The AI system is unavailable, so it produces no diagnosis to act on.
# custom:
#   id: ai_unavailable
#   ceiling: 0
#   source: >-
#     LEVEL 0 — MANUAL AI generates no recommendations. Human observes raw telemetry and
#     decides. Appropriate when: AI system is unavailable, untrusted, or context is outside
#     AI training distribution entirely.
triggers contains {"id": "ai_unavailable", "ceiling": 0, "message": msg} if {
	input.ai.available == false
	msg := "the AI system is unavailable (ai.available is false)"
}

# METADATA
# title: Confidence low
# description: The composite confidence is below the assisted floor (0.60).
# custom:
#   id: confidence_low
#   ceiling: 1
#   source: >-
#     A low-confidence diagnosis means the AI has identified a plausible pattern match but
#     lacks sufficient corroborating signal to recommend action without human review.
triggers contains {"id": "confidence_low", "ceiling": 1, "message": msg} if {
	confidence := input.ai.confidence
	confidence < _thresholds.confidence_assisted_below
	is_number(confidence)
	msg := sprintf("composite confidence %v is below %v", [confidence, _thresholds.confidence_assisted_below])
}

# METADATA
# title: False-positive rate high
# description: The AI's 7-day false-positive rate is above 0.20.
# custom:
#   id: false_positive_rate_high
#   ceiling: 1
#   source: >-
#     Conditions triggering Level 1 (ANY is sufficient): holmesgpt:false_positive_rate:rate7d
#     > 0.20 for: 1d labels: severity: ticket domain: ai_ops_quality
triggers contains {"id": "false_positive_rate_high", "ceiling": 1, "message": msg} if {
	rate := input.ai.false_positive_rate_7d
	rate > _thresholds.false_positive_rate_max
	is_number(rate)
	msg := sprintf("7-day false-positive rate %v is above %v", [rate, _thresholds.false_positive_rate_max])
}

# METADATA
# title: Novel pattern
# description: The failure pattern matches nothing in the pattern catalog or incident history.
# custom:
#   id: novel_pattern
#   ceiling: 1
#   source: >-
#     Trigger 3 — Novelty Detection The failure pattern does not match any pattern in the AI
#     system's training corpus or historical incident database.
triggers contains {"id": "novel_pattern", "ceiling": 1, "message": msg} if {
	input.pattern.known == false
	msg := sprintf("pattern %s is novel (pattern.known is false)", [_pattern_label])
}

# METADATA
# title: Error budget exhausted
# description: Less than 25% of the SLO error budget remains (tier 3 freeze).
# custom:
#   id: error_budget_exhausted
#   ceiling: 1
#   source: >-
#     Error budget > 25% remaining (not in Tier 3 freeze)
triggers contains {"id": "error_budget_exhausted", "ceiling": 1, "message": msg} if {
	remaining := input.error_budget.remaining
	remaining < _thresholds.error_budget_freeze_below
	is_number(remaining)
	msg := sprintf(
		"error budget remaining %v is below %v (tier 3 freeze)",
		[remaining, _thresholds.error_budget_freeze_below],
	)
}

# METADATA
# title: Confidence below autonomous
# description: The composite confidence is from 0.60 up to, not including, 0.85.
# custom:
#   id: confidence_below_autonomous
#   ceiling: 2
#   source: >-
#     Conditions triggering Level 2 (ANY is sufficient): Confidence score 0.60–0.84
triggers contains {"id": "confidence_below_autonomous", "ceiling": 2, "message": msg} if {
	confidence := input.ai.confidence
	confidence >= _thresholds.confidence_assisted_below
	confidence < _thresholds.confidence_autonomous_min
	is_number(confidence)
	msg := sprintf("composite confidence %v is below %v", [confidence, _thresholds.confidence_autonomous_min])
}

# METADATA
# title: Early occurrence
# description: The pattern is known but was seen fewer than twice before.
# custom:
#   id: early_occurrence
#   ceiling: 2
#   source: >-
#     Conditions triggering Level 2 (ANY is sufficient): First or second occurrence of this
#     failure pattern
triggers contains {"id": "early_occurrence", "ceiling": 2, "message": msg} if {
	occurrences := input.pattern.occurrences
	occurrences < _thresholds.occurrences_supervised_below
	is_number(occurrences)
	msg := sprintf(
		"pattern %s was seen %v times before, fewer than %v (first or second occurrence)",
		[_pattern_label, occurrences, _thresholds.occurrences_supervised_below],
	)
}

# METADATA
# title: Inconsistent outcomes
# description: Past remediations of this pattern did not end the same way.
# custom:
#   id: inconsistent_outcomes
#   ceiling: 2
#   source: >-
#     Pattern seen ≥ 10 times in incident history with consistent outcome
triggers contains {"id": "inconsistent_outcomes", "ceiling": 2, "message": msg} if {
	input.pattern.consistent_outcomes == false
	msg := sprintf("past outcomes of pattern %s are inconsistent (pattern.consistent_outcomes is false)", [_pattern_label])
}

# METADATA
# title: Blast radius, replicas
# description: The action disrupts more than 20% of the target's replicas at once.
# custom:
#   id: blast_radius_replicas
#   ceiling: 2
#   source: >-
#     Conditions triggering Level 2 (ANY is sufficient): Blast radius: > 20% of replicas OR
#     > 1 service OR cross-namespace
triggers contains {"id": "blast_radius_replicas", "ceiling": 2, "message": msg} if {
	fraction := input.blast_radius.replica_fraction
	fraction > _thresholds.replica_fraction_max
	is_number(fraction)
	msg := sprintf("replica fraction %v is above %v", [fraction, _thresholds.replica_fraction_max])
}

# METADATA
# title: Blast radius, services
# description: The action affects more than one service.
# custom:
#   id: blast_radius_services
#   ceiling: 2
#   source: >-
#     Conditions triggering Level 2 (ANY is sufficient): Blast radius: > 20% of replicas OR
#     > 1 service OR cross-namespace
triggers contains {"id": "blast_radius_services", "ceiling": 2, "message": msg} if {
	services := input.blast_radius.services
	services > _thresholds.services_max
	is_number(services)
	msg := sprintf("the action affects %v services, more than %v", [services, _thresholds.services_max])
}

# METADATA
# title: Cross-namespace
# description: The action touches more than one namespace.
# custom:
#   id: cross_namespace
#   ceiling: 2
#   source: >-
#     Conditions triggering Level 2 (ANY is sufficient): Blast radius: > 20% of replicas OR
#     > 1 service OR cross-namespace
triggers contains {"id": "cross_namespace", "ceiling": 2, "message": msg} if {
	# a list holds at least as many elements as distinct names: when it is short enough, so
	# is the set of names, and the set need not be built
	count(input.blast_radius.namespaces) > _thresholds.namespaces_max
	namespaces := {ns | some ns in input.blast_radius.namespaces}
	count(namespaces) > _thresholds.namespaces_max
	msg := sprintf("the action touches %d namespaces: %s", [count(namespaces), concat(", ", sort(namespaces))])
}

# METADATA
# title: Shared infrastructure
# description: The action affects shared infrastructure (Argo CD, Prometheus, Istio, ...).
# custom:
#   id: shared_infrastructure
#   ceiling: 2
#   source: >-
#     Conditions triggering Level 2 (ANY is sufficient): Action affects shared infrastructure
#     (Argo CD, Prometheus, Istio)
triggers contains {"id": "shared_infrastructure", "ceiling": 2, "message": msg} if {
	input.blast_radius.shared_infrastructure == true
	msg := "the action affects shared infrastructure (blast_radius.shared_infrastructure is true)"
}

# METADATA
# title: Error budget degraded
# description: Between 25% and 75% of the SLO error budget remains, both ends included (tier 2).
# custom:
#   id: error_budget_degraded
#   ceiling: 2
#   source: >-
#     Conditions triggering Level 2 (ANY is sufficient): Error budget between 25–75% (Tier 2
#     degraded)
triggers contains {"id": "error_budget_degraded", "ceiling": 2, "message": msg} if {
	remaining := input.error_budget.remaining
	remaining >= _thresholds.error_budget_freeze_below
	remaining <= _thresholds.error_budget_degraded_max
	is_number(remaining)
	msg := sprintf(
		"error budget remaining %v is within %v to %v (tier 2 degraded)",
		[remaining, _thresholds.error_budget_freeze_below, _thresholds.error_budget_degraded_max],
	)
}

# METADATA
# title: Regulated asset
# description: >-
#   The action touches a regulated asset (regulatory.regulated is true, or frameworks are
#   named). A change record is required before anything executes.
# custom:
#   id: regulated_asset
#   ceiling: 2
#   source: >-
#     An AI system that correctly diagnoses a production issue with 99% confidence and proposes
#     a remediation that would constitute an undocumented change to a regulated asset must
#     escalate to Level 2 and generate a change record.
triggers contains {"id": "regulated_asset", "ceiling": 2, "message": msg} if {
	_regulated
	msg := sprintf("the target is a regulated asset (frameworks: %s)", [_frameworks_text])
}

# METADATA
# title: Irreversible
# description: The action cannot be undone, by the input's account or the action catalog's.
# custom:
#   id: irreversible
#   ceiling: 2
#   source: >-
#     Blast radius is assessed across three dimensions: ... and reversibility (can the action
#     be undone in under five minutes with a single command).
triggers contains {"id": "irreversible", "ceiling": 2, "message": _irreversible_reason}

# METADATA
# title: Action not catalogued
# description: The action type is not in the server-side action catalog.
# custom:
#   id: action_not_catalogued
#   ceiling: 2
#   source: >-
#     AI executes actions autonomously within pre-approved policy boundaries.
triggers contains {"id": "action_not_catalogued", "ceiling": 2, "message": msg} if {
	not _policy.catalog[input.action.type]
	msg := sprintf("action type %s is not in the action catalog", [_quote(object.get(_doc, ["action", "type"], null))])
}

# METADATA
# title: Kill switch
# description: An operator has engaged the kill switch for autonomous actions.
# custom:
#   id: kill_switch
#   ceiling: 2
#   source: >-
#     Its authority derives from human review, not from the AI system that consults it.
triggers contains {"id": "kill_switch", "ceiling": 2, "message": msg} if {
	input.guardrails.kill_switch == true
	msg := "the kill switch is engaged (guardrails.kill_switch is true)"
}

# METADATA
# title: Autonomous rate limit
# description: The agent has taken the policy's maximum number of autonomous actions in the current window.
# custom:
#   id: autonomous_rate_limit
#   ceiling: 2
#   source: >-
#     It is a story about the speed asymmetry between automated propagation and human
#     response.
triggers contains {"id": "autonomous_rate_limit", "ceiling": 2, "message": msg} if {
	taken := input.guardrails.autonomous_actions_in_window
	limit := _policy.autonomous_rate_limit
	taken >= limit.max_actions
	is_number(taken)
	msg := sprintf(
		"%v autonomous actions in the last %v s reach the limit of %v",
		[taken, limit.window_seconds, limit.max_actions],
	)
}

# METADATA
# title: Policy review overdue
# description: The decision time is past the policy's next review date.
# custom:
#   id: policy_review_overdue
#   ceiling: 2
#   source: >-
#     The escalation policy is an operational governance document ... reviewed and approved
#     by SRE leadership and compliance. Last Reviewed: 2025-Q1 | Next Review: 2025-Q2
triggers contains {"id": "policy_review_overdue", "ceiling": 2, "message": _review_overdue_reason}

# METADATA
# title: Slow rollback
# description: Undoing the action takes more than 300 seconds.
# custom:
#   id: slow_rollback
#   ceiling: 3
#   source: >-
#     Action is idempotent and fully reversible in ≤ 5 minutes
triggers contains {"id": "slow_rollback", "ceiling": 3, "message": _slow_rollback_reason}

# METADATA
# title: Not idempotent
# description: Repeating the action would not leave the system as one run does.
# custom:
#   id: not_idempotent
#   ceiling: 3
#   source: >-
#     Action is idempotent and fully reversible in ≤ 5 minutes
triggers contains {"id": "not_idempotent", "ceiling": 3, "message": _not_idempotent_reason}

# METADATA
# title: Insufficient history
# description: The pattern was seen fewer than 10 times before.
# custom:
#   id: insufficient_history
#   ceiling: 3
#   source: >-
#     Pattern seen ≥ 10 times in incident history with consistent outcome
triggers contains {"id": "insufficient_history", "ceiling": 3, "message": msg} if {
	occurrences := input.pattern.occurrences
	occurrences < _thresholds.occurrences_autonomous_min
	is_number(occurrences)
	msg := sprintf(
		"pattern %s was seen %v times before, fewer than %v",
		[_pattern_label, occurrences, _thresholds.occurrences_autonomous_min],
	)
}

default _pattern_label := "(unidentified)"

_pattern_label := sprintf("%q", [input.pattern.id]) if is_string(input.pattern.id)

default _catalog_entry := {}

_catalog_entry := _policy.catalog[input.action.type]

_regulated if input.regulatory.regulated == true

_regulated if _frameworks_named

default _frameworks_text := "none named"

_frameworks_text := concat(", ", input.regulatory.frameworks) if _frameworks_named

_irreversible_reason := "action.reversible is false" if {
	input.action.reversible == false
} else := sprintf("the action catalog marks %s irreversible", [input.action.type]) if {
	_catalog_entry.reversible == false
}

_not_idempotent_reason := "action.idempotent is false" if {
	input.action.idempotent == false
} else := sprintf("the action catalog marks %s not idempotent", [input.action.type]) if {
	_catalog_entry.idempotent == false
}

_slow_rollback_reason := sprintf("rollback takes %v s, over %v s", [seconds, limit]) if {
	seconds := input.action.rollback_seconds
	limit := _thresholds.rollback_seconds_max
	seconds > limit
	is_number(seconds)
} else := sprintf("the action catalog gives %s a rollback of %v s, over %v s", [input.action.type, seconds, limit]) if {
	seconds := _catalog_entry.rollback_seconds
	limit := _thresholds.rollback_seconds_max
	seconds > limit
}

# the review is overdue once the whole next-review day has passed; an unreadable date is overdue
_review_overdue_reason := sprintf("the policy's next review date %v has passed", [_policy.next_review]) if {
	_now_ns >= _review_overdue_from_ns
} else := sprintf("the policy's next review date %s cannot be read", [_quote(_policy.next_review)]) if {
	not _review_overdue_from_ns
}

# the end (UTC) of the next review day, when the review becomes overdue; undefined when the
# date cannot be read. Computed once per decision: both branches above ask for it.
_review_overdue_from_ns := time.parse_ns("2006-01-02", _policy.next_review) + _day_ns

_now_ns := time.parse_rfc3339_ns(input.now)

# 24 hours of 60 minutes of 60 seconds, in nanoseconds (written out, not multiplied for every decision)
_day_ns := 86400000000000
