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
decision := _decision_document(_decision_facts)

# METADATA
# title: Level
# description: The lowest ceiling of all fired triggers; 4 (autonomous) when none fired.
# scope: document
default level := 4

# the triggers are ordered lowest ceiling first, so the first one holds the lowest ceiling
level := _ordered_triggers[0].ceiling

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

# Everything in a decision that depends on the input: the rest follows from these facts and
# the policy data. The batch rule evaluates this rule for each input and builds the document
# outside that input's scope, where OPA keeps the result of a function for the same
# arguments: a batch then builds the level's part of a document once per level it meets,
# not once per input.
_decision_facts := {
	"level": level,
	"triggers": _ordered_triggers,
	"change_record_required": change_record_required,
}

_decision_document(facts) := object.union(
	_level_document(facts.level, facts.change_record_required),
	{"triggers": facts.triggers},
)

# the decision document without its triggers, for a level and change-record requirement
_level_document(lvl, record_required) := {
	"level": lvl,
	"name": _level_names[lvl],
	"execute": lvl >= 3,
	"approval": _approval(lvl),
	"abort_window_seconds": _abort_window_seconds(lvl),
	"change_record_required": record_required,
	"logging": _logging(lvl, record_required),
	"policy": _policy_identity,
}

_approval(lvl) := {
	"required": lvl == 2,
	"timeout_seconds": _policy.approval.timeout_seconds,
	"on_timeout": _policy.approval.on_timeout,
}

default _abort_window_seconds(_) := null

_abort_window_seconds(3) := _policy.abort_window_seconds

# what is logged at a level, and the change record when one is required
_logging(lvl, false) := _policy.logging[_level_names[lvl]]

_logging(lvl, true) := array.concat(_policy.logging[_level_names[lvl]], ["change_record"])

# which policy decided
_policy_identity := {
	"version": _policy.version,
	"approvers": _policy.approvers,
	"last_review": _policy.last_review,
	"next_review": _policy.next_review,
}

_policy := data.escalation.policy

_thresholds := data.escalation.policy.thresholds

_level_names := ["manual", "assisted", "supervised", "conditional_autonomous", "autonomous"]

# the input document, or an empty one when input is absent or not an object
default _doc := {}

_doc := input if is_object(input)

# triggers by ceiling (lowest first), then by the rest of the trigger: Rego compares two
# objects key by key in key order, and "ceiling" is the first key of every trigger
_ordered_triggers := sort(triggers)

_frameworks_named if count(input.regulatory.frameworks) > 0
