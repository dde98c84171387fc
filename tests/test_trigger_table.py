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


def _mismatches_after_edit(root: Path, module: str, old: str, new: str) -> list[str]:
    """The head mismatches of a copy of the policy in ``root`` with ``old`` replaced by ``new``
    in ``module``."""
    shutil.copytree(PROJECT_ROOT / "rego", root / "rego")
    policy = root / "rego" / "escalation" / module
    before = policy.read_text()
    after = before.replace(old, new)
    assert after != before
    policy.write_text(after)
    return head_mismatches(_inspect(root), root)


def test_a_head_that_differs_from_its_metadata_is_named(tmp_path: Path) -> None:
    head = '{"id": "kill_switch", "ceiling": %d,'
    [problem] = _mismatches_after_edit(tmp_path, "triggers.rego", head % 2, head % 3)
    assert problem.startswith("rego/escalation/triggers.rego:")
    assert "kill_switch" in problem


def test_a_multi_line_head_is_read_to_its_body(tmp_path: Path) -> None:
    [problem] = _mismatches_after_edit(
        tmp_path, "context.rego", '\t"id": "context_missing",', '\t"id": "context_absent",'
    )
    assert "context_absent" in problem
