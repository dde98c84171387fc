"""A real kube-apiserver backed by a real etcd, on free loopback ports, for tests that talk to Kubernetes.

``make setup`` builds the pinned kube-apiserver into ``.tools/bin`` and installs Debian's etcd
(``tools/build-kube-apiserver.sh``). Only the API server runs, no controllers: objects are
validated, stored and served, but nothing reconciles them (a Deployment gets no ReplicaSet or
status unless a test writes one, and a deleted namespace stays Terminating).

Two static tokens authenticate: the admin's, in group ``system:masters``, and one for a user
with no RBAC bindings at all, whom RBAC forbids everything beyond discovery.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from pyagent.opa import free_port
from tests.processes import stop

ROOT = Path(__file__).resolve().parent.parent
KUBE_APISERVER = ROOT / ".tools" / "bin" / "kube-apiserver"
LOCAL_ETCD = ROOT / ".tools" / "bin" / "etcd"
HOST = "127.0.0.1"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
ADMIN_USER = "admin"
UNPRIVILEGED_USER = "nobody"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 50
PORT_ATTEMPTS = 3  # another process may take a free port before etcd or kube-apiserver binds it


class KubeUnavailable(RuntimeError):
    """kube-apiserver, etcd or openssl is not installed."""


class KubeStartError(RuntimeError):
    """etcd or kube-apiserver did not become ready; the message ends with both logs' tails."""


class _PortTaken(Exception):
    """A process exited because its port was taken after we picked it: try other ports."""


@dataclass(frozen=True)
class KubeCluster:
    """A running API server: its URL, the CA that signed its serving cert, and two tokens."""

    url: str
    admin_token: str
    unprivileged_token: str
    ca_path: Path

    def kubeconfig(self, path: Path, token: str) -> Path:
        """Write a kubeconfig authenticating with ``token`` to ``path``; returns ``path``."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "test", "cluster": {"server": self.url, "certificate-authority": str(self.ca_path)}}
            ],
            "users": [{"name": "test", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


@contextlib.contextmanager
def kube_apiserver(workdir: Path) -> Iterator[KubeCluster]:
    """etcd and kube-apiserver on free loopback ports, with state, certs and logs in ``workdir``.

    Yields once ``/readyz`` answers 200; stops both on exit. etcd starts empty each time.
    """
    if not KUBE_APISERVER.is_file():
        raise KubeUnavailable(f"{KUBE_APISERVER} is missing: run `make setup` to build it")
    etcd = str(LOCAL_ETCD) if LOCAL_ETCD.is_file() else shutil.which("etcd")
    if etcd is None:
        raise KubeUnavailable("etcd is not installed: run `make setup` to install Debian's etcd-server")
    workdir.mkdir(parents=True, exist_ok=True)
    admin_token, unprivileged_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    tokens = workdir / "tokens.csv"  # token,user,uid,"groups"
    tokens.write_text(
        f'{admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
        f"{unprivileged_token},{UNPRIVILEGED_USER},{UNPRIVILEGED_USER}\n"
    )
    service_account_key = workdir / "service-account.key"
    _generate_rsa_key(service_account_key)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    for _attempt in range(PORT_ATTEMPTS):
        with contextlib.ExitStack() as processes:
            try:
                url = _start(
                    processes,
                    etcd=etcd,
                    workdir=workdir,
                    tokens=tokens,
                    admin_token=admin_token,
                    service_account_key=service_account_key,
                    deadline=deadline,
                )
            except _PortTaken:
                continue
            yield KubeCluster(url, admin_token, unprivileged_token, workdir / "certs" / "apiserver.crt")
            return
    raise KubeStartError(f"no free loopback ports after {PORT_ATTEMPTS} attempts{_logs(workdir)}")


def _start(
    processes: contextlib.ExitStack,
    *,
    etcd: str,
    workdir: Path,
    tokens: Path,
    admin_token: str,
    service_account_key: Path,
    deadline: float,
) -> str:
    """Start etcd, then kube-apiserver against it, each stopped by ``processes``; the server's URL."""
    data_dir = workdir / "etcd"
    shutil.rmtree(data_dir, ignore_errors=True)
    client_url, peer_url = f"http://{HOST}:{free_port(HOST)}", f"http://{HOST}:{free_port(HOST)}"
    etcd_process = _spawn(
        [
            etcd,
            f"--data-dir={data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--logger=zap",
            "--log-outputs=stderr",
        ],
        workdir / "etcd.log",
    )
    processes.callback(stop, etcd_process, STOP_TIMEOUT)
    running = {"etcd": etcd_process}
    _wait(lambda: _get(f"{client_url}/health"), "etcd /health", running, workdir, deadline)

    ca_path = workdir / "certs" / "apiserver.crt"
    port = free_port(HOST)
    url = f"https://{HOST}:{port}"
    apiserver = _spawn(
        [
            str(KUBE_APISERVER),
            f"--etcd-servers={client_url}",
            f"--bind-address={HOST}",
            f"--advertise-address={HOST}",
            "--endpoint-reconciler-type=none",  # a loopback advertise address needs no endpoints
            f"--secure-port={port}",
            f"--cert-dir={workdir / 'certs'}",  # a self-signed CA and serving cert, made once
            f"--token-auth-file={tokens}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={service_account_key}",
            f"--service-account-signing-key-file={service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--disable-admission-plugins=ServiceAccount",  # no controller creates `default` accounts
        ],
        workdir / "kube-apiserver.log",
    )
    processes.callback(stop, apiserver, STOP_TIMEOUT)  # stopped before etcd: callbacks run last in, first out
    running["kube-apiserver"] = apiserver

    def ready() -> bool:
        return ca_path.is_file() and _get(f"{url}/readyz", ca_path, admin_token)

    _wait(ready, "kube-apiserver /readyz", running, workdir, deadline)
    return url


def _generate_rsa_key(path: Path) -> None:
    """An RSA private key in PEM, for kube-apiserver to sign and verify service account tokens."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise KubeUnavailable("openssl is not installed: it makes the service account signing key")
    subprocess.run([openssl, "genrsa", "-out", str(path), "2048"], check=True, capture_output=True)


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def _get(url: str, ca_path: Path | None = None, token: str | None = None) -> bool:
    """Whether GET ``url`` answers 200."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.get(url, headers=headers, verify=str(ca_path) if ca_path else True, timeout=2)
    except (requests.RequestException, OSError):  # not listening yet; a cert file half written
        return False
    return response.status_code == 200


def _wait(
    check: Callable[[], bool],
    what: str,
    running: dict[str, subprocess.Popen[bytes]],
    workdir: Path,
    deadline: float,
) -> None:
    while not check():
        for name, process in running.items():
            if process.poll() is not None:
                if "address already in use" in _tail(workdir / f"{name}.log"):
                    raise _PortTaken(name)
                raise KubeStartError(f"{name} exited with status {process.returncode}{_logs(workdir)}")
        if time.monotonic() > deadline:
            raise KubeStartError(f"no answer from {what} within {STARTUP_TIMEOUT:g}s{_logs(workdir)}")
        time.sleep(0.1)


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _logs(workdir: Path) -> str:
    return "".join(
        f"\n--- {name}.log, last {LOG_TAIL_LINES} lines ---\n{_tail(workdir / f'{name}.log')}"
        for name in ("etcd", "kube-apiserver")
    )
