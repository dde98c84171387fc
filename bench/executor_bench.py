"""A level-4 rolling restart against a real kube-apiserver: webhook received to patch sent.

    python -m bench.executor_bench [--runs 50]

Starts etcd and kube-apiserver (as the tests do), a Deployment, a stand-in Deployment
controller that completes each rollout, and the agent in-process (uvicorn, its own OPA, the
Kubernetes executor). The example history is imported so the OOM alert decides level 4; the
policy copy used here lifts the autonomous rate limit, or the fourth restart in an hour would
be capped at level 2. Then, in the same run:

1. **Baseline**: the bench itself sends the same strategic merge patch ``kubectl rollout
   restart`` sends, with the same client library, ``--runs`` times.
2. **Agent**: ``--runs`` single-alert webhook deliveries, one at a time (each a new alert,
   each waiting for the previous action to verify, so the per-target lock never refuses).

Both are timed the same way: from just before the request leaves the bench (the POST of the
webhook, or the PATCH) to the moment a watch on the Deployment sees the new generation, so
the watch's own delay is in both. The agent's figure covers intake (fsynced), context, the
OPA decision, the decision and audit records (fsynced), the ledger guard, the server-side
dry-run plan, the read and the patch. Prints p50 and p99 of each and their difference, and,
from the audit log's own timestamps, intake recorded to the patch answered.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import urllib3
from kubernetes import client, watch

from pyagent.kube import KubeTarget, api_client
from pyagent.opa import default_policy_dir
from pyagent.settings import Settings
from pyagent.sources import history_import
from pyagent.sources.history_sqlite import HistorySQLite
from tests.kube import kube_apiserver
from tests.kube_world import RolloutController, World
from tests.serving import serve

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NAME = "checkout"


class Generations:
    """Watches one Deployment and records when each new generation was first seen."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.seen: dict[int, float] = {}
        self._changed = threading.Condition()
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        apps = client.AppsV1Api(self.world.api)
        stream = self._watch.stream(  # type: ignore[no-untyped-call]
            apps.list_namespaced_deployment, self.world.namespace, field_selector=f"metadata.name={NAME}"
        )
        with contextlib.suppress(urllib3.exceptions.HTTPError, OSError):  # the server stopped first
            for event in stream:
                generation = int(event["object"].metadata.generation)
                with self._changed:
                    self.seen.setdefault(generation, time.perf_counter())
                    self._changed.notify_all()

    def wait(self, generation: int, timeout: float = 30.0) -> float:
        """When ``generation`` was first seen."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while generation not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"generation {generation} not seen within {timeout} s")
                self._changed.wait(left)
            return self.seen[generation]

    def stop(self) -> None:
        self._watch.stop()  # type: ignore[no-untyped-call]


def _restart_body() -> dict[str, Any]:
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": at}}}}}


def _baseline(world: World, generations: Generations, runs: int) -> list[float]:
    apps = client.AppsV1Api(api_client(KubeTarget(world.kubeconfig)))
    timings = []
    for _ in range(runs):
        generation = int(world.read(NAME)["metadata"]["generation"]) + 1
        started = time.perf_counter()
        apps.patch_namespaced_deployment(
            NAME,
            world.namespace,
            _restart_body(),
            _content_type="application/strategic-merge-patch+json",
            _preload_content=False,
            _request_timeout=5,
        )
        timings.append(generations.wait(generation) - started)
    return timings


def _payload(namespace: str) -> dict[str, Any]:
    text = (EXAMPLES / "alerts" / "level-4-oom-restart.json").read_text().replace('"shop"', f'"{namespace}"')
    payload: dict[str, Any] = json.loads(text)
    fingerprint = uuid.uuid4().hex[:16]
    for alert in payload["alerts"]:
        alert["fingerprint"] = fingerprint
        alert["startsAt"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return payload


STAGES = (("intake", "decision"), ("decision", "execute"), ("execute", "executed"))


def _server_side(audit: Path) -> dict[str, list[float]]:
    """Per alert, by the audit log's own clock: ``intake`` (received, durably recorded) to the
    ``executed`` step (the patch answered), and each stage between: context and OPA up to the
    decision record; incident, plan (the dry run) and ledger up to ``execute``; read and patch."""
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    marks: dict[str, dict[str, datetime]] = {}
    for record in records:
        mark = record["kind"] if record["kind"] in {"intake", "decision"} else record.get("step")
        if mark in {"intake", "decision", "execute", "executed"} and "fingerprint" in record:
            moment = record["received_at"] if mark == "intake" else record["ts"]
            marks.setdefault(record["fingerprint"], {})[mark] = datetime.fromisoformat(moment)
    complete = [m for m in marks.values() if len(m) == 4]
    spans = {"intake -> patch answered": [(m["executed"] - m["intake"]).total_seconds() for m in complete]}
    for start, end in STAGES:
        spans[f"  {start} -> {end}"] = [(m[end] - m[start]).total_seconds() for m in complete]
    return spans


def _agent(
    world: World, generations: Generations, runs: int, workdir: Path
) -> tuple[list[float], dict[str, list[float]], list[str]]:
    policy = workdir / "rego"
    shutil.copytree(default_policy_dir(), policy)
    data = policy / "escalation" / "policy.json"
    document = json.loads(data.read_text())
    document["policy"]["autonomous_rate_limit"]["max_actions"] = 1_000_000
    data.write_text(json.dumps(document))
    inventory = workdir / "inventory.yaml"
    inventory.write_text(
        (EXAMPLES / "inventory.yaml").read_text().replace("namespace: shop", f"namespace: {world.namespace}")
    )
    state = workdir / "state"
    state.mkdir()
    history_import.import_incidents(
        HistorySQLite(state / "history.db"), history_import.load(EXAMPLES / "history.yaml")
    )
    settings = Settings(
        state_dir=state,
        policy_dir=policy,
        inventory=inventory,
        executor="kubernetes",
        kubeconfig=world.kubeconfig,
    )
    timings, outcomes = [], []
    with serve(settings) as (url, running), requests.Session() as session:
        for _ in range(runs):
            generation = int(world.read(NAME)["metadata"]["generation"]) + 1
            body = json.dumps(_payload(world.namespace))
            started = time.perf_counter()
            answer = session.post(
                f"{url}/webhook/alertmanager",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
            answer.raise_for_status()
            timings.append(generations.wait(generation) - started)
            if not running.agent.drain(60):
                raise TimeoutError("the agent did not finish an action within 60 s")
        outcomes = [
            json.loads(line)["outcome"]
            for line in (state / "audit.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "outcome"
        ]
    return timings, _server_side(state / "audit.jsonl"), outcomes


def _report(name: str, timings: list[float]) -> float:
    ordered = sorted(timings)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    print(f"{name:<34} n={len(ordered):<4} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
    return p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyagent-executor-bench-") as scratch:
        workdir = Path(scratch)
        with kube_apiserver(workdir / "kube") as cluster:
            world = World(cluster, workdir)
            world.deployment(NAME, replicas=5)
            generations = Generations(world)
            with RolloutController(world).running():
                baseline = _baseline(world, generations, args.runs)
                agent, inside, outcomes = _agent(world, generations, args.runs, workdir)
            generations.stop()
    base = _report("bare client PATCH (baseline)", baseline)
    mine = _report("webhook -> agent -> PATCH", agent)
    print(f"agent minus baseline at p50: {mine - base:.1f} ms")
    print("by the audit log's clock:")
    for name, spans in inside.items():
        _report(name, spans)
    print(f"outcomes: {', '.join(f'{o}={outcomes.count(o)}' for o in sorted(set(outcomes)))}")


if __name__ == "__main__":
    main()
