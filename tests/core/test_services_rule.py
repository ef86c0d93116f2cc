"""A missing service fails the run under CI=true and is a skip (with the reason) elsewhere."""

from __future__ import annotations

import pytest
from _pytest.outcomes import Failed, Skipped

from sagamesh.testing.services import free_port, require_service, service_unavailable


def test_missing_service_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(Failed, match="broker X is gone"):
        service_unavailable("broker X is gone")


def test_missing_service_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(Skipped, match="broker X is gone"):
        service_unavailable("broker X is gone")


def test_require_service_names_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    port = free_port()  # nothing listens there
    with pytest.raises(Failed, match=f"NATS is not reachable at 127.0.0.1:{port}"):
        require_service("NATS", f"nats://127.0.0.1:{port}")
