package escalation

# METADATA
# title: Decisions for a batch of inputs
# description: >-
#   The decision for each policy input in input.inputs, in order: for every element exactly
#   what data.escalation.decision gives for that document alone. An agent under load asks
#   once for the alerts queued at that moment instead of once per alert.
# schemas:
#   - input: {"type": "object", "properties": {"inputs": {"type": "array", "items": {"type": "object"}}}}
decisions := [_decision_document(facts) |
	some doc in input.inputs

	# evaluating the decision's rules against each document is what `with` is for; a copy of
	# them taking the document as an argument could drift from the rules compliance reviews.
	# The document is built from the facts exactly as data.escalation.decision builds it.
	# regal ignore:with-outside-test-context
	facts := _decision_facts with input as doc
]
