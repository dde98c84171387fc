"""The floor: the least a webhook-to-audited-decision pipeline does on the agent's stack.

    python -m bench.floor_server --listen HOST:PORT --state-dir DIR --opa-url URL [--approve]

A measuring device for ``bench.floor_bench``, not a server to run: it does only the work
the agent's contract makes unavoidable for the benchmark's alert, each step with the
agent's own parts, and nothing else.

- uvicorn (uvloop, httptools) takes the webhook; the bearer token is compared; the body is
  parsed and validated (``parse_webhook``); each alert is written to SQLite with group
  commit (the agent's ``Database``) on one of four threads, before the 200.
- One worker takes every alert queued (up to 64), asks OPA for their decisions in one batch
  (the agent's ``OpaClient``, two requests in parallel), records them with one commit and
  audits each alert's ``intake`` and ``decision`` records with one fsync (the agent's
  ``AuditLog``): the moment the benchmark times.
- With ``--approve``, it then does what a level-2 decision asks: the batch's approvals
  created with one commit, audited with one fsync, announced with a line each on stderr,
  and their outcomes audited with one fsync.

What it leaves out is everything else the agent does: no context is gathered (every alert
is asked about with the policy input the agent builds for the benchmark's alert, with the
alert's own fingerprint and the time), no incident is opened in history, no guardrail is
counted, no metric is kept, no re-delivery is told apart, and nothing is recovered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import sqlite3
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.e2e_bench import TEMPLATE, _policy_input
from pyagent.alerts import Alert, parse_webhook
from pyagent.audit import AuditLog, rfc3339
from pyagent.batching import take_batch
from pyagent.database import Database
from pyagent.errors import PolicyError
from pyagent.opa import OpaClient
from pyagent.policy import input_hash
from pyagent.server import Receive, Scope, Send, server, settle_collector

BATCH = 64


def _schema(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS alerts (id INTEGER PRIMARY KEY, alert TEXT, decision TEXT)")
    db.execute("CREATE TABLE IF NOT EXISTS approvals (id TEXT PRIMARY KEY, alert_id INTEGER, decision TEXT)")


class Floor:
    def __init__(self, state: Path, opa_url: str, *, approve: bool) -> None:
        state.mkdir(parents=True, exist_ok=True)
        self.db = Database(state / "floor.db", _schema)
        self.audit = AuditLog(state / "audit.jsonl", "floor")
        self.opa = OpaClient(opa_url, parallel=2)
        self.policy_input = _policy_input(json.loads(TEMPLATE.read_text()), state)
        self.approve = approve
        self.queue: queue.Queue[tuple[int, Alert, str] | None] = queue.Queue()

    def intake(self, alerts: tuple[Alert, ...]) -> int:
        """Record the delivery's alerts with one (group) commit; queue them for deciding."""
        received = rfc3339(datetime.now(UTC))

        def insert(db: sqlite3.Connection) -> list[int]:
            sql = "INSERT INTO alerts (alert) VALUES (?)"
            return [int(db.execute(sql, (json.dumps(a.to_json()),)).lastrowid or 0) for a in alerts]

        for alert_id, alert in zip(self.db.transact(insert), alerts, strict=True):
            self.queue.put((alert_id, alert, received))
        return len(alerts)

    def work(self) -> None:
        """Decide whatever is queued, as one batch, for as long as the process runs."""
        while True:
            batch, _ = take_batch(self.queue, BATCH)  # nothing puts the stop sign: a daemon thread
            self._decide(batch)

    def _decide(self, batch: list[tuple[int, Alert, str]]) -> None:
        now, template = rfc3339(datetime.now(UTC)), self.policy_input
        inputs = [
            {**template, "now": now, "alert": {**template["alert"], "fingerprint": alert.fingerprint}}
            for _, alert, _ in batch
        ]
        decisions = []
        for answer in self.opa.decide_many(inputs):
            if isinstance(answer, PolicyError):
                raise answer
            decisions.append(answer.to_json())
        ids = [str(uuid.uuid4()) for _ in batch]
        rows = [(json.dumps(d), alert_id) for d, (alert_id, _, _) in zip(decisions, batch, strict=True)]
        self.db.transact(lambda db: db.executemany("UPDATE alerts SET decision = ? WHERE id = ?", rows))
        records: list[tuple[str, dict[str, Any]]] = []
        for (alert_id, alert, received), decision, policy_input, decision_id in zip(
            batch, decisions, inputs, ids, strict=True
        ):
            intake = {"alert_id": alert_id, "fingerprint": alert.fingerprint, "received_at": received}
            records.append(("intake", intake))
            records.append(
                (
                    "decision",
                    {
                        "decision_id": decision_id,
                        "alert_id": alert_id,
                        "fingerprint": alert.fingerprint,
                        "action": policy_input["action"],
                        "input_hash": input_hash(policy_input),
                        "level": decision["level"],
                        "triggers": decision["triggers"],
                    },
                )
            )
        self.audit.append_many(records)
        if self.approve:
            self._request_approvals([alert_id for alert_id, _, _ in batch], ids)

    def _request_approvals(self, alert_ids: list[int], decision_ids: list[str]) -> None:
        approvals = [(str(uuid.uuid4()), a, d) for a, d in zip(alert_ids, decision_ids, strict=True)]
        self.db.transact(lambda db: db.executemany("INSERT INTO approvals VALUES (?, ?, ?)", approvals))
        self.audit.append_many(
            [("approval_requested", {"approval_id": a, "decision_id": d}) for a, _, d in approvals]
        )
        sys.stderr.write("".join(f"approval {a} requested for decision {d}\n" for a, _, d in approvals))
        self.audit.append_many(
            [("outcome", {"decision_id": d, "outcome": "approval_requested"}) for _, _, d in approvals]
        )


class FloorApp:
    """``POST /webhook/alertmanager`` and ``GET /healthz``, nothing else."""

    def __init__(self, floor: Floor, token: str) -> None:
        self.floor = floor
        self.authorization = f"Bearer {token}".encode()
        self.intake = ThreadPoolExecutor(4, thread_name_prefix="floor-intake")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        code, body = 200, b"{}"
        if scope["path"] == "/webhook/alertmanager":
            if (b"authorization", self.authorization) not in scope["headers"]:
                code, body = 401, b"{}"
            else:
                chunks = []
                while True:
                    message = await receive()
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
                delivery = parse_webhook(b"".join(chunks))
                loop = asyncio.get_running_loop()
                accepted = await loop.run_in_executor(self.intake, self.floor.intake, delivery.alerts)
                body = json.dumps({"accepted": accepted}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--opa-url", required=True)
    parser.add_argument("--approve", action="store_true", help="also request the level-2 approvals")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    floor = Floor(args.state_dir, args.opa_url, approve=args.approve)
    threading.Thread(target=floor.work, name="floor-worker", daemon=True).start()
    app = FloorApp(floor, os.environ["PYAGENT_WEBHOOK_TOKEN"])
    settle_collector()
    server(app, host, int(port)).run()


if __name__ == "__main__":
    main()
