"""Serve the agent in-process for a test: uvicorn on a free loopback port, real OPA behind it."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from pyagent.alerts import parse_webhook
from pyagent.app import Running, running_agent
from pyagent.console.app import HumansApp
from pyagent.server import WebhookApp, server
from pyagent.settings import Settings
from pyagent.store import Store

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def loopback_socket() -> socket.socket:
    """A listening socket on a free loopback port, for a server whose port is chosen by the OS."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextmanager
def serve(settings: Settings) -> Iterator[tuple[str, Running]]:
    """The agent built from ``settings``, serving its webhook; yields its base URL."""
    with running_agent(settings) as running:
        app = WebhookApp(
            running.agent, settings.webhook_token, settings.max_body_bytes, HumansApp(running.desk)
        )
        sock = loopback_socket()
        uvicorn = server(app, "127.0.0.1", sock.getsockname()[1])
        thread = threading.Thread(target=uvicorn.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not uvicorn.started:
                if time.monotonic() > deadline or not thread.is_alive():
                    raise RuntimeError("the test server did not start")
                time.sleep(0.01)
            yield f"http://127.0.0.1:{sock.getsockname()[1]}", running
        finally:
            uvicorn.should_exit = True
            thread.join(timeout=30)
            app.close()
            sock.close()


def example(name: str) -> dict[str, Any]:
    """An example webhook payload from ``examples/alerts``."""
    loaded: dict[str, Any] = json.loads((EXAMPLES / "alerts" / f"{name}.json").read_text())
    return loaded


def post(url: str, body: object, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(url + "/webhook/alertmanager", json=body, headers=headers, timeout=10)


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now; False while nothing listens there yet."""
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def go_gc_settings(metrics_url: str) -> tuple[float, float]:
    """``(go_gc_gogc_percent, go_gc_gomemlimit_bytes)`` as a Go process (OPA) reports them on
    its Prometheus ``metrics_url``."""
    values = {}
    for line in requests.get(metrics_url, timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        if name in {"go_gc_gogc_percent", "go_gc_gomemlimit_bytes"}:
            values[name] = float(value)
    return values["go_gc_gogc_percent"], values["go_gc_gomemlimit_bytes"]


def records(state: Path, kind: str) -> list[dict[str, Any]]:
    """The audit records of one kind, in order. Read while the agent runs, the last line may
    be half written: only lines already ended are read."""
    text = (state / "audit.jsonl").read_text()
    lines = text[: text.rfind("\n") + 1].splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def record_without_deciding(state: Path, *bodies: dict[str, Any]) -> None:
    """Deliveries recorded in the store as intake does, with no agent running to decide them."""
    store = Store(state / "agent.db")
    for body in bodies:
        store.record_delivery(parse_webhook(json.dumps(body).encode()))
    store.close()


def record_decided_without_acting(state: Path, body: dict[str, Any]) -> list[str]:
    """A delivery recorded and its alerts' decisions committed, as the worker commits them,
    with nothing carried out: the agent stopped right after that commit. The decision ids."""
    store = Store(state / "agent.db")
    stored = store.record_delivery(parse_webhook(json.dumps(body).encode()))
    recorded = store.record_decisions([(alert, {"level": 1}, "input-hash") for alert in stored])
    store.close()
    return [result[0] for result in recorded if isinstance(result, tuple)]
