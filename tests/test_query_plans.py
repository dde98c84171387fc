"""No question the agent asks its store while deciding reads a whole table.

A full scan costs nothing on an empty store and grows with every alert ever received,
so the agent slows down over weeks; this test asks SQLite for the plan of every statement
the agent ran while deciding alerts and acting on them.
"""

from __future__ import annotations

import copy
import re
import sqlite3
from pathlib import Path

from pyagent.settings import Settings
from tests.serving import EXAMPLES, example, post, serve

SCAN = re.compile(r"\bSCAN (\w+)")


def test_deciding_alerts_never_scans_a_table(tmp_path: Path) -> None:
    statements: set[str] = set()
    settings = Settings(state_dir=tmp_path, inventory=EXAMPLES / "inventory.yaml")
    with serve(settings) as (url, running):
        store = running.agent.store
        store.transact(lambda db: db.set_trace_callback(statements.add))
        for serial, name in enumerate(
            ["level-2-first-occurrence", "level-1-novel-pattern", "regulated-pci", "level-4-oom-restart"] * 2
        ):
            body = copy.deepcopy(example(name))
            body["alerts"][0]["fingerprint"] = f"{serial + 1:016x}"
            assert 200 == post(url, body).status_code
        resolved = example("resolved-oom-restart")
        assert 200 == post(url, resolved).status_code
        assert running.agent.drain(30)
        store.transact(lambda db: db.set_trace_callback(None))

        def scans(db: sqlite3.Connection) -> dict[str, list[str]]:
            found = {}
            for statement in statements:
                if statement.split()[0].upper() not in {"SELECT", "UPDATE", "DELETE"}:
                    continue
                plan = " ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + statement))
                if SCAN.search(plan):
                    found[statement] = SCAN.findall(plan)
            return found

        found = store.transact(scans)
    assert len(statements) > 10  # the trace saw the decisions
    assert {} == found
