"""Time the policy with ``opa bench``: the decision for typical inputs against a bare data lookup.

    python3 bench/policy_bench.py [--opa PATH]

Prints time per decision and each case's ratio to the baseline measured in the same run,
so figures from different machines compare by ratio. A batch case asks
``data.escalation.decisions`` for 32 inputs at once, as the agent does under load, and is
shown per decision; so is a batch of 10, a common size at moderate load.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "input.json"


BATCH = 32
SMALL = 10


def _cases(workdir: Path) -> list[tuple[str, str, Path, int]]:
    """(label, query, input file, decisions per evaluation) for each case."""
    example = json.loads(EXAMPLE.read_text())
    level_2 = json.loads(EXAMPLE.read_text())
    level_2["ai"]["confidence"] = 0.72
    level_2["blast_radius"]["namespaces"] = ["shop", "payments"]
    batch = {"inputs": [example if i % 2 else level_2 for i in range(BATCH)]}
    small = {"inputs": batch["inputs"][:SMALL]}
    inputs = {"example": example, "level_2": level_2, "empty": {}, "batch": batch, "small": small}
    paths = {}
    for name, doc in inputs.items():
        paths[name] = workdir / f"{name}.json"
        paths[name].write_text(json.dumps(doc))
    return [
        ("baseline: data.escalation.policy.version", "data.escalation.policy.version", paths["example"], 1),
        ("decision, DESIGN.md example (level 4)", "data.escalation.decision", paths["example"], 1),
        ("decision, two triggers (level 2)", "data.escalation.decision", paths["level_2"], 1),
        ("decision, {} (every field missing)", "data.escalation.decision", paths["empty"], 1),
        (f"batch of {SMALL}: example and level 2", "data.escalation.decisions", paths["small"], SMALL),
        (f"batch of {BATCH}: example and level 2", "data.escalation.decisions", paths["batch"], BATCH),
    ]


def _ns_per_op(opa: str, query: str, input_path: Path) -> float:
    out = subprocess.run(
        [opa, "bench", "--data", str(ROOT / "rego"), "--input", str(input_path), "--format", "json", query],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out)
    return float(result["T"]) / float(result["N"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opa", default=shutil.which("opa") or str(ROOT / ".tools" / "bin" / "opa"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = _cases(Path(tmp))
        results = [(label, _ns_per_op(args.opa, query, path) / count) for label, query, path, count in cases]
    baseline = results[0][1]
    print(f"{'case':<45} {'per decision':>15} {'x baseline':>11}")
    for label, ns in results:
        print(f"{label:<45} {ns / 1000:>12.1f} us {ns / baseline:>10.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
