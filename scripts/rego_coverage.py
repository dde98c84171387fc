"""Gate on the policy tests' line coverage of the policy itself (not of the tests).

    python3 scripts/rego_coverage.py COVERAGE.json --root rego --min 95

COVERAGE.json is ``opa test --coverage`` output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _lines(ranges: list[dict[str, dict[str, int]]] | None) -> set[int]:
    """The distinct line numbers the ranges span (ranges nest and overlap)."""
    return {row for r in ranges or [] for row in range(r["start"]["row"], r["end"]["row"] + 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("coverage", type=Path)
    parser.add_argument("--root", default="rego")
    parser.add_argument("--min", type=float, required=True)
    args = parser.parse_args()
    files = json.loads(args.coverage.read_text())["files"]
    covered = missed = 0
    for name, report in sorted(files.items()):
        if not name.startswith(args.root.rstrip("/") + "/"):
            continue
        not_covered = _lines(report.get("not_covered"))
        hit, miss = len(_lines(report.get("covered")) - not_covered), len(not_covered)
        covered, missed = covered + hit, missed + miss
        print(f"  {name}: {hit}/{hit + miss} lines")
    if covered + missed == 0:
        print(f"no coverage recorded under {args.root}/", file=sys.stderr)
        return 1
    percent = 100.0 * covered / (covered + missed)
    print(f"coverage of {args.root}/: {percent:.2f}% of {covered + missed} lines (minimum {args.min}%)")
    return 0 if percent >= args.min else 1


if __name__ == "__main__":
    sys.exit(main())
