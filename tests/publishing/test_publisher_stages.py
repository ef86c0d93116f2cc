"""The pipeline: built-in order, user stages inserted by config or add_stage, stage contract."""

from __future__ import annotations

import pytest

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.errors import ConfigError
from sagamesh.publishing import (
    BUILTIN_STAGES,
    Publication,
    PublisherConfig,
    SagaEventPublisher,
    compose,
)
from sagamesh.publishing.stage import CallNext

from .conftest import collect, make_event


class Stamp:
    """Adds a header to every message and records what it saw (a tracing stage in small)."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def __call__(self, pub: Publication, call_next: CallNext) -> None:
        self.log.append(f"{self.name}:in:{len(pub.messages)}:{pub.transaction}")
        for message in pub.messages:
            message.headers[f"x-{self.name}"] = "1"
        await call_next(pub)
        self.log.append(f"{self.name}:out:{sum(r is None for r in pub.results)}")


async def test_builtin_order() -> None:
    publisher = SagaEventPublisher(MemoryBroker())
    assert publisher.stages == BUILTIN_STAGES == ("serialize", "reliability", "batch",
                                                  "transaction")


async def test_config_stage_runs_after_serialize_and_headers_reach_consumers(
        broker: MemoryBroker) -> None:
    seen = await collect(broker, "saga.events")
    log: list[str] = []
    publisher = SagaEventPublisher(broker, PublisherConfig(stages=[Stamp("trace", log)]))
    assert publisher.stages == ("serialize", "trace", "reliability", "batch", "transaction")
    await publisher.publish_saga_event(make_event())
    await publisher.publish_batch([make_event() for _ in range(3)])
    async with publisher.transaction("tx-1") as tx:
        await tx.publish_event(make_event())
        await tx.publish_event(make_event())
    await seen.wait_for(6)
    assert all(m.headers["x-trace"] == "1" for m in seen.messages)
    assert log == ["trace:in:1:None", "trace:out:1", "trace:in:3:None", "trace:out:3",
                   "trace:in:2:tx-1", "trace:out:2"]


async def test_add_stage_positions_by_name(broker: MemoryBroker) -> None:
    log: list[str] = []
    publisher = SagaEventPublisher(broker)
    publisher.add_stage(Stamp("a", log))                     # default: before reliability
    publisher.add_stage(Stamp("b", log), after="batch")
    publisher.add_stage(Stamp("c", log), before="a")
    assert publisher.stages == ("serialize", "c", "a", "reliability", "batch", "b",
                                "transaction")
    await publisher.publish_saga_event(make_event())
    assert log == ["c:in:1:None", "a:in:1:None", "b:in:1:None",
                   "b:out:1", "a:out:1", "c:out:1"]
    with pytest.raises(ConfigError, match="no stage named 'nope'"):
        publisher.add_stage(Stamp("d", log), before="nope")
    with pytest.raises(ConfigError):
        publisher.add_stage(Stamp("d", log), before="serialize")
    with pytest.raises(ConfigError):
        publisher.add_stage(Stamp("d", log), before="batch", after="batch")


async def test_a_stage_after_reliability_sees_every_retry() -> None:
    from sagamesh.testing.faults import FaultyBroker

    from .conftest import FakeTime

    fake = FakeTime()
    log: list[str] = []
    async with FaultyBroker(MemoryBroker(), fail_first=2) as broker:
        publisher = SagaEventPublisher(broker, sleep=fake.sleep, clock=fake.clock)
        publisher.add_stage(Stamp("inner", log), after="reliability")
        publisher.add_stage(Stamp("outer", log), before="reliability")
        await publisher.publish_saga_event(make_event())
    assert log.count("inner:in:1:None") == 3 and log.count("outer:in:1:None") == 1


async def test_a_plain_async_function_is_a_stage_and_may_short_circuit(
        broker: MemoryBroker) -> None:
    held: list[str] = []

    async def hold_back(pub: Publication, call_next: CallNext) -> None:
        """Keeps messages of saga 'quiet' off the broker; everything else goes on."""
        if pub.messages and pub.messages[0].key == "quiet":
            held.extend(m.id for m in pub.messages)
            pub.results = [None] * len(pub.messages)
            return
        await call_next(pub)

    publisher = SagaEventPublisher(broker, PublisherConfig(stages=[hold_back]))
    assert publisher.stages[1] == "hold_back"
    quiet = make_event(saga_id="quiet")
    await publisher.publish_saga_event(quiet)
    await publisher.publish_saga_event(make_event(saga_id="loud"))
    assert held == [quiet.id] and broker.published == 1


async def test_compose_links_outermost_first() -> None:
    order: list[str] = []

    def stage(name: str):  # type: ignore[no-untyped-def]
        async def run(pub: Publication, call_next: CallNext) -> None:
            order.append(name)
            await call_next(pub)
        return run

    async def sink(pub: Publication) -> None:
        order.append("sink")

    await compose([stage("1"), stage("2"), stage("3")], sink)(Publication(()))
    assert order == ["1", "2", "3", "sink"]


async def test_passing_stages_hand_back_the_next_awaitable_and_a_plain_def_is_a_stage(
    broker: MemoryBroker,
) -> None:
    """serialize, batch (nothing to split) and transaction (not a commit) add no coroutine of
    their own: the caller awaits the next stage's awaitable itself. Splitting and committing
    still run in the stage; bad input raises before anything is awaited."""
    from sagamesh.errors import InvalidEventError
    from sagamesh.publishing.stages import BatchStage, SerializeStage, TransactionStage
    from sagamesh.serialization import get_serializer

    seen: list[Publication] = []

    async def sink(pub: Publication) -> None:
        seen.append(pub)
        pub.results = [None] * len(pub.messages)

    def next_stage(pub: Publication) -> object:
        return marker

    marker = sink(Publication(()))  # any awaitable: it must come back unchanged
    serialize = SerializeStage(get_serializer("json"), "t", "single")
    single = Publication((make_event(),))
    assert serialize(single, next_stage) is marker  # type: ignore[arg-type]
    assert len(single.messages) == 1
    assert BatchStage(10)(single, next_stage) is marker  # type: ignore[arg-type]
    assert TransactionStage(broker)(single, next_stage) is marker  # type: ignore[arg-type]
    marker.close()

    with pytest.raises(InvalidEventError):
        serialize(Publication((object(),)), next_stage)  # type: ignore[arg-type]

    big = Publication((), [single.messages[0]] * 5)
    split = BatchStage(2)(big, sink)
    assert split is not marker
    await split
    assert [len(p.messages) for p in seen] == [2, 2, 1] and list(big.results) == [None] * 5

    # A user stage may be a plain def too (here it stamps and passes on).
    def stamp(pub: Publication, call_next: CallNext) -> object:
        for message in pub.messages:
            message.headers["x-plain"] = "1"
        return call_next(pub)

    publisher = SagaEventPublisher(broker, PublisherConfig(stages=[stamp]))
    received = await collect(broker, "saga.events")
    await publisher.publish_saga_event(make_event())
    assert (await received.wait_for(1))[0].headers["x-plain"] == "1"
