package escalation_test

# The fast check (_well_formed) and the field table (_fields) describe the same input twice:
# the check decides whether the per-field loop that names bad fields runs at all, the table
# writes the messages. Every test here iterates the table, so a field added to one and not
# the other, or given another kind or required flag, fails a test.

required_specs := [spec | some spec in data.escalation._fields; spec.required]

optional_specs := [spec | some spec in data.escalation._fields; not spec.required]

# a value of the wrong type for each kind of field
wrong_type := {
	"string": 5,
	"boolean": "true",
	"fraction": "0.5",
	"count": "1",
	"integer": "1",
	"seconds": "1",
	"budget": "1",
	"timestamp": 1700000000,
	"object": [],
	"strings": "pci-dss",
	"names": "shop",
}

# values of every JSON type and at the edges of every kind's range
probes := [
	null, "", "x", "2026-11-26T12:00:00Z", "yesterday", true, false,
	0, 1, 2, -1, 0.5, 1.5, -0.5, 1700000000,
	[], ["a"], [1], ["a", 1], {}, {"k": "v"},
]

# base with the field of spec set to value
set_field(spec, value) := json.patch(base, [{"op": "add", "path": spec.path, "value": value}])

test_well_formed_base if {
	data.escalation._well_formed with input as base
}

test_not_well_formed_each_required_field_removed if {
	count(required_specs) > 0
	every spec in required_specs {
		not data.escalation._well_formed with input as json.remove(base, [spec.path])
	}
}

test_well_formed_each_optional_field_removed if {
	count(optional_specs) > 0
	every spec in optional_specs {
		data.escalation._well_formed with input as json.remove(base, [spec.path])
	}
}

test_not_well_formed_each_field_of_wrong_type if {
	every spec in data.escalation._fields {
		not data.escalation._well_formed with input as set_field(spec, wrong_type[spec.kind])
	}
}

# For every field and every probe value, the fast check holds exactly when the table finds
# nothing wrong with the value: a field the check reads another way than the table fails here.
test_well_formed_agrees_with_table_on_every_probe_of_every_field if {
	passes_fast_check := {[field, probe] |
		some field, spec in data.escalation._fields
		some probe in probes
		data.escalation._well_formed with input as set_field(spec, probe)
	}
	passes_table := {[field, probe] |
		some field, spec in data.escalation._fields
		some probe in probes
		not data.escalation._field_problem(probe, spec)
	}
	count(passes_table) > 0
	passes_table == passes_fast_check
}

# the fast check asks for no field the table does not require
test_well_formed_only_table_required_fields_present if {
	required_paths := [spec.path | some spec in required_specs]
	data.escalation._well_formed with input as json.filter(base, required_paths)
}

test_not_well_formed_empty_or_not_an_object if {
	every doc in [{}, "a string", [1, 2], 42, true, null] {
		not data.escalation._well_formed with input as doc
	}
}
