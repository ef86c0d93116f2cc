"""`sagamesh sagas list|show|cancel` against Redis storage: a worker "crashed" mid-saga, the
CLI lists and shows its sagas, refuses to take over a live lease, then cancels (compensating
in the CLI process) once the lease expired."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sagamesh import factories
from sagamesh.saga import InMemoryEventPublisher
from sagamesh.settings import Settings

if TYPE_CHECKING:
    from conftest import Run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from saga_fixture import app as DEFINITION


def _rows(proc: Any) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


async def test_sagas_commands_on_redis(sagamesh: Run, redis_url: str, unique: str,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       write_config: Callable[..., Path]) -> None:
    out = tmp_path / "compensations.log"
    data = {"storage": {"type": "redis", "url": redis_url, "prefix": f"cli-{unique}"},
            "saga": {"lease_ttl": "3s"}}
    config = str(write_config(data))
    settings = Settings.load(data)
    monkeypatch.setenv("SAGA_HANG", "1")
    storage = factories.create_storage(settings)
    try:
        coordinator = factories.create_coordinator(settings, storage, InMemoryEventPublisher(),
                                                   definitions=[DEFINITION])
        await coordinator.start()
        for saga_id in ("o-1", "o-2"):
            await coordinator.start_saga(DEFINITION, {"amount": 5}, saga_id=saga_id)
        async with asyncio.timeout(20):
            while True:
                sagas = [await storage.get_saga(s) for s in ("o-1", "o-2")]
                if all(s is not None and s.completed_steps == 1 for s in sagas):
                    break
                await asyncio.sleep(0.02)
        env = {"SAGA_HANG": "0", "SAGA_OUT": str(out)}
        # While the worker lives (it renews its leases) the CLI must not take a saga over.
        # (the CLI runs in a thread so this event loop keeps renewing the leases meanwhile)
        refused = await asyncio.to_thread(sagamesh, "sagas", "cancel", "o-1", "--app",
                                          "saga_fixture:app", "--config", config, env=env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "driven by" in refused.stderr and "live worker" in refused.stderr
        await coordinator.abandon()  # now it "dies" while paying: leases stay up to 3 s

        rows = _rows(sagamesh("sagas", "list", "--json", "--config", config))
        assert sorted(r["id"] for r in rows) == ["o-1", "o-2"]
        assert {(r["definition"], r["state"], r["step"]) for r in rows} == \
            {("cli-order", "running", "1/2")}
        assert _rows(sagamesh("sagas", "list", "--json", "--state", "completed",
                              "--config", config)) == []
        table = sagamesh("sagas", "list", "--config", config)
        assert "Active sagas in redis storage (2)" in table.stdout
        bad = sagamesh("sagas", "list", "--state", "sleeping", "--config", config)
        assert bad.returncode == 2 and "unknown state" in bad.stderr

        shown = sagamesh("sagas", "show", "o-1", "--config", config)
        assert shown.returncode == 0, shown.stderr
        detail = json.loads(shown.stdout)
        assert detail["data"] == {"amount": 5, "reserved": True}
        first = detail["steps"][0]
        assert (first["step"], first["status"], first["attempt"]) == ("reserve", "completed", 1)
        missing = sagamesh("sagas", "show", "nope", "--config", config)
        assert missing.returncode == 1 and "no saga 'nope'" in missing.stderr

        async with asyncio.timeout(20):  # the dead worker's lease runs out
            while True:
                saga = await storage.get_saga("o-1")
                assert saga is not None and saga.lease_expires_at is not None
                if saga.lease_expires_at < datetime.now(UTC):
                    break
                await asyncio.sleep(0.1)
        cancelled = sagamesh("sagas", "cancel", "o-1", "--app", "saga_fixture:app",
                             "--reason", "customer asked", "--config", config, env=env)
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        assert "saga o-1: cancelled" in cancelled.stdout
        assert out.read_text().split() == ["released:o-1"]  # compensated in the CLI process
        final = await storage.get_saga("o-1")
        assert final is not None and final.state.value == "cancelled"
        assert [r["id"] for r in _rows(sagamesh("sagas", "list", "--json",
                                                "--config", config))] == ["o-2"]
        again = sagamesh("sagas", "cancel", "o-1", "--app", "saga_fixture:app",
                         "--config", config, env=env)
        assert again.returncode == 0 and "was already cancelled" in again.stdout
    finally:
        await storage.drop_prefix()  # type: ignore[attr-defined]
        await storage.close()
