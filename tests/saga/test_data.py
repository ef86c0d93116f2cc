"""What happens to data that has no JSON form: a typed error, never a stuck saga."""

from __future__ import annotations

from typing import Any

import pytest

from sagamesh.errors import SerializationError
from sagamesh.events import ErrorType, EventType
from sagamesh.retry import FixedDelayRetryPolicy
from sagamesh.saga import SagaDefinition, SagaState, StepContext, step

from .helpers import JsonMemoryStorage, Recorder, events_of, make_coordinator


class Opaque:
    """A value with no JSON form."""


async def test_memory_stack_accepts_any_python_object() -> None:
    async def make(ctx: StepContext, data: Any) -> Any:
        return Opaque()

    coordinator, publisher = make_coordinator()
    d = SagaDefinition("objects", steps=[step("make", make)])
    instance = await coordinator.start_saga(d, Opaque())
    final = await coordinator.wait_for_completion(instance.id, timeout=5)
    assert final.state is SagaState.COMPLETED and isinstance(final.result, Opaque)
    done = [e for e in events_of(publisher, instance.id) if e.type is EventType.SAGA_COMPLETED]
    assert done[0].data is None  # no JSON form: the event carries none
    await coordinator.close()


async def test_durable_store_rejects_unstorable_input_at_start() -> None:
    coordinator, _ = make_coordinator(JsonMemoryStorage())
    d = SagaDefinition("json", steps=[step("a", lambda c, d: d)])
    with pytest.raises(SerializationError, match="cannot be stored"):
        await coordinator.start_saga(d, {"x": Opaque()})
    assert coordinator.get_metrics().active_sagas == 0
    await coordinator.close()


async def test_unstorable_step_output_fails_the_step_without_retry_and_compensates() -> None:
    rec = Recorder()
    calls: list[int] = []

    async def make(ctx: StepContext, data: Any) -> Any:
        calls.append(ctx.attempt)
        return Opaque()

    d = SagaDefinition(
        "json-out",
        steps=[rec.step("a"), step("make", make)],
        retry_policy=FixedDelayRetryPolicy(3, 0.001),
    )
    coordinator, publisher = make_coordinator(JsonMemoryStorage())
    instance = await coordinator.start_saga(d, [])
    final = await coordinator.wait_for_completion(instance.id, timeout=5)
    assert final.state is SagaState.COMPENSATED and calls == [1]
    assert rec.compensated() == ["a"]
    assert final.error is not None and final.error.type is ErrorType.DATA
    assert "cannot be stored" in final.error.message
    types = [e.type for e in events_of(publisher, instance.id)]
    assert EventType.RETRY_ATTEMPTED not in types and EventType.SAGA_STEP_FAILED in types
    await coordinator.close()
