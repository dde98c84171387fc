package escalation_test

test_batch_gives_each_input_its_own_decision if {
	cautious := with_value("/ai/confidence", 0.72)
	decisions := data.escalation.decisions with input as {"inputs": [base, cautious, {}]}
	first := data.escalation.decision with input as base
	second := data.escalation.decision with input as cautious
	third := data.escalation.decision with input as {}
	decisions == [first, second, third]
	[d.level | some d in decisions] == [4, 2, 1]
}

test_batch_of_nothing_is_empty if {
	decisions := data.escalation.decisions with input as {"inputs": []}
	decisions == []
}

test_batch_without_inputs_is_empty if {
	decisions := data.escalation.decisions with input as {}
	decisions == []
}
