"""Test doubles for SaaS services that cannot run here, faked at the wire on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class HecRequest:
    """One request the fake collector received."""

    method: str
    path: str
    authorization: str | None
    body: bytes

    def events(self) -> list[dict[str, Any]]:
        """The concatenated JSON objects of the body, in order."""
        decoder, text, found = json.JSONDecoder(), self.body.decode("utf-8"), []
        index = 0
        while index < len(text):
            event, index = decoder.raw_decode(text, index)
            found.append(event)
            while index < len(text) and text[index].isspace():
                index += 1
        return found


class _HecServer(ThreadingHTTPServer):
    fake: FakeHec


class _HecHandler(BaseHTTPRequestHandler):
    server: _HecServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status = self.server.fake.record(
            HecRequest("POST", self.path, self.headers.get("Authorization"), body)
        )
        answer = json.dumps({"text": status.phrase, "code": 0 if status == HTTPStatus.OK else 9}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it
        """Keep test output quiet."""


class FakeHec:
    """A Splunk HEC on 127.0.0.1: records every request, answers ``statuses`` first, then 200.

    Clear ``gate`` to hold answers until it is set again; ``arrived`` is set by each request.
    """

    def __init__(self, statuses: tuple[HTTPStatus, ...] = ()) -> None:
        self.requests: list[HecRequest] = []
        self.gate = threading.Event()
        self.gate.set()
        self.arrived = threading.Event()
        self._statuses = list(statuses)
        self._lock = threading.Lock()
        self._server = _HecServer(("127.0.0.1", 0), _HecHandler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/services/collector/event"

    def record(self, request: HecRequest) -> HTTPStatus:
        with self._lock:
            self.requests.append(request)
            status = self._statuses.pop(0) if self._statuses else HTTPStatus.OK
        self.arrived.set()
        self.gate.wait(timeout=10)
        return status

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [event for request in self.requests for event in request.events()]

    def close(self) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@dataclass(frozen=True)
class Answer:
    """What a fake JSON API answers: a status, a JSON body, and how long to wait first."""

    status: int
    body: object
    delay: float = 0.0


Responder = Callable[[str, dict[str, Any]], Answer]


class _JsonServer(ThreadingHTTPServer):
    fake: FakeJsonApi


class _JsonHandler(BaseHTTPRequestHandler):
    server: _JsonServer

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request: dict[str, Any] = json.loads(raw)
        answer = self.server.fake.answer(self.path, request, self.headers.get("Authorization"))
        time.sleep(answer.delay)
        data = json.dumps(answer.body).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (a timeout test)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it
        """Keep test output quiet."""


class FakeJsonApi:
    """A JSON-over-HTTP service on 127.0.0.1 (an LLM endpoint, HolmesGPT): records each
    request with its Authorization header and answers with ``responder(path, body)``."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[tuple[str, dict[str, Any], str | None]] = []
        self._lock = threading.Lock()
        self._server = _JsonServer(("127.0.0.1", 0), _JsonHandler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, path: str, body: dict[str, Any], authorization: str | None) -> Answer:
        with self._lock:
            self.requests.append((path, body, authorization))
        return self.responder(path, body)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
