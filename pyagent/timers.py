"""Deadlines that fire on time: one thread sleeping until the earliest one is due.

Each deadline is a key and a wall-clock due time (seconds since the epoch, as stored).
The thread waits on a condition until the earliest due time or until a new earlier
deadline is added, so a deadline fires within scheduling jitter of its due time, not at
the next tick of a periodic sweep. Callers persist their deadlines and add them again
after a restart; one already past fires at once.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("pyagent.timers")
RETRY_SECONDS = 1.0


class Deadlines:
    """Calls ``fire(key, due)`` once per key added, at (never before) its due time."""

    def __init__(self, fire: Callable[[str, float], None], clock: Callable[[], float] = time.time) -> None:
        self._fire = fire
        self._clock = clock
        self._heap: list[tuple[float, str]] = []
        self._keys: set[str] = set()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def add(self, key: str, due: float) -> None:
        """Schedule ``key`` at ``due``; a key already scheduled is not added twice."""
        with self._cond:
            if key in self._keys:
                return
            self._keys.add(key)
            heapq.heappush(self._heap, (due, key))
            if self._heap[0][1] == key:  # only a new earliest deadline changes how long to sleep
                self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pyagent-deadlines", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _due(self) -> tuple[str, float] | None:
        """Wait for the earliest deadline to come due; None when stopping."""
        with self._cond:
            while not self._stopping:
                if not self._heap:
                    self._cond.wait()
                    continue
                due, key = self._heap[0]
                left = due - self._clock()
                if left <= 0:
                    heapq.heappop(self._heap)
                    self._keys.discard(key)
                    return key, due
                self._cond.wait(timeout=left)
            return None

    def _run(self) -> None:
        while (item := self._due()) is not None:
            key, due = item
            try:
                self._fire(key, due)
            except Exception:
                log.exception("deadline %s failed; retrying in %s s", key, RETRY_SECONDS)
                self.add(key, self._clock() + RETRY_SECONDS)
