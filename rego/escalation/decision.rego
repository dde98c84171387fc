# METADATA
# title: Escalation policy for AI-assisted incident response
# description: >-
#   Decides, for each remediation an AI system proposes, how much human involvement it
#   needs: an autonomy level from 0 (manual) to 4 (autonomous). Every trigger that fires
#   sets a ceiling on autonomy; the level is the lowest ceiling, or 4 when none fired, so
#   adding risk can only lower the level. Thresholds, the action catalog and the level-4
#   list are reviewed data (policy.json); level-4 qualifications are in qualifications.json.
# custom:
#   source: >-
#     The escalation policy is an operational governance document, not a configuration
#     file. It must be version-controlled, reviewed and approved by SRE leadership and
#     compliance, and referenced in every AI-assisted automation's runtime configuration.
package escalation

# METADATA
# title: Decision
# description: >-
#   The decision document for one proposed remediation: level, name, every fired
#   trigger, what the agent may do, and the policy that decided.
# entrypoint: true
decision := {
	"level": level,
	"name": _level_names[level],
	"triggers": _ordered_triggers,
	"execute": level >= 3,
	"approval": {
		"required": level == 2,
		"timeout_seconds": _policy.approval.timeout_seconds,
		"on_timeout": _policy.approval.on_timeout,
	},
	"abort_window_seconds": _abort_window_seconds,
	"change_record_required": change_record_required,
	"logging": array.concat(_policy.logging[_level_names[level]], _change_record_logging),
	"policy": {
		"version": _policy.version,
		"approvers": _policy.approvers,
		"last_review": _policy.last_review,
		"next_review": _policy.next_review,
	},
}

# METADATA
# title: Level
# description: The lowest ceiling of all fired triggers; 4 (autonomous) when none fired.
level := min({t.ceiling | some t in triggers} | {4})

# METADATA
# title: Change record required
# description: >-
#   A change record must exist before any action on a regulated asset. It is also required
#   while the regulatory status is unknown.
# scope: document
default change_record_required := true

change_record_required := false if {
	input.regulatory.regulated == false
	not _frameworks_named
}

_policy := data.escalation.policy

_thresholds := data.escalation.policy.thresholds

_level_names := ["manual", "assisted", "supervised", "conditional_autonomous", "autonomous"]

# the input document, or an empty one when input is absent or not an object
default _doc := {}

_doc := input if is_object(input)

default _abort_window_seconds := null

_abort_window_seconds := _policy.abort_window_seconds if level == 3

default _change_record_logging := []

_change_record_logging := ["change_record"] if change_record_required

# triggers by ceiling (lowest first), then by id and message
_ordered_triggers := [t | some [_, t] in sort([[x.ceiling, x] | some x in triggers])]

_frameworks_named if count(input.regulatory.frameworks) > 0

# the result object of a fired trigger; id and ceiling come from the rule's METADATA
_trigger(annotation, message) := {
	"id": annotation.custom.id,
	"ceiling": annotation.custom.ceiling,
	"message": message,
}
