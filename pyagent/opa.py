"""The OPA sidecar: a client for its REST API, and an embedded server the agent can start.

Every way OPA can fail to give a decision maps to one :class:`PolicyError`, so the
caller can fall back to level 1 with the reason.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import requests
from requests.adapters import HTTPAdapter

from pyagent.contract import Decision
from pyagent.errors import (
    InvalidDocument,
    OpaStartError,
    PolicyEngineUnavailable,
    PolicyError,
    PolicyInvalid,
    PolicyUndefined,
    ServiceError,
)
from pyagent.jsonhttp import JsonEndpoint

DECISION_PATH = "/v1/data/escalation/decision"
BATCH_PATH = "/v1/data/escalation/decisions"
MIN_SHARE = 4  # inputs per request, at least, when a batch is split across parallel requests
PROJECT_ROOT = Path(__file__).resolve().parent.parent


# Go's collector for the embedded OPA: off until the heap reaches a fixed budget, instead of
# at every doubling of a live heap of a few MiB. At 300 decisions/s that is a collection
# about a second instead of several a second, and OPA spent 15-20% less CPU per decision
# (bench/e2e_bench.py, alternating runs). An operator's own GOGC or GOMEMLIMIT wins.
OPA_GC_ENVIRONMENT = {"GOGC": "off", "GOMEMLIMIT": "256MiB"}


def opa_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The environment an embedded OPA runs with: ``base``, plus :data:`OPA_GC_ENVIRONMENT`
    unless ``base`` sets either of its variables."""
    if any(name in base for name in OPA_GC_ENVIRONMENT):
        return dict(base)
    return {**base, **OPA_GC_ENVIRONMENT}


def default_policy_dir() -> Path:
    """The project's ``rego/`` directory (beside the package in a checkout or image)."""
    return PROJECT_ROOT / "rego"


def find_opa(explicit: str | None = None) -> str:
    """The OPA binary: ``explicit``, else ``opa`` on PATH, else the project's pinned build."""
    if explicit:
        return explicit
    on_path = shutil.which("opa")
    if on_path:
        return on_path
    pinned = PROJECT_ROOT / ".tools" / "bin" / "opa"
    if pinned.is_file() and os.access(pinned, os.X_OK):
        return str(pinned)
    raise OpaStartError("no opa binary: run `make setup`, put opa on PATH, or pass --opa-binary")


