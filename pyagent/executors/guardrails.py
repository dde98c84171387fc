"""Guardrails outside the policy: defence in depth that holds even if OPA or the policy is wrong.

- **Kill switch**: checked immediately before every execution (the file is stat-ed each
  time, so ``touch`` stops new executions at once); executions already running keep
  going through their verification, and their rollback if it fails.
- **Per-target lock**: one action at a time on a target; a second is refused, not queued.
- **Global cap**: at most ``max_concurrent`` executions at once; one more is refused.
- **Abort signals**: a running verification watches an event that an abort sets.

A refusal names its reason; the caller tells humans. Nothing here retries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

DEFAULT_MAX_CONCURRENT = 4


class Guardrails:
    """Locks, the cap and abort signals for one agent process."""

    def __init__(
        self, kill_switch: Callable[[], bool] = lambda: False, max_concurrent: int = DEFAULT_MAX_CONCURRENT
    ) -> None:
        self._kill_switch = kill_switch
        self.max_concurrent = max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._guard = threading.Lock()
        self._targets: dict[str, threading.Lock] = {}
        self._watches: dict[str, threading.Event] = {}

    def kill_switch_engaged(self) -> bool:
        """True when the kill switch is on, or when it cannot be read (fail toward humans)."""
        try:
            return self._kill_switch()
        except OSError:
            return True

    def _lock_for(self, target: str) -> threading.Lock:
        with self._guard:
            return self._targets.setdefault(target, threading.Lock())

    @contextmanager
    def slot(self, target: str) -> Iterator[str | None]:
        """Hold the target's lock and one of the global slots; yields None, or why not."""
        lock = self._lock_for(target)
        if not lock.acquire(blocking=False):
            yield f"another action is running on {target}"
            return
        try:
            if not self._slots.acquire(blocking=False):
                yield f"{self.max_concurrent} actions are already running (the global cap)"
                return
            try:
                yield None
            finally:
                self._slots.release()
        finally:
            lock.release()

    @contextmanager
    def target(self, target: str, wait_seconds: float) -> Iterator[bool]:
        """Hold the target's lock, waiting up to ``wait_seconds`` for a running action to stop
        (an abort waits for the verification it cancelled); yields whether it is held."""
        lock = self._lock_for(target)
        held = lock.acquire(timeout=wait_seconds)
        try:
            yield held
        finally:
            if held:
                lock.release()

    @contextmanager
    def watch(self, decision_id: str) -> Iterator[threading.Event]:
        """The event an abort of ``decision_id`` sets, while its execution runs."""
        event = threading.Event()
        with self._guard:
            self._watches[decision_id] = event
        try:
            yield event
        finally:
            with self._guard:
                self._watches.pop(decision_id, None)

    def cancel(self, decision_id: str) -> bool:
        """Signal a running verification of ``decision_id`` to stop; False when none runs here."""
        with self._guard:
            event = self._watches.get(decision_id)
        if event is None:
            return False
        event.set()
        return True
