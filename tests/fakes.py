"""Test doubles for SaaS services that cannot run here, faked at the wire on loopback."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Recorded:
    """One request a fake SaaS received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)  # when it arrived (seconds since the epoch)

    def json(self) -> Any:
        return json.loads(self.body)


Reply = tuple[int, object]


class _RecordingServer(ThreadingHTTPServer):
    fake: _Recorder


class _RecordingHandler(BaseHTTPRequestHandler):
    server: _RecordingServer

    def do_POST(self) -> None:
        self._answer()

    def do_PATCH(self) -> None:
        self._answer()

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        status, answer = self.server.fake.receive(request)
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header(
                "Content-Type", "application/json" if not isinstance(answer, bytes) else "text/plain"
            )
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it
        """Keep test output quiet."""


class _Recorder:
    """A loopback HTTP server that records every request and answers with ``reply``."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._cond = threading.Condition()
        self._server = _RecordingServer(("127.0.0.1", 0), _RecordingHandler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def reply(self, request: Recorded) -> Reply:
        """Overridden by each fake below with its service's protocol."""
        return 404, {"error": f"no such endpoint: {request.path}"}

    def receive(self, request: Recorded) -> Reply:
        answer = self.reply(request)
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()
        return answer

    def wait_for(self, count: int, path: str = "", timeout: float = 30.0) -> list[Recorded]:
        """The requests to ``path`` (a prefix) once there are ``count`` of them, or as many as came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self.requests if r.path.startswith(path)]
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    return found
                self._cond.wait(left)

    def received(self, path: str = "") -> list[Recorded]:
        with self._cond:
            return [r for r in self.requests if r.path.startswith(path)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class FakeSlack(_Recorder):
    """Slack's Web API (``chat.postMessage``, ``chat.update`` with a bot token) and response URLs.

    With ``down`` set, every call gets 503 as when Slack is unreachable."""

    TOKEN = "xoxb-test-token"
    CHANNEL = "C0APPROVALS"

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self._ts = 1_700_000_000

    @property
    def api_url(self) -> str:
        return f"{self.base}/api"

    def response_url(self, name: str = "r1") -> str:
        return f"{self.base}/actions/{name}"

    def reply(self, request: Recorded) -> Reply:
        if self.down:
            return 503, b"upstream unavailable"
        if request.path.startswith("/actions/"):
            return 200, b"ok"
        if request.headers.get("authorization") != f"Bearer {self.TOKEN}":
            return 200, {"ok": False, "error": "invalid_auth"}
        return 200, self._method(request.path, request.json())

    def _method(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if "channel" not in body or not (body.get("text") or body.get("blocks")):
            return {"ok": False, "error": "no_text"}
        if path == "/api/chat.postMessage":
            self._ts += 1
            return {"ok": True, "channel": self.CHANNEL, "ts": f"{self._ts}.000100", "message": body}
        if path == "/api/chat.update":
            return {"ok": True, "channel": body["channel"], "ts": body["ts"], "text": body.get("text")}
        return {"ok": False, "error": "unknown_method"}

    def posts(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.received("/api/chat.postMessage")]

    def updates(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.received("/api/chat.update")]

    def replies(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.received("/actions/")]


class FakePagerDuty(_Recorder):
    """PagerDuty's Events API v2 (``POST /v2/enqueue``): 202 for a valid event, 400 otherwise;
    ``statuses`` are answered first (e.g. 500 to exercise retries)."""

    ROUTING_KEY = "R0UT1NGKEY0123456789ABCDEFGHIJKL"

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.statuses = list(statuses)

    @property
    def url(self) -> str:
        return f"{self.base}/v2/enqueue"

    def reply(self, request: Recorded) -> Reply:
        if self.statuses:
            return self.statuses.pop(0), {"status": "error", "message": "try again"}
        event = request.json()
        payload = event.get("payload", {})
        valid = (
            request.path == "/v2/enqueue"
            and event.get("routing_key") == self.ROUTING_KEY
            and event.get("event_action") in {"trigger", "acknowledge", "resolve"}
            and all(payload.get(k) for k in ("summary", "source", "severity"))
            and payload.get("severity") in {"critical", "error", "warning", "info"}
        )
        if not valid:
            return 400, {
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": ["invalid"],
            }
        return 202, {"status": "success", "message": "Event processed", "dedup_key": event.get("dedup_key")}

    def events(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.received("/v2/enqueue")]


class FakeServiceNow(_Recorder):
    """ServiceNow's Table API for change requests, with basic auth: a POST creates one (201
    with ``result.number`` and ``result.sys_id``, state -5 New); a PATCH of
    ``.../change_request/{sys_id}`` updates its fields (200), 404 for an unknown sys_id, or
    answers ``updates_refused_with`` while that is set (503: the instance is unavailable).
    A request whose method is in ``held`` is answered only once that event is set (a slow
    instance); ``held_paths`` has the path of each one held, in order."""

    USER, PASSWORD = "pyagent", "servicenow-secret"
    PATH = "/api/now/table/change_request"

    def __init__(self) -> None:
        super().__init__()
        self._number = 30000
        self.changes: dict[str, dict[str, Any]] = {}  # by sys_id, as they stand now
        self.updates_refused_with: int | None = None
        self.held: dict[str, threading.Event] = {}  # by method
        self.held_paths: list[str] = []

    @property
    def url(self) -> str:
        return f"{self.base}{self.PATH}"

    def reply(self, request: Recorded) -> Reply:
        expected = "Basic " + base64.b64encode(f"{self.USER}:{self.PASSWORD}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return 401, {"error": {"message": "User Not Authenticated"}, "status": "failure"}
        release = self.held.get(request.method)
        if release is not None:
            self.held_paths.append(request.path)
            release.wait(30)
        if request.method == "PATCH":
            if self.updates_refused_with is not None:
                return self.updates_refused_with, {"error": {"message": "unavailable"}, "status": "failure"}
            sys_id = request.path.removeprefix(self.PATH + "/")
            if sys_id not in self.changes:
                return 404, {"error": {"message": "No Record found"}, "status": "failure"}
            self.changes[sys_id].update(request.json())
            return 200, {"result": self.changes[sys_id]}
        self._number += 1
        sys_id = f"{self._number:032x}"
        self.changes[sys_id] = {
            **request.json(),
            "number": f"CHG00{self._number}",
            "sys_id": sys_id,
            "state": "-5",
        }
        return 201, {"result": self.changes[sys_id]}
