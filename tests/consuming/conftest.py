"""Fixtures for the consume-side tests (helpers live in consuming_helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sagamesh.brokers.memory import MemoryBroker

from .consuming_helpers import DLQ, Collector


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    async with MemoryBroker() as b:
        yield b


@pytest.fixture
async def dlq(broker: MemoryBroker) -> Collector:
    collector = Collector()
    await broker.subscribe(DLQ, collector, group="test-dlq")
    return collector
