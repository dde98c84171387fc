"""The OPA the agent starts itself: its Go collector settings, read back from OPA's own metrics."""

from __future__ import annotations

import pytest
import requests

from pyagent.opa import EmbeddedOpa, default_policy_dir

GOGC_OFF = 2**64 - 1  # the runtime reports GOGC=off as -1, read as an unsigned 64-bit number
MIB = 2**20


def _gc_settings(opa: EmbeddedOpa) -> tuple[float, float]:
    """``(go_gc_gogc_percent, go_gc_gomemlimit_bytes)`` as the running OPA reports them."""
    values = {}
    for line in requests.get(opa.url + "/metrics", timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        if name in {"go_gc_gogc_percent", "go_gc_gomemlimit_bytes"}:
            values[name] = float(value)
    return values["go_gc_gogc_percent"], values["go_gc_gomemlimit_bytes"]


def test_embedded_opa_collects_at_a_memory_budget_not_at_every_heap_doubling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOGC", raising=False)
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    with EmbeddedOpa(default_policy_dir()) as opa:
        assert (float(GOGC_OFF), 256.0 * MIB) == _gc_settings(opa)


@pytest.mark.parametrize(("variable", "value"), [("GOGC", "200"), ("GOMEMLIMIT", "64MiB")])
def test_an_operators_own_collector_setting_wins(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.delenv("GOGC", raising=False)
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    monkeypatch.setenv(variable, value)
    with EmbeddedOpa(default_policy_dir()) as opa:
        gogc, limit = _gc_settings(opa)
    if variable == "GOGC":  # the operator's percentage, and no limit of ours
        assert (200.0, float(2**63 - 1)) == (gogc, limit)
    else:  # the operator's limit, with the collector's default percentage
        assert (100.0, 64.0 * MIB) == (gogc, limit)
