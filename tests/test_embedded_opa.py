"""The OPA the agent starts itself: its Go collector settings, read back from OPA's own metrics."""

from __future__ import annotations

import pytest

from pyagent.opa import EmbeddedOpa, default_policy_dir
from tests.serving import go_gc_settings

GOGC_OFF = 2**64 - 1  # the runtime reports GOGC=off as -1, read as an unsigned 64-bit number
MIB = 2**20


def test_embedded_opa_collects_at_a_memory_budget_not_at_every_heap_doubling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOGC", raising=False)
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    with EmbeddedOpa(default_policy_dir()) as opa:
        assert (float(GOGC_OFF), 256.0 * MIB) == go_gc_settings(opa.url + "/metrics")


@pytest.mark.parametrize(("variable", "value"), [("GOGC", "200"), ("GOMEMLIMIT", "64MiB")])
def test_an_operators_own_collector_setting_wins(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.delenv("GOGC", raising=False)
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    monkeypatch.setenv(variable, value)
    with EmbeddedOpa(default_policy_dir()) as opa:
        gogc, limit = go_gc_settings(opa.url + "/metrics")
    if variable == "GOGC":  # the operator's percentage, and no limit of ours
        assert (200.0, float(2**63 - 1)) == (gogc, limit)
    else:  # the operator's limit, with the collector's default percentage
        assert (100.0, 64.0 * MIB) == (gogc, limit)
