"""Definitions validate; steps chain outputs; contexts carry a stable idempotency key."""

from __future__ import annotations

from typing import Any

import pytest

from sagamesh.errors import SagaDefinitionError
from sagamesh.retry import NoRetryPolicy
from sagamesh.saga import (
    SagaDefinition,
    SagaState,
    SagaStep,
    SequentialCompensation,
    StepContext,
    step,
)

from .helpers import Recorder, business, make_coordinator


async def _noop(ctx: StepContext, data: Any) -> Any:
    return data


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (SagaDefinition("d", steps=[]), "has no steps"),
        (SagaDefinition("", steps=[step("a", _noop)]), "needs an id"),
        (SagaDefinition("d", steps=[step("a", _noop), step("a", _noop)]), "duplicate step id 'a'"),
        (SagaDefinition("d", steps=[step("a", _noop)], timeout=0), "timeout must be positive"),
        (SagaDefinition("d", steps=[step("a", _noop, timeout=-1)]), "step 'a' timeout"),
        (
            SagaDefinition(
                "d", steps=[step("a", _noop)], compensation=SequentialCompensation(timeout=0)
            ),
            "compensation timeout",
        ),
        (
            # the policy classes refuse 0 attempts themselves; a custom policy can still say so
            SagaDefinition("d", steps=[step("a", _noop)], retry_policy=NoRetryPolicy(0)),
            "at least one attempt",
        ),
        (SagaDefinition("d", steps=[step("", _noop)]), "has no id"),
    ],
)
def test_validate_rejects(definition: SagaDefinition, message: str) -> None:
    with pytest.raises(SagaDefinitionError, match=message):
        definition.validate()


def test_register_validates() -> None:
    coordinator, _ = make_coordinator()
    with pytest.raises(SagaDefinitionError):
        coordinator.register(SagaDefinition("d", steps=[]))


def test_valid_definition_passes() -> None:
    d = SagaDefinition("d", steps=[step("a", _noop, timeout=1.5)], timeout=10)
    assert d.validate() is d


def test_context_idempotency_key_is_saga_and_step() -> None:
    assert StepContext("s1", "pay", attempt=3).idempotency_key == "s1:pay"


async def test_output_feeds_the_next_step_and_compensate_gets_own_output() -> None:
    rec = Recorder()
    d = SagaDefinition(
        "chain", steps=[rec.step("a"), rec.step("b"), rec.step("c", fail=business)]
    )
    coordinator, _ = make_coordinator()
    instance = await coordinator.start_saga(d, [])
    final = await coordinator.wait_for_completion(instance.id, timeout=10)
    assert final.state is SagaState.COMPENSATED
    inputs = {c[1]: c[3] for c in rec.calls if c[0] == "exec"}
    assert inputs == {"a": [], "b": ["a"], "c": ["a", "b"]}
    comps = [(c[1], c[3]) for c in rec.calls if c[0] == "comp"]
    assert comps == [("b", ["a", "b"]), ("a", ["a"])]
    assert set(rec.keys) == {f"{instance.id}:a", f"{instance.id}:b", f"{instance.id}:c"}
    await coordinator.close()


async def test_class_form_step_and_sync_functional_step() -> None:
    class Double(SagaStep):
        id = "double"
        name = "Double it"

        async def execute(self, ctx: StepContext, data: int) -> int:
            return data * 2

    def plus_one(ctx: StepContext, data: int) -> int:
        return data + 1

    d = SagaDefinition("math", steps=[Double(), step("inc", plus_one)])
    coordinator, _ = make_coordinator()
    final = await coordinator.wait_for_completion(
        (await coordinator.start_saga(d, 20)).id, timeout=10
    )
    assert final.state is SagaState.COMPLETED
    assert final.result == 41 and final.completed_steps == 2 and final.total_steps == 2
    await coordinator.close()
