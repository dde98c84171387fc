"""The agent against the floor: the least a pipeline on the same stack does, same load.

    python -m bench.floor_bench [--rates 300] [--seconds 10] [--rounds 2]

Starts one ``opa run --server`` on the project's policy, then, in each round, loads each of
three servers in turn exactly as ``bench.e2e_bench`` loads the agent (open-loop single-alert
deliveries after an uncounted warm-up, timed from scheduled send to the fsynced ``decision``
audit record), each on a fresh state directory, all asking that one OPA:

- ``agent``: ``pyagent serve``;
- ``floor``: ``bench.floor_server``, which does only what the webhook-to-decision contract
  makes unavoidable (HTTP, validation, the durable intake, one batched OPA question, the
  decisions' commit and their fsynced audit records), with the agent's own parts;
- ``floor+approval``: the same, then what the benchmark alert's level-2 decision asks for
  (approvals committed, audited, announced, their outcomes audited).

Rounds alternate the three, because this machine's speed drifts by tens of percent within
minutes. Prints p50 and p99, decided/s, alerts lost and CPU per alert for each run, and per
server whether p99 was under 50 ms at every rate with none lost. The floor gathers no
context, opens no incident and keeps no metric, so how far it stands from the target says
how much of the target is reachable on this machine at all.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from bench.e2e_bench import TARGET_P99_MS, Step, agent_command, measure
from pyagent.opa import EmbeddedOpa, default_policy_dir


def floor_command(*, approve: bool) -> Callable[[int, Path, str], list[str]]:
    def command(port: int, state: Path, opa_url: str) -> list[str]:
        return [
            sys.executable, "-m", "bench.floor_server",
            "--listen", f"127.0.0.1:{port}",
            "--state-dir", str(state),
            "--opa-url", opa_url,
        ] + (["--approve"] if approve else [])  # fmt: skip

    return command


SERVERS = {
    "agent": agent_command,
    "floor": floor_command(approve=False),
    "floor+approval": floor_command(approve=True),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="300", help="offered alerts/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each load step")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each server, alternating")
    parser.add_argument("--warmup-seconds", type=float, default=3.0, help="uncounted load at the lowest rate")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    runs: dict[str, list[list[Step]]] = {name: [] for name in SERVERS}
    with EmbeddedOpa(default_policy_dir()) as opa:
        for _round in range(args.rounds):
            for name, command in SERVERS.items():
                runs[name].append(measure(command, opa, rates, args.seconds, args.warmup_seconds))
    print("webhook POST -> decision fsynced to the audit log, one alert per delivery")
    print(
        f"  {'server':<15} {'offered/s':>9} {'lost':>5} {'p50 ms':>8} {'p99 ms':>8} {'decided/s':>10}"
        "   CPU ms per alert: server / opa / load generator"
    )
    for name, steps_of_runs in runs.items():
        for steps in steps_of_runs:
            for step in steps:
                cpu = step.cpu_ms
                print(
                    f"  {name:<15} {step.rate:>9.0f} {step.lost:>5} {step.p50_ms:>8.2f} {step.p99_ms:>8.2f}"
                    f" {step.sustained:>10.1f}   {cpu['agent']:.2f} / {cpu['opa']:.2f} / {cpu['load']:.2f}"
                )
    print()
    for name, steps_of_runs in runs.items():
        met = sum(all(s.p99_ms < TARGET_P99_MS and s.lost == 0 for s in steps) for steps in steps_of_runs)
        target = f"p99 under {TARGET_P99_MS:.0f} ms, none lost, at every rate"
        print(f"{name}: {target} in {met} of {args.rounds} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
