"""The human loop's timing: how fast an approval request reaches Slack, how exactly it times out.

    python -m bench.approval_bench [--alerts 30] [--timeout 3] [--spacing 0.25]

Starts ``pyagent serve`` (a separate process, its own OPA) configured with a policy copy
whose approvals time out after ``--timeout`` seconds, a loopback Slack Web API and a
PagerDuty Events API (the test fakes, which stamp each request on arrival). Then posts
``--alerts`` regulated alerts (always level 2), one every ``--spacing`` seconds, each with
its own fingerprint, and waits until every approval has been posted to Slack, has expired
and has paged on-call. It prints:

* webhook to Slack: from the webhook POST being sent (client clock) and from its ``intake``
  audit record (the agent's clock, once the alert is durably recorded) to the Slack fake
  receiving ``chat.postMessage`` for that alert (p50, p90, max);
* timeout accuracy: ``fired_at - due_at`` of every ``approval_expired`` audit record
  (p50, max), and from ``due_at`` to PagerDuty receiving the page (p50, max).

Everything runs on one machine and one clock.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import yaml

from bench.stats import epoch, percentile
from pyagent.opa import free_port
from tests.fakes import FakePagerDuty, FakeSlack
from tests.humans import policy_with_timeout

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "examples" / "alerts" / "regulated-pci.json"


def _delivery(template: dict[str, Any], serial: int) -> dict[str, Any]:
    body = copy.deepcopy(template)
    alert = body["alerts"][0]
    alert["fingerprint"] = f"{0xB0000000 + serial:016x}"
    alert["startsAt"] = datetime.fromtimestamp(time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return body


def _records(state: Path, kind: str) -> list[dict[str, Any]]:
    path = state / "audit.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


def _serve(
    work: Path, slack: FakeSlack, pagerduty: FakePagerDuty, timeout: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "state_dir": str(work / "state"),
        "policy_dir": str(policy_with_timeout(work, timeout)),
        "inventory": str(ROOT / "examples" / "inventory.yaml"),
        "slack_api_url": slack.api_url,
        "slack_bot_token": FakeSlack.TOKEN,
        "slack_channel": "#approvals",
        "pagerduty_url": pagerduty.url,
        "pagerduty_routing_key": FakePagerDuty.ROUTING_KEY,
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    binary = str(Path(sys.executable).parent / "pyagent")
    log = (work / "agent.log").open("wb")
    process = subprocess.Popen(
        [binary, "serve", "--config", str(work / "config.yaml")], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.1)
    process.terminate()
    raise SystemExit(f"the agent did not become healthy; see {work / 'agent.log'}")


def _summary(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"{name}: n={len(ms)} p50={statistics.median(ms):.1f} ms p90={percentile(ms, 0.9):.1f} ms "
        f"max={max(ms):.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=30)
    parser.add_argument("--timeout", type=int, default=3, help="approval timeout in seconds")
    parser.add_argument("--spacing", type=float, default=0.25, help="seconds between alerts")
    args = parser.parse_args()
    template = json.loads(TEMPLATE.read_text())
    slack, pagerduty = FakeSlack(), FakePagerDuty()
    with tempfile.TemporaryDirectory(prefix="pyagent-approval-bench-") as scratch:
        work = Path(scratch)
        process, url = _serve(work, slack, pagerduty, args.timeout)
        try:
            sent: dict[str, float] = {}
            session = requests.Session()
            for serial in range(args.alerts):
                body = _delivery(template, serial)
                sent[body["alerts"][0]["fingerprint"]] = time.time()
                session.post(url + "/webhook/alertmanager", json=body, timeout=10).raise_for_status()
                time.sleep(args.spacing)
            slack.wait_for(args.alerts, "/api/chat.postMessage", timeout=120)
            pagerduty.wait_for(args.alerts, timeout=120 + args.timeout)
            state = work / "state"
            deadline = time.monotonic() + 30
            while len(_records(state, "approval_expired")) < args.alerts and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(timeout=30)
        intake = {r["fingerprint"]: epoch(r["received_at"]) for r in _records(state, "intake")}
        from_send, from_intake = [], []
        for request in slack.received("/api/chat.postMessage"):
            text = json.dumps(request.json()["blocks"])
            fingerprint = next(f for f in sent if f in text)
            from_send.append(request.at - sent[fingerprint])
            from_intake.append(request.at - intake[fingerprint])
        expired = _records(state, "approval_expired")
        due = {r["approval_id"]: epoch(r["due_at"]) for r in expired}
        late = [r["late_seconds"] for r in expired]
        paged = [
            r.at - due[r.json()["payload"]["custom_details"]["approval_id"]]
            for r in pagerduty.received("/v2/enqueue")
        ]
    slack.close()
    pagerduty.close()
    print(f"{args.alerts} regulated (level 2) alerts, one every {args.spacing} s, timeout {args.timeout} s")
    print(_summary("webhook sent -> Slack chat.postMessage received", from_send))
    print(_summary("intake recorded -> Slack chat.postMessage received", from_intake))
    print(_summary("timeout accuracy: fired_at - due_at", late))
    print(_summary("due_at -> PagerDuty trigger received", paged))
    lost = args.alerts - len(late)
    print(f"approvals that did not expire: {lost}; pages: {len(paged)} for {len(late)} expiries")
    return 0 if lost == 0 and len(paged) == len(late) and all(v >= 0 for v in late) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
