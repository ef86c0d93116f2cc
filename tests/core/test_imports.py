"""The core imports no broker client, database driver or telemetry library at import time."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("nats", "aio_pika", "aiormq", "aiokafka", "redis", "asyncpg", "faststream",
         "opentelemetry", "prometheus_client", "sagamesh_nats", "sagamesh_rabbitmq",
         "sagamesh_kafka")


def test_importing_sagamesh_loads_no_client() -> None:
    code = (
        "import sys, sagamesh, sagamesh.publishing, sagamesh.brokers, sagamesh.settings\n"
        "for extra in ('sagamesh.consuming', 'sagamesh.saga', 'sagamesh.serialization'):\n"
        "    __import__(extra)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"imported at import time: {out}"


def test_public_names_resolve() -> None:
    import sagamesh

    missing = [name for name in sagamesh.__all__ if not hasattr(sagamesh, name)]
    assert missing == []
