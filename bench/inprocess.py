"""The agent built in this process, as ``pyagent serve`` builds it, warmed up: for the
benchmarks that drive its deciding stage without HTTP."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.e2e_bench import INVENTORY, TEMPLATE, _delivery
from pyagent.agent import Agent
from pyagent.alerts import Delivery, parse_webhook
from pyagent.app import running_agent
from pyagent.server import settle_collector
from pyagent.settings import Settings

WARMUP = 300


def deliveries(first: int, count: int) -> list[Delivery]:
    """``count`` single-alert deliveries of the benchmark's alert, each a new alert, parsed."""
    template = json.loads(TEMPLATE.read_text())
    return [parse_webhook(json.dumps(_delivery(template, s)).encode()) for s in range(first, first + count)]


@contextlib.contextmanager
def warm_agent(opa_url: str, first: int) -> Iterator[tuple[Agent, Path]]:
    """The agent asking ``opa_url``, on a fresh state directory (yielded with it), after
    :data:`WARMUP` alerts (serials from ``first``) were decided: its connections open, OPA's
    batch query compiled, the collector settled as ``pyagent serve`` settles it."""
    with (
        tempfile.TemporaryDirectory(prefix="pyagent-inprocess-") as tmp,
        contextlib.redirect_stderr(io.StringIO()),  # the log channel's line per approval
    ):
        settings = Settings(state_dir=Path(tmp), inventory=INVENTORY, opa_url=opa_url)
        with running_agent(settings) as running:
            agent = running.agent
            settle_collector()  # as `pyagent serve` does once the agent is built
            for delivery in deliveries(first, WARMUP):
                agent.intake(delivery)
            if not agent.drain(120):
                raise SystemExit("warm-up alerts were not decided within 120 s")
            yield agent, Path(tmp)