def _typed(result: object) -> Decision:
    try:
        return Decision.from_json(result)
    except InvalidDocument as exc:
        raise PolicyInvalid(exc) from exc


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a connection and for an answer."""

    connect: float = 0.5
    read: float = 2.0


class OpaClient:
    """Asks ``data.escalation.decision`` over OPA's REST API, on one pooled session.

    OPA evaluates one request on one goroutine, so a large batch is split into up to
    ``parallel`` requests sent at once: OPA's answer for the batch takes the time of the
    largest share instead of the whole, on as many cores as are free.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: requests.Session | None = None,
        timeouts: Timeouts = Timeouts(),
        parallel: int = 1,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts
        self.parallel = max(1, parallel)
        # the other shares' requests; the caller's thread sends the first share itself
        self._senders = ThreadPoolExecutor(self.parallel - 1, "pyagent-opa") if self.parallel > 1 else None
        self.session = session or requests.Session()
        # a loopback sidecar: no proxy applies, and looking one up scans the environment per request
        self.session.trust_env = False
        # OPA gzips an answer over 1 KiB when asked, as requests does by default: on loopback,
        # compressing and inflating a batch's decisions only costs CPU on both sides
        self.session.headers["Accept-Encoding"] = "identity"
        # one retry of a refused connection: OPA restarting under a supervisor
        self.session.mount(self.base_url, HTTPAdapter(max_retries=1, pool_maxsize=32))
        who = f"OPA at {self.base_url}"
        self._endpoints = {
            path: JsonEndpoint(self.session, self.base_url + path, who)
            for path in (DECISION_PATH, BATCH_PATH)
        }

    def decide_raw(self, policy_input: object) -> object:
        """The ``result`` OPA returns for this input, unvalidated."""
        return self._post(DECISION_PATH, policy_input)

    def _post(self, path: str, policy_input: object) -> object:
        try:
            body = self._endpoints[path].post(
                {"input": policy_input}, (self.timeouts.connect, self.timeouts.read)
            )
        except ServiceError as exc:
            raise PolicyEngineUnavailable(str(exc)) from exc
        if not isinstance(body, dict) or "result" not in body:
            raise PolicyUndefined(f"OPA at {self.base_url} returned no result for {path}")
        return body["result"]

    def decide(self, policy_input: object) -> Decision:
        """The typed decision; raises a :class:`PolicyError` subclass when there is none."""
        return _typed(self.decide_raw(policy_input))

    def decide_many(self, policy_inputs: Sequence[object]) -> list[Decision | PolicyError]:
        """One decision (or the error that stands for it) per input, in order: in one request,
        or for a batch of ``2 * MIN_SHARE`` inputs or more, in up to ``parallel`` sent at once.

        ``data.escalation.decisions`` evaluates the same rule once per input. A policy
        without that rule (an older bundle) answers with no result: then each input is
        asked on its own, so the batch never costs a decision. One input is asked on its own.
        """
        shares = min(self.parallel, len(policy_inputs) // MIN_SHARE)
        if self._senders is None or shares < 2:  # one share: nothing to split
            return self._decide_share(policy_inputs)
        size = -(-len(policy_inputs) // shares)  # ceiling: the caller's share is never the small one
        parts = [policy_inputs[start : start + size] for start in range(0, len(policy_inputs), size)]
        others = [self._senders.submit(self._decide_share, part) for part in parts[1:]]
        answers = self._decide_share(parts[0])
        for other in others:
            answers.extend(other.result())
        return answers

    def _decide_share(self, policy_inputs: Sequence[object]) -> list[Decision | PolicyError]:
        """:meth:`decide_many` for inputs sent in one request."""
        if len(policy_inputs) == 1:
            return [self._decide_or_error(policy_inputs[0])]
        try:
            results = self._post(BATCH_PATH, {"inputs": list(policy_inputs)})
        except PolicyUndefined:
            return [self._decide_or_error(one) for one in policy_inputs]
        except PolicyError as exc:
            return [exc] * len(policy_inputs)
        if not isinstance(results, list) or len(results) != len(policy_inputs):
            error = PolicyInvalid(
                InvalidDocument(
                    f"OPA at {self.base_url} {BATCH_PATH}",
                    "$",
                    "minItems" if isinstance(results, list) else "type",
                    f"expected a list of {len(policy_inputs)} decisions",
                )
            )
            return [error] * len(policy_inputs)
        out: list[Decision | PolicyError] = []
        for result in results:
            try:
                out.append(_typed(result))
            except PolicyError as exc:
                out.append(exc)
        return out

    def _decide_or_error(self, policy_input: object) -> Decision | PolicyError:
        try:
            return self.decide(policy_input)
        except PolicyError as exc:
            return exc

    def healthy(self) -> bool:
        """Whether OPA answers ``/health`` with 200."""
        try:
            response = self.session.get(
                self.base_url + "/health", timeout=(self.timeouts.connect, self.timeouts.read)
            )
        except requests.RequestException:
            return False
        return response.status_code == 200

    def close(self) -> None:
        if self._senders is not None:
            self._senders.shutdown(wait=True)
        self.session.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


PR_SET_PDEATHSIG = 1
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the parent dies, even by SIGKILL,
    so an embedded OPA never outlives its agent. Resolved at import: the child only calls it."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedOpa:
    """``opa run --server`` on a free loopback port with a policy directory; a context manager."""

    def __init__(
        self,
        policy_dir: Path,
        *,
        binary: str | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 30.0,
        log_path: Path | None = None,
    ) -> None:
        self.policy_dir = policy_dir
        self.binary = find_opa(binary)
        self.host = host
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmbeddedOpa:
        if not self.policy_dir.is_dir():
            raise OpaStartError(f"policy directory {self.policy_dir} does not exist")
        for _attempt in range(3):  # another process may take the free port before OPA binds it
            self.port = free_port(self.host)
            self._process = self._spawn()
            if self._wait_healthy():
                return self
            self.stop()
        raise OpaStartError(f"opa did not become healthy on {self.host} within {self.startup_timeout}s")

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [
            self.binary,
            "run",
            "--server",
            "--addr",
            f"{self.host}:{self.port}",
            "--log-level",
            "error",
            str(self.policy_dir),
        ]
        environment = opa_environment(os.environ)
        if self.log_path is None:
            return subprocess.Popen(
                command,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - one prctl call, no locks taken
            )
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(
                command,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - one prctl call, no locks taken
            )

    def _wait_healthy(self) -> bool:
        client = OpaClient(self.url, timeouts=Timeouts(connect=0.2, read=1.0))
        deadline = time.monotonic() + self.startup_timeout
        try:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    return False
                if client.healthy():
                    return True
                time.sleep(0.05)
            return False
        finally:
            client.close()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """Kill OPA at once, as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedOpa:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
