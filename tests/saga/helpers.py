"""Shared bits for the saga tests: a call recorder and ready-made steps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sagamesh.errors import BusinessError
from sagamesh.events import EventType, SagaEvent
from sagamesh.saga import (
    ConcurrencyConfig,
    InMemoryEventPublisher,
    MemoryStateStorage,
    SagaCoordinator,
    SagaInstance,
    StepContext,
    StepState,
    step,
)
from sagamesh.saga.step import FunctionStep
from sagamesh.saga.storage import records


@dataclass
class Recorder:
    """What steps did, in order: ("exec"|"comp", step_id, attempt, input)."""

    calls: list[tuple[str, str, int, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def executed(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "exec"]

    def compensated(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "comp"]

    def step(
        self,
        step_id: str,
        *,
        fail: Callable[[int], BaseException | None] | None = None,
        comp_fail: Callable[[int], BaseException | None] | None = None,
        hook: Callable[[StepContext], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> FunctionStep:
        """A step appending its id to the data list; ``fail(attempt)`` may return an error;
        ``hook(ctx)`` runs inside each attempt before that."""

        async def execute(ctx: StepContext, data: Any) -> Any:
            self.calls.append(("exec", step_id, ctx.attempt, data))
            self.keys.append(ctx.idempotency_key)
            await asyncio.sleep(0)
            if hook is not None:
                await hook(ctx)
            if fail is not None:
                error = fail(ctx.attempt)
                if error is not None:
                    raise error
            return [*data, step_id]

        async def compensate(ctx: StepContext, data: Any) -> None:
            self.calls.append(("comp", step_id, ctx.attempt, data))
            await asyncio.sleep(0)
            if comp_fail is not None:
                error = comp_fail(ctx.attempt)
                if error is not None:
                    raise error

        return step(step_id, execute, compensate, **kwargs)


def business(_attempt: int) -> BaseException:
    return BusinessError("declined", "card declined")


def make_coordinator(
    storage: MemoryStateStorage | None = None,
    *,
    history: int = 10_000,
    concurrency: ConcurrencyConfig | None = None,
    **kwargs: Any,
) -> tuple[SagaCoordinator, InMemoryEventPublisher]:
    publisher = InMemoryEventPublisher(history=history)
    coordinator = SagaCoordinator(
        storage if storage is not None else MemoryStateStorage(), publisher, concurrency, **kwargs
    )
    return coordinator, publisher


def events_of(publisher: InMemoryEventPublisher, saga_id: str) -> list[SagaEvent]:
    return [e for e in publisher.history if e.saga_id == saga_id]


def sequence(publisher: InMemoryEventPublisher, saga_id: str) -> list[tuple[str, str]]:
    return [(e.type.value, e.step_id) for e in events_of(publisher, saga_id)]


def types(publisher: InMemoryEventPublisher, saga_id: str) -> list[EventType]:
    return [e.type for e in events_of(publisher, saga_id)]


async def declined(ctx: StepContext, data: Any) -> Any:
    """A step that always fails with a business error."""
    raise BusinessError("declined", "card declined")


async def passthrough(ctx: StepContext, data: Any) -> Any:
    return data


async def wait_until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait (bounded) for a condition another task makes true; fails loudly on the limit."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - state lives in plain attributes of fakes
            await asyncio.sleep(0.001)


class JsonMemoryStorage(MemoryStateStorage):
    """Memory storage that keeps only JSON (like Redis/PostgreSQL): exercises the data codec."""

    stores_objects = False

    async def save_saga(self, saga: SagaInstance) -> None:
        await super().save_saga(records.decode_saga(records.encode_saga(saga)))
        saga.version = (await super().get_saga(saga.id)).version  # type: ignore[union-attr]

    async def save_step_state(self, step: StepState) -> None:
        await super().save_step_state(records.decode_step(records.encode_step(step)))


async def expire_lease(storage: MemoryStateStorage, saga_id: str) -> None:
    """Sleep until the saga's current lease has expired (its expiry is known: no guessing)."""
    saga = await storage.get_saga(saga_id)
    assert saga is not None and saga.lease_expires_at is not None
    remaining = (saga.lease_expires_at - datetime.now(UTC)).total_seconds()
    await asyncio.sleep(max(0.0, remaining) + 0.01)
