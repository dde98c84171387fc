"""Audit forwarding to a Splunk HTTP Event Collector: batched, retried, never blocking the local log."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import threading
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from http import HTTPStatus
from typing import Any

import requests

from pyagent.batching import take_batch

_log = logging.getLogger(__name__)


class _Outcome(Enum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"


class SplunkForwarder:
    """Sends audit records to a Splunk HTTP Event Collector from a daemon thread, in batches.

    ``submit`` never blocks: a full queue counts the record in ``dropped`` (the local log
    stays the record of truth). ``sent`` and ``failed`` count events delivered or given
    up on. ``flush`` waits for the queue to drain; ``close`` flushes and stops the thread.
    """

    def __init__(  # noqa: PLR0913 - each setting is one documented HEC or delivery knob
        self,
        url: str,
        token: str,
        *,
        session: requests.Session | None = None,
        index: str | None = None,
        source: str = "pyagent",
        host: str | None = None,
        batch_size: int = 50,
        queue_size: int = 10000,
        timeout: float = 2.0,
        max_attempts: int = 5,
        backoff: float = 0.2,
    ) -> None:
        if min(batch_size, queue_size, max_attempts) < 1:
            raise ValueError("batch_size, queue_size and max_attempts must be at least 1")
        self.url = url
        self.index = index
        self.source = source
        self.host = host or socket.gethostname()
        self.batch_size = batch_size
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.sent = self.failed = self.dropped = 0
        self._headers = {"Authorization": f"Splunk {token}", "Content-Type": "application/json"}
        self._owns_session = session is None
        self._session = session or requests.Session()
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=queue_size)
        self._pending = 0
        self._settled = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="splunk-forwarder", daemon=True)
        self._thread.start()

    def _event(self, record: Mapping[str, Any]) -> str:
        """The HEC event envelope for ``record``, as JSON."""
        envelope: dict[str, Any] = {
            "time": datetime.fromisoformat(str(record["ts"])).timestamp(),
            "host": self.host,
            "source": self.source,
            "sourcetype": "_json",
            "event": dict(record),
        }
        if self.index is not None:
            envelope["index"] = self.index
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))

    def submit(self, record: Mapping[str, Any]) -> None:
        """Queue ``record`` for sending without blocking; count it in ``dropped`` if there is no room."""
        event = self._event(record)
        with self._settled:
            if self._stop.is_set():
                self.dropped += 1
                return
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                self.dropped += 1
                return
            self._pending += 1

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every queued record is sent or failed."""
        with self._settled:
            return self._settled.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to ``timeout`` seconds, then stop the thread; later submits are dropped."""
        self.flush(timeout)
        self._stop.set()
        with contextlib.suppress(queue.Full):  # a full queue means a busy worker, which sees the flag
            self._queue.put_nowait(None)
        self._thread.join(timeout)
        if self._queue.qsize():
            _log.warning("splunk forwarder closed with %d events unsent", self._queue.qsize())
        if self._owns_session:
            self._session.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch, _ = take_batch(self._queue, self.batch_size)  # the stop sign comes with _stop set
            if batch:
                self._settle(len(batch), self._deliver("".join(batch).encode("utf-8")))

    def _deliver(self, body: bytes) -> _Outcome:
        """POST ``body``, retrying busy answers and connection errors with doubling backoff."""
        delay = self.backoff
        for attempt in range(1, self.max_attempts + 1):
            outcome = self._post(body)
            if outcome is not _Outcome.RETRY:
                return outcome
            if attempt == self.max_attempts or self._stop.wait(delay):
                break
            delay *= 2
        return _Outcome.FAILED

    def _post(self, body: bytes) -> _Outcome:
        """One POST to the collector, classified as sent, worth retrying, or failed."""
        try:
            response = self._session.post(self.url, data=body, headers=self._headers, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            _log.warning("splunk HEC at %s unreachable: %s", self.url, exc)
            return _Outcome.RETRY
        except requests.RequestException as exc:
            _log.warning("splunk HEC request to %s failed: %s", self.url, exc)
            return _Outcome.FAILED
        status = response.status_code
        if HTTPStatus.OK <= status < HTTPStatus.MULTIPLE_CHOICES:
            return _Outcome.SENT
        _log.warning("splunk HEC answered %d: %s", status, response.text[:200])
        if status == HTTPStatus.TOO_MANY_REQUESTS or status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            return _Outcome.RETRY
        return _Outcome.FAILED

    def _settle(self, count: int, outcome: _Outcome) -> None:
        with self._settled:
            if outcome is _Outcome.SENT:
                self.sent += count
            else:
                self.failed += count
            self._pending -= count
            self._settled.notify_all()
