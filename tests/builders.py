"""Typed values the tests build by hand."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pyagent.alerts import Alert

FINGERPRINT = "c7f3a1b2d4e5f601"


def firing_alert(
    labels: Mapping[str, str], annotations: Mapping[str, str] | None = None, fingerprint: str = FINGERPRINT
) -> Alert:
    """A firing alert as intake would record it, started two minutes before the tests' now."""
    return Alert(
        group_key="{}:{}",
        fingerprint=fingerprint,
        status="firing",
        starts_at="2026-11-26T11:58:00Z",
        ends_at="0001-01-01T00:00:00Z",
        labels=MappingProxyType(dict(labels)),
        annotations=MappingProxyType(dict(annotations or {})),
    )
