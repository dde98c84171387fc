"""The agent's pipeline in process, without HTTP: where its CPU per alert goes.

    python -m bench.pipeline_bench [--alerts 1000] [--workers 1,4]

Starts one ``opa run --server`` and, for each worker count, the agent as ``pyagent serve``
builds it (store, audit log, sources, approvals) in this process, with its console notices
sent to a throwaway stream. It records ``--alerts`` single-alert deliveries through
``Agent.intake`` as fast as it can, waits until every one is decided, and prints the
process's CPU milliseconds per alert (every thread: intake, deciding, audit) and the alerts
decided per second, each against the first worker count measured in the same run. The
end-to-end benchmark's CPU per alert minus this is what the HTTP front end costs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.e2e_bench import INVENTORY, TEMPLATE, _delivery
from pyagent.alerts import Delivery, parse_webhook
from pyagent.app import running_agent
from pyagent.opa import EmbeddedOpa, default_policy_dir
from pyagent.settings import Settings

WARMUP = 200


@dataclass(frozen=True)
class Run:
    workers: int
    cpu_ms: float  # process CPU per alert, every thread
    rate: float  # alerts decided per second


def measure(opa_url: str, workers: int, alerts: int) -> Run:
    template = json.loads(TEMPLATE.read_text())
    serials = range(1, WARMUP + alerts + 1)
    deliveries: list[Delivery] = [parse_webhook(json.dumps(_delivery(template, s)).encode()) for s in serials]
    with (
        tempfile.TemporaryDirectory(prefix="pyagent-pipeline-") as tmp,
        contextlib.redirect_stderr(io.StringIO()),  # the log channel's line per approval
    ):
        settings = Settings(state_dir=Path(tmp), inventory=INVENTORY, opa_url=opa_url, workers=workers)
        with running_agent(settings) as running:
            agent = running.agent
            for delivery in deliveries[:WARMUP]:
                agent.intake(delivery)
            if not agent.drain(120):
                raise SystemExit("warm-up alerts were not decided within 120 s")
            cpu, wall = time.process_time(), time.perf_counter()
            for delivery in deliveries[WARMUP:]:
                agent.intake(delivery)
            if not agent.drain(300):
                raise SystemExit(f"{alerts} alerts were not decided within 300 s")
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Run(workers, cpu * 1000 / alerts, alerts / wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--workers", default="1,4", help="worker counts to compare, comma-separated")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    with EmbeddedOpa(default_policy_dir()) as opa:
        runs = [measure(opa.url, workers, args.alerts) for workers in counts]
    first = runs[0]
    print(f"the agent in process, {args.alerts} single-alert deliveries through Agent.intake, no HTTP")
    print(f"  {'workers':>7} {'CPU ms/alert':>13} {'x first':>8} {'decided/s':>10} {'x first':>8}")
    for run in runs:
        print(
            f"  {run.workers:>7} {run.cpu_ms:>13.2f} {run.cpu_ms / first.cpu_ms:>8.2f}"
            f" {run.rate:>10.0f} {run.rate / first.rate:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
