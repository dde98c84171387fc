"""Each trigger rule names in its head the id and ceiling its METADATA gives.

The decision reads id and ceiling from the head; the README's trigger table and the
compliance review read them from the METADATA. scripts/trigger_table.py (``make docs``,
``make docs-check``) refuses a policy where the two differ.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pyagent.opa import PROJECT_ROOT, find_opa
from scripts.trigger_table import head_mismatches, triggers


def _inspect(root: Path) -> dict[str, Any]:
    out = subprocess.run(
        [find_opa(), "inspect", "-a", "--format", "json", "rego"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    inspected: dict[str, Any] = json.loads(out)
    return inspected


def test_every_trigger_head_names_the_id_and_ceiling_of_its_metadata() -> None:
    inspected = _inspect(PROJECT_ROOT)
    assert len(triggers(inspected)) == 27
    assert head_mismatches(inspected, PROJECT_ROOT) == []


def test_a_head_that_differs_from_its_metadata_is_named(tmp_path: Path) -> None:
    shutil.copytree(PROJECT_ROOT / "rego", tmp_path / "rego")
    policy = tmp_path / "rego" / "escalation" / "triggers.rego"
    before = policy.read_text()
    after = before.replace('{"id": "kill_switch", "ceiling": 2,', '{"id": "kill_switch", "ceiling": 3,')
    assert after != before
    policy.write_text(after)
    [problem] = head_mismatches(_inspect(tmp_path), tmp_path)
    assert problem.startswith("rego/escalation/triggers.rego:")
    assert "kill_switch" in problem


def test_a_multi_line_head_is_read_to_its_body(tmp_path: Path) -> None:
    shutil.copytree(PROJECT_ROOT / "rego", tmp_path / "rego")
    policy = tmp_path / "rego" / "escalation" / "context.rego"
    before = policy.read_text()
    after = before.replace('\t"id": "context_missing",', '\t"id": "context_absent",')
    assert after != before
    policy.write_text(after)
    [problem] = head_mismatches(_inspect(tmp_path), tmp_path)
    assert "context_absent" in problem
