"""The embedded default: the log and the terminal."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

from pyagent.encoders import SORTED
from pyagent.notifiers.outbox import Delivery

log = logging.getLogger("pyagent.notify")


class ConsoleNotifier:
    """Writes each notification as one line to a stream (stderr by default) and to the log."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def notify(self, kind: str, summary: str, details: dict[str, Any]) -> None:
        log.info("%s: %s", kind, summary)
        with self._lock:
            self.stream.write(f"[{kind}] {summary} {SORTED.encode(details)}\n")
            self.stream.flush()

    def deliver(self, delivery: Delivery) -> dict[str, Any]:
        """The outbox's ``log`` channel."""
        payload = dict(delivery.notice.payload)
        self.notify(
            delivery.notice.kind,
            str(payload.pop("text", "")),
            {"subject": delivery.notice.subject, **payload},
        )
        return {}
