"""Figures the benchmarks print, and the audit log's times they are computed from."""

from __future__ import annotations

from datetime import datetime


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` fall (nearest rank, no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def epoch(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC time from the audit log (``...Z``)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
