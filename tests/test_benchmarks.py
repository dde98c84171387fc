"""The load benchmarks' own machinery, at a gentle rate: each server they measure takes every
alert and audits its decision, so a figure they print is never for a server that dropped work."""

from __future__ import annotations

import pytest

from bench.e2e_bench import measure
from bench.floor_bench import SERVERS
from pyagent.opa import EmbeddedOpa


@pytest.mark.parametrize("server", list(SERVERS))
def test_each_measured_server_decides_and_audits_every_alert_it_is_sent(
    opa_server: EmbeddedOpa, server: str
) -> None:
    [step] = measure(SERVERS[server], opa_server, [20.0], 1.5, 0.0)
    assert (step.sent, step.lost) == (30, 0)
    assert step.p50_ms <= step.p99_ms
    assert step.intake_ms[0] <= step.p50_ms  # taken in before decided, by the audit log's own clock
