"""The webhook server: a WSGI app served by waitress.

``POST /webhook/alertmanager`` records every alert durably before answering 2xx;
``GET /healthz`` is 503 until OPA and the store answer; ``GET /metrics`` is Prometheus text.
The humans' routes (``/console``, ``/api/``, ``/slack/interactions``) go to
:class:`pyagent.console.app.HumansApp`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pyagent.alerts import parse_webhook
from pyagent.errors import InvalidDocument, StoreUnavailable

if TYPE_CHECKING:
    from pyagent.agent import Agent
    from pyagent.console.app import HumansApp

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Environ = dict[str, Any]

STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    413: "413 Payload Too Large",
    503: "503 Service Unavailable",
}


def _json(start: StartResponse, code: int, body: dict[str, Any]) -> Iterable[bytes]:
    data = json.dumps(body).encode()
    start(STATUS[code], [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


class WebhookApp:
    """The WSGI application; all work is done by the :class:`Agent` it is given."""

    HUMANS_PREFIXES = ("/console", "/api/", "/slack/interactions")

    def __init__(
        self, agent: Agent, token: str | None, max_body_bytes: int, humans: HumansApp | None = None
    ) -> None:
        self.agent = agent
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.humans = humans

    def __call__(self, environ: Environ, start: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if self.humans is not None and path.startswith(self.HUMANS_PREFIXES):
            return self.humans(environ, start)
        if path == "/webhook/alertmanager":
            if method != "POST":
                return _json(start, 405, {"error": "use POST"})
            code, body = self._webhook(environ)
            self.agent.metrics.requests.labels(str(code)).inc()
            return _json(start, code, body)
        if path == "/healthz" and method == "GET":
            checks = self.agent.health()
            return _json(start, 200 if all(checks.values()) else 503, {"checks": checks})
        if path == "/metrics" and method == "GET":
            data = generate_latest(self.agent.metrics.registry)
            start(STATUS[200], [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(data)))])
            return [data]
        return _json(start, 404, {"error": f"no such endpoint: {method} {path}"})

    def _authorised(self, environ: Environ) -> bool:
        if not self.token:
            return True
        given = environ.get("HTTP_AUTHORIZATION", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    def _webhook(self, environ: Environ) -> tuple[int, dict[str, Any]]:
        if not self._authorised(environ):
            return 401, {"error": "missing or wrong bearer token"}
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return 400, {"error": "bad Content-Length"}
        if length > self.max_body_bytes:
            return 413, {"error": f"body over {self.max_body_bytes} bytes"}
        body = environ["wsgi.input"].read(length)
        try:
            delivery = parse_webhook(body)
        except InvalidDocument as problem:
            self.agent.metrics.errors.labels("bad_request").inc()
            return 400, {"error": problem.message, "path": problem.path, "keyword": problem.keyword}
        try:
            accepted, duplicates = self.agent.intake(delivery)
        except StoreUnavailable as exc:
            self.agent.metrics.errors.labels("store_unavailable").inc()
            return 503, {"error": f"could not record the alerts, retry: {exc}"}
        return 200, {"accepted": accepted, "duplicates": duplicates}
