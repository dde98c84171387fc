"""What a batch costs the deciding stage, by its size: a fixed cost per batch, and one per alert.

    python -m bench.batch_bench [--sizes 1,2,4,8,16,32] [--alerts 480] [--rounds 2] [--rate 300]

Starts one ``opa run --server`` and builds the agent in this process as ``pyagent serve``
does, without HTTP. For each size, ``--alerts`` alerts are recorded beforehand, then queued
``size`` at a time, each batch only once the one before is decided and carried out, so every
batch has exactly that size. Prints the process's CPU and the wall time per batch, each
against a batch of one alert measured in the same run, then the least-squares line through
them: what every batch costs whatever its size, and what each alert adds.

Under load the worker takes every alert queued while it carried out the batch before, so a
batch cycle of ``T`` ms at ``R`` alerts/s holds ``R * T`` alerts. With the fitted wall time
``T = fixed + each * n``, the cycle settles at ``T = fixed / (1 - R * each)``: an alert
waits for the cycle under way to end, and is decided in the next. That holds only while the
process does nothing else: a front end in the same process takes the interpreter from the
worker, and lengthens every cycle.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

from bench.inprocess import WARMUP, deliveries, warm_agent
from pyagent.agent import Agent
from pyagent.opa import EmbeddedOpa, default_policy_dir


@dataclass(frozen=True)
class Cost:
    size: int
    cpu_ms: float  # process CPU per batch, every thread
    wall_ms: float  # per batch, queued to carried out


def measure(agent: Agent, size: int, alerts: int, first: int) -> Cost:
    """Batches of ``size`` alerts (``alerts`` in all, serials from ``first``), one at a time."""
    count = alerts // size * size
    recorded = [agent.store.record_delivery(d)[0] for d in deliveries(first, count)]
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, count, size):
        for stored in recorded[start : start + size]:
            agent.queue_recorded(stored)
        if not agent.drain(60):
            raise SystemExit(f"a batch of {size} was not decided within 60 s")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    batches = count // size
    return Cost(size, cpu * 1000 / batches, wall * 1000 / batches)


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """The least-squares line ``y = fixed + each * x`` through ``points``: (fixed, each)."""
    slope, intercept = statistics.linear_regression([x for x, _ in points], [y for _, y in points])
    return intercept, slope


def _median(costs: list[Cost], size: int) -> Cost:
    runs = [c for c in costs if c.size == size]
    return Cost(size, statistics.median(c.cpu_ms for c in runs), statistics.median(c.wall_ms for c in runs))


def report(costs: list[Cost], sizes: list[int], rate: float) -> None:
    one = _median(costs, 1)
    columns = [("size", 5), ("CPU ms/batch", 13), ("x one", 6)]
    columns += [("per alert", 10), ("wall ms/batch", 14), ("x one", 6)]
    print(" " + "".join(f" {name:>{width}}" for name, width in columns))
    for size in sizes:
        cost = _median(costs, size)
        print(
            f"  {size:>5} {cost.cpu_ms:>13.2f} {cost.cpu_ms / one.cpu_ms:>6.2f} {cost.cpu_ms / size:>10.2f}"
            f" {cost.wall_ms:>14.2f} {cost.wall_ms / one.wall_ms:>6.2f}"
        )
    cpu_fixed, cpu_each = fit([(c.size, c.cpu_ms) for c in costs])
    wall_fixed, wall_each = fit([(c.size, c.wall_ms) for c in costs])
    print(f"\nper batch, CPU: {cpu_fixed:.2f} ms + {cpu_each:.2f} ms per alert")
    print(f"per batch, wall: {wall_fixed:.2f} ms + {wall_each:.2f} ms per alert")
    load = rate * wall_each / 1000
    if load >= 1:
        print(f"at {rate:.0f} alerts/s a batch takes longer than its alerts take to arrive: no settled cycle")
        return
    cycle = wall_fixed / (1 - load)
    print(
        f"at {rate:.0f} alerts/s, with nothing else in the process: a cycle settles at {cycle:.1f} ms,"
        f" batches of {rate * cycle / 1000:.1f}; an alert is decided one to two cycles after it arrives"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4,8,16,32", help="batch sizes, comma-separated")
    parser.add_argument("--alerts", type=int, default=480, help="alerts decided at each size")
    parser.add_argument("--rounds", type=int, default=2, help="times each size is measured, alternating")
    parser.add_argument("--rate", type=float, default=300.0, help="alerts/s for the settled cycle")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if 1 not in sizes:
        sizes.insert(0, 1)  # the baseline
    costs: list[Cost] = []
    with EmbeddedOpa(default_policy_dir()) as opa, warm_agent(opa.url, 1) as (agent, _):
        serial = 1 + WARMUP
        for _ in range(args.rounds):
            for size in sizes:
                costs.append(measure(agent, size, args.alerts, serial))
                serial += args.alerts
    print(f"the deciding stage in process, no HTTP: batches of a fixed size, {args.alerts} alerts at each")
    report(costs, sizes, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
