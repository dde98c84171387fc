"""The deciding stage alone at a paced rate: what a front end of its own process could give.

    python -m bench.deciding_bench [--rate 300] [--seconds 10] [--pairs 2]

Starts one ``opa run --server`` and builds the agent as ``pyagent serve`` does, in this
process, without HTTP. Single-alert deliveries, parsed beforehand, arrive on a paced thread
at ``--rate`` for ``--seconds``, in two ways that alternate, ``--pairs`` times:

- **intake**: each delivery goes through ``Agent.intake`` (recorded with an fsync, then
  queued), as the webhook's intake threads hand it over, without the HTTP around them;
- **recorded**: every delivery is recorded in the store before the clock starts, and the
  paced thread only queues it (``Agent.queue_recorded``), so the process does nothing but
  decide. This is the most a front end in a process of its own could take away from the
  agent.

An alert's latency runs from its scheduled arrival to the ``ts`` of its ``decision`` record
in the audit log. Prints p50 and p99 per run, CPU per alert for the process (every thread),
and each pair's p99 of ``recorded`` against ``intake``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

from bench.e2e_bench import TARGET_P99_MS, AuditTail
from bench.inprocess import WARMUP, deliveries, warm_agent
from bench.stats import percentile
from pyagent.opa import EmbeddedOpa, default_policy_dir

MODES = ("intake", "recorded")


@dataclass(frozen=True)
class Run:
    mode: str
    alerts: int
    decided: int
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # process CPU per alert, every thread


def measure(opa_url: str, mode: str, rate: float, seconds: float, first: int) -> Run:
    """One run of ``mode``: the agent built afresh, warmed up, then paced alerts."""
    paced = deliveries(first + WARMUP, int(rate * seconds))
    with warm_agent(opa_url, first) as (agent, state):
        recorded = [agent.store.record_delivery(d)[0] for d in paced] if mode == "recorded" else []
        scheduled: dict[str, float] = {}
        cpu = time.process_time()
        start = time.time() + 0.1
        for index, delivery in enumerate(paced):
            due = start + index / rate
            time.sleep(max(0.0, due - time.time()))
            scheduled[delivery.alerts[0].fingerprint] = due
            if recorded:
                agent.queue_recorded(recorded[index])
            else:
                agent.intake(delivery)
        if not agent.drain(120):
            raise SystemExit(f"{mode}: alerts were not decided within 120 s")
        cpu = time.process_time() - cpu
        tail = AuditTail(state / "audit.jsonl")
        tail.poll()
    latencies = [(tail.decided[f] - at) * 1000 for f, at in scheduled.items() if f in tail.decided]
    return Run(
        mode,
        len(scheduled),
        len(latencies),
        statistics.median(latencies),
        percentile(latencies, 0.99),
        cpu * 1000 / len(scheduled),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=300.0, help="alerts per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each run")
    parser.add_argument("--pairs", type=int, default=2, help="alternating pairs of runs")
    args = parser.parse_args()
    print(f"the deciding stage in process, no HTTP, {args.rate:.0f} single alerts/s for {args.seconds:.0f} s")
    print(f"  {'run':>8} {'alerts':>7} {'decided':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/alert':>13}")
    serial = 1
    pairs: list[dict[str, Run]] = []
    with EmbeddedOpa(default_policy_dir()) as opa:
        for _ in range(args.pairs):
            pair = {}
            for mode in MODES:
                run = measure(opa.url, mode, args.rate, args.seconds, serial)
                serial += WARMUP + run.alerts
                pair[mode] = run
                print(
                    f"  {mode:>8} {run.alerts:>7} {run.decided:>8} {run.p50_ms:>8.1f} {run.p99_ms:>8.1f}"
                    f" {run.cpu_ms:>13.2f}"
                )
            pairs.append(pair)
    print()
    for index, pair in enumerate(pairs, 1):
        ratio = pair["recorded"].p99_ms / pair["intake"].p99_ms
        print(f"pair {index}: p99 recorded / intake {ratio:.2f}x")
    best = min(pair["recorded"].p99_ms for pair in pairs)
    verdict = "under" if best < TARGET_P99_MS else "not under"
    print(f"deciding alone, best p99 {best:.1f} ms: {verdict} the {TARGET_P99_MS:.0f} ms target at this rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
