"""Notifiers tell humans. One file per channel."""

from __future__ import annotations

from typing import Any, Protocol


class Notifier(Protocol):
    def notify(self, kind: str, summary: str, details: dict[str, Any]) -> None: ...
