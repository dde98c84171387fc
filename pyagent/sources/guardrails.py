"""Guardrail source: the operator's kill switch and the count of recent autonomous actions.

The kill switch is on when the configuration says so or when the kill-switch file
exists; the file is checked on every call, so an operator can ``touch`` it (and
``rm`` it) without a restart. Actions are counted over the policy's rate-limit
window, ending at ``now``. Any error turns the kill switch on and reports the
window as full, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

from pyagent.errors import HistoryError
from pyagent.sources import GuardrailFacts


@runtime_checkable
class AutonomousCounter(Protocol):
    def count_autonomous_actions(self, since: datetime) -> int: ...


class FileGuardrails:
    """:class:`pyagent.sources.GuardrailSource` from a kill-switch file and the incident history."""

    def __init__(
        self,
        kill_switch_path: Path,
        history: AutonomousCounter | Callable[[datetime], int],
        window_seconds: int,
        config_kill_switch: bool = False,
    ) -> None:
        self._path = kill_switch_path
        self._count = history.count_autonomous_actions if isinstance(history, AutonomousCounter) else history
        self._window = timedelta(seconds=window_seconds)
        self._config_kill_switch = config_kill_switch

    def state(self, now: datetime) -> GuardrailFacts:
        try:
            file_on = self._path.exists()
        except OSError as exc:
            return GuardrailFacts.worst_case(f"kill switch {self._path} cannot be checked: {exc}")
        try:
            count = self._count(now - self._window)
        except (HistoryError, OSError, ValueError) as exc:
            return GuardrailFacts.worst_case(f"autonomous actions cannot be counted: {exc}")
        return GuardrailFacts(
            kill_switch=self._config_kill_switch or file_on, autonomous_actions_in_window=count
        )
