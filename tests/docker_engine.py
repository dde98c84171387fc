"""A real Docker engine for tests: Debian's ``dockerd`` on a private socket, with no network.

``make setup`` installs ``docker.io`` and ``busybox-static``. The engine runs as root with its
own data root, exec root and pid file (so it never touches a system dockerd), no bridge and
no iptables rules; containers run with ``--network none``. No image can be pulled here, so
the fixture builds one (``docker import`` through the API) from a root filesystem holding
only the static busybox and a few of its applets.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException

from tests.processes import stop

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "true", "false")
IMAGE_REPOSITORY, IMAGE_TAG = "pyagent-busybox", "test"
IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class DockerUnavailable(RuntimeError):
    """dockerd or the static busybox is missing, or we are not root."""


@dataclass(frozen=True)
class DockerEngine:
    url: str
    image: str

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=30)


def _rootfs() -> bytes:
    """A tar of ``/bin/busybox`` and symlinks for :data:`APPLETS`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buffer.getvalue()


@contextlib.contextmanager
def docker_engine(workdir: Path) -> Iterator[DockerEngine]:
    """``dockerd`` on a socket of its own, with the busybox image imported; stopped on exit."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise DockerUnavailable("dockerd is not installed: run `make setup` (Debian's docker.io)")
    if not BUSYBOX.is_file():
        raise DockerUnavailable(f"{BUSYBOX} is missing: run `make setup` (Debian's busybox-static)")
    if os.geteuid() != 0:
        raise DockerUnavailable("dockerd must run as root")
    short = Path(tempfile.mkdtemp(prefix="pyagent-docker-"))  # unix socket paths must stay short
    socket_path = short / "docker.sock"
    command = [
        dockerd,
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        "--shutdown-timeout=2",
        f"--data-root={workdir / 'data'}",
        f"--exec-root={short / 'exec'}",
        f"--pidfile={short / 'docker.pid'}",
        f"--host=unix://{socket_path}",
    ]
    with (workdir / "dockerd.log").open("wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"unix://{socket_path}"
        engine = _wait(socket_path, process, workdir)
        engine.api.import_image_from_data(_rootfs(), repository=IMAGE_REPOSITORY, tag=IMAGE_TAG)
        engine.close()
        yield DockerEngine(url, IMAGE)
    finally:
        _remove_containers(f"unix://{socket_path}")
        stop(process, STOP_TIMEOUT)
        shutil.rmtree(short, ignore_errors=True)


def _pings(socket_path: Path) -> bool:
    """Whether the engine answers ``GET /_ping`` with 200 (a raw request: nothing to leak)."""
    with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as conn:
        try:
            conn.settimeout(2)
            conn.connect(str(socket_path))
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in conn.recv(64).split(b"\r\n", 1)[0] + b" "
        except OSError:
            return False


def _wait(socket_path: Path, process: subprocess.Popen[bytes], workdir: Path) -> docker.DockerClient:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not _pings(socket_path):
        if process.poll() is not None:
            raise DockerUnavailable(f"dockerd exited with {process.returncode}: {_tail(workdir)}")
        if time.monotonic() > deadline:
            raise DockerUnavailable(f"dockerd did not answer within {STARTUP_TIMEOUT:g} s: {_tail(workdir)}")
        time.sleep(0.2)
    return docker.DockerClient(base_url=f"unix://{socket_path}", timeout=30)


def _remove_containers(url: str) -> None:
    """Remove what the tests left, so dockerd stops at once."""
    with contextlib.suppress(DockerException, OSError):
        engine = docker.DockerClient(base_url=url, timeout=30)
        for container in engine.containers.list(all=True):
            container.remove(force=True)
        engine.close()


def _tail(workdir: Path) -> str:
    try:
        return "\n".join((workdir / "dockerd.log").read_text(errors="replace").splitlines()[-20:])
    except FileNotFoundError:
        return "(no log)"
