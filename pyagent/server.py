"""The webhook server: an ASGI app served by uvicorn (uvloop and httptools).

``POST /webhook/alertmanager`` records every alert durably before answering 2xx;
``GET /healthz`` is 503 until OPA and the store answer; ``GET /metrics`` is Prometheus text.
HTTP is parsed in C on the event loop, and a webhook is parsed and validated there too. Its
commit (an fsync) runs on one of ``INTAKE_THREADS`` threads, so the loop goes on reading
other requests meanwhile, and concurrent deliveries share one commit.
The humans' routes (``/console``, ``/api/``, ``/slack/interactions``) go to
:class:`pyagent.console.app.HumansApp`, a WSGI application run on threads by a2wsgi.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import uvicorn
from a2wsgi import WSGIMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pyagent.alerts import parse_webhook
from pyagent.errors import InvalidDocument, StoreUnavailable

if TYPE_CHECKING:
    from pyagent.agent import Agent
    from pyagent.console.app import HumansApp

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HUMANS_PREFIXES = ("/console", "/api/", "/slack/interactions")
# Deliveries committed at once. More than one lets the store's group commit take several
# deliveries in one fsync; the commit itself holds a lock, so a few are enough.
INTAKE_THREADS = 4


class WebhookApp:
    """The agent's own endpoints; all work is done by the :class:`Agent` it is given."""

    def __init__(
        self,
        agent: Agent,
        token: str | None,
        max_body_bytes: int,
        humans: HumansApp | None = None,
        threads: int = 4,
    ) -> None:
        self.agent = agent
        self.token = token
        self.max_body_bytes = max_body_bytes
        # OPA's health check waits on the network: it runs here, off the event loop
        self._blocking = ThreadPoolExecutor(1, thread_name_prefix="pyagent-health")
        self._intake = ThreadPoolExecutor(INTAKE_THREADS, thread_name_prefix="pyagent-intake")
        self._humans = WSGIMiddleware(humans, workers=threads) if humans is not None else None  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not served
            return
        path, method = scope["path"], scope["method"]
        if self._humans is not None and path.startswith(HUMANS_PREFIXES):
            await self._humans(scope, receive, send)  # type: ignore[arg-type]
            return
        if path == "/webhook/alertmanager":
            if method != "POST":
                await _json(send, 405, {"error": "use POST"})
                return
            code, body = await self._webhook(scope, receive)
            self.agent.metrics.requests.labels(str(code)).inc()
            await _json(send, code, body)
        elif path == "/healthz" and method == "GET":
            checks = await asyncio.get_running_loop().run_in_executor(self._blocking, self.agent.health)
            await _json(send, 200 if all(checks.values()) else 503, {"checks": checks})
        elif path == "/metrics" and method == "GET":
            await _send(send, 200, generate_latest(self.agent.metrics.registry), CONTENT_TYPE_LATEST.encode())
        else:
            await _json(send, 404, {"error": f"no such endpoint: {method} {path}"})

    def _authorised(self, scope: Scope) -> bool:
        if not self.token:
            return True
        given = _header(scope, b"authorization")
        return hmac.compare_digest(given, f"Bearer {self.token}".encode())

    def _refusal(self, scope: Scope) -> tuple[int, dict[str, Any]] | None:
        """Why the request is refused before its body is read, if it is."""
        if not self._authorised(scope):
            return 401, {"error": "missing or wrong bearer token"}
        try:
            declared = int(_header(scope, b"content-length") or 0)
        except ValueError:
            return 400, {"error": "bad Content-Length"}
        if declared > self.max_body_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> tuple[int, dict[str, Any]]:
        return 413, {"error": f"body over {self.max_body_bytes} bytes"}

    async def _webhook(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        refusal = self._refusal(scope)
        if refusal is not None:
            return refusal
        body = await _body(receive, self.max_body_bytes)
        if body is None:
            return self._too_large()
        try:
            delivery = parse_webhook(body)
        except InvalidDocument as problem:
            self.agent.metrics.errors.labels("bad_request").inc()
            return 400, {"error": problem.message, "path": problem.path, "keyword": problem.keyword}
        try:
            # off the loop: on it, every delivery waited behind the one fsyncing, and at
            # 300 deliveries/s the loop spent a third of its time blocked in commits
            accepted, duplicates = await asyncio.get_running_loop().run_in_executor(
                self._intake, self.agent.intake, delivery
            )
        except StoreUnavailable as exc:
            self.agent.metrics.errors.labels("store_unavailable").inc()
            return 503, {"error": f"could not record the alerts, retry: {exc}"}
        return 200, {"accepted": accepted, "duplicates": duplicates}

    def close(self) -> None:
        """Stop the threads; call once the server has stopped."""
        self._blocking.shutdown(wait=True)
        self._intake.shutdown(wait=True)
        if self._humans is not None:
            self._humans.executor.shutdown(wait=True)


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return b""


async def _body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _json(send: Send, code: int, body: dict[str, Any]) -> None:
    await _send(send, code, json.dumps(body).encode(), b"application/json")


async def _send(send: Send, code: int, data: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": data})


# Objects allocated, net, before the youngest generation is collected (CPython's default is
# 700, which at 300 alerts/s ran about 30 collections a second). Nearly everything an alert
# allocates is freed by reference counting, so fewer collections find as much garbage.
YOUNG_COLLECTION_THRESHOLD = 50_000


def settle_collector() -> None:
    """Once the agent is built, keep the garbage collector off the hot path.

    Everything that exists now lives as long as the process: frozen, the collector never
    walks it again. Before this, a full collection of the built agent stopped every thread
    for 60-96 ms, and at 300 alerts/s collections ran about 30 times a second; with the
    higher threshold, about 7, for a quarter of the time collecting.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, 10, 10)


def server(app: ASGIApp, host: str, port: int) -> uvicorn.Server:
    """uvicorn serving ``app``: uvloop, httptools, no access log (the audit log is the record)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        # Alertmanager keeps its connection between notifications; closing it after uvicorn's
        # default 5 s idle makes a request race the close. 120 s, as waitress had before.
        timeout_keep_alive=120,
    )
    return uvicorn.Server(config)
