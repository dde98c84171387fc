package escalation

# METADATA
# title: Decisions for a batch of inputs
# description: >-
#   The decision for each policy input in input.inputs, in order: for every element exactly
#   what data.escalation.decision gives for that document alone. An agent under load asks
#   once for the alerts queued at that moment instead of once per alert.
# schemas:
#   - input: {"type": "object", "properties": {"inputs": {"type": "array", "items": {"type": "object"}}}}
decisions := [d |
	some doc in input.inputs

	# evaluating the one decision rule against each document is what `with` is for; a copy of
	# the rule taking the document as an argument could drift from the rule compliance reviews
	# regal ignore:with-outside-test-context,comprehension-term-assignment
	d := decision with input as doc
]
