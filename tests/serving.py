"""Serve the agent in-process for a test: waitress on a free loopback port, real OPA behind it."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from waitress import trigger, wasyncore
from waitress.server import create_server

from pyagent.alerts import parse_webhook
from pyagent.app import Running, running_agent
from pyagent.console.app import HumansApp
from pyagent.server import WebhookApp
from pyagent.settings import Settings
from pyagent.store import Store

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@contextmanager
def serve(settings: Settings) -> Iterator[tuple[str, Running]]:
    """The agent built from ``settings``, serving its webhook; yields its base URL."""
    with running_agent(settings) as running:
        app = WebhookApp(
            running.agent, settings.webhook_token, settings.max_body_bytes, HumansApp(running.desk)
        )
        server = create_server(app, host="127.0.0.1", port=0, threads=4)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.effective_port}", running  # type: ignore[union-attr]
        finally:
            _stop(server, thread)


def _stop(server: Any, thread: threading.Thread) -> None:
    """Close every socket from the server's own loop thread, so the loop ends instead of
    polling descriptors closed under it; then stop its task threads."""
    stale: list[Any] = []

    def close_all() -> None:
        for channel in [*stale, server.trigger, *server._map.values()]:  # waitress has no public stop
            with contextlib.suppress(OSError):  # a descriptor was closed under it
                channel.close()
            with contextlib.suppress(OSError):  # its own descriptor, had close() stopped short
                wasyncore.dispatcher.close(channel)

    try:
        server.trigger.pull_trigger(close_all)
    except OSError:
        # Seen rarely on a loaded machine: the loop's trigger pipe was closed before the test
        # ended (what closed it was not found). Give the loop a new trigger; it polls it within
        # asyncore_loop_timeout (1 s) and runs close_all, which also closes the old one.
        stale.append(server.trigger)
        server.trigger = trigger.trigger(server._map)
        server.trigger.pull_trigger(close_all)
    thread.join(timeout=10)
    server.task_dispatcher.shutdown()


def example(name: str) -> dict[str, Any]:
    """An example webhook payload from ``examples/alerts``."""
    loaded: dict[str, Any] = json.loads((EXAMPLES / "alerts" / f"{name}.json").read_text())
    return loaded


def post(url: str, body: object, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(url + "/webhook/alertmanager", json=body, headers=headers, timeout=10)


def records(state: Path, kind: str) -> list[dict[str, Any]]:
    """The audit records of one kind, in order."""
    lines = (state / "audit.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def record_without_deciding(state: Path, *bodies: dict[str, Any]) -> None:
    """Deliveries recorded in the store as intake does, with no agent running to decide them."""
    store = Store(state / "agent.db")
    for body in bodies:
        store.record_delivery(parse_webhook(json.dumps(body).encode()))
    store.close()
