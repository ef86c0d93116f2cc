"""Router: the three strategies, both handler forms, lifecycle and raising filters."""

from __future__ import annotations

import pytest

from sagamesh.consuming import (
    EventHandlerConfig,
    EventRouter,
    HandlerContext,
    PredicateFilter,
    RoutingStrategy,
    SagaEventHandler,
)
from sagamesh.errors import ConfigError
from sagamesh.events import EventType, SagaEvent

STARTED = SagaEvent(saga_id="s", type=EventType.SAGA_STARTED)


class Recording(SagaEventHandler):
    def __init__(self, hid: str, priority: int = 0, *types: EventType, log: list[str]) -> None:
        super().__init__(EventHandlerConfig(handler_id=hid, priority=priority,
                                            supported_event_types=types))
        self.log = log

    async def start(self) -> None:
        self.log.append(f"start:{self.handler_id}")

    async def stop(self) -> None:
        self.log.append(f"stop:{self.handler_id}")

    async def handle_saga_event(self, event: SagaEvent, ctx: HandlerContext) -> None:
        self.log.append(self.handler_id)


def _router(strategy: RoutingStrategy, log: list[str]) -> EventRouter:
    router = EventRouter(strategy=strategy)
    router.register(Recording("low", 1, EventType.SAGA_STARTED, log=log))
    router.register(Recording("high-a", 10, log=log))  # every type
    router.register(Recording("high-b", 10, EventType.SAGA_STARTED, log=log))
    router.register(Recording("other", 99, EventType.SAGA_FAILED, log=log))
    return router


def ids(router: EventRouter, event: SagaEvent) -> list[str]:
    return [r.handler_id for r in router.route(event)]


def test_first_is_the_first_registered_match_regardless_of_priority() -> None:
    router = _router(RoutingStrategy.FIRST, [])
    assert ids(router, STARTED) == ["low"]
    assert ids(router, STARTED.replace(type=EventType.SAGA_FAILED)) == ["high-a"]


def test_all_routes_every_match_highest_priority_first() -> None:
    router = _router(RoutingStrategy.ALL, [])
    assert ids(router, STARTED) == ["high-a", "high-b", "low"]
    assert ids(router, STARTED.replace(type=EventType.SAGA_FAILED)) == ["other", "high-a"]
    assert ids(router, STARTED.replace(type=EventType.STATE_CHANGED)) == ["high-a"]


def test_by_priority_routes_only_the_top_priority_matches() -> None:
    router = _router(RoutingStrategy.BY_PRIORITY, [])
    assert ids(router, STARTED) == ["high-a", "high-b"]
    assert ids(router, STARTED.replace(type=EventType.SAGA_FAILED)) == ["other"]


def test_decorator_registers_a_function_handler_and_returns_the_function() -> None:
    router = EventRouter()

    @router.handler(EventType.SAGA_COMPLETED, EventType.SAGA_FAILED, priority=7,
                    max_concurrency=3, processing_timeout=2.5, handler_id="done", name="Done")
    async def on_done(event: SagaEvent, ctx: HandlerContext) -> None:
        return None

    handler = router.get_handler("done")
    assert callable(on_done) and on_done.__name__ == "on_done"
    assert handler.config.priority == 7
    assert handler.config.max_concurrency == 3
    assert handler.config.processing_timeout == 2.5
    assert handler.config.handler_name == "Done"
    assert ids(router, STARTED.replace(type=EventType.SAGA_FAILED)) == ["done"]
    assert ids(router, STARTED) == []
    assert router.event_types() == [EventType.SAGA_COMPLETED, EventType.SAGA_FAILED]


def test_duplicate_handler_id_and_missing_config_are_config_errors() -> None:
    router = EventRouter()
    router.register(Recording("x", log=[]))
    with pytest.raises(ConfigError, match="already registered"):
        router.register(Recording("x", log=[]))

    class NoConfig(SagaEventHandler):
        pass

    with pytest.raises(ConfigError, match="config"):
        router.register(NoConfig())


def test_a_raising_filter_routes_as_a_failure_of_that_handler_only() -> None:
    router = EventRouter(RoutingStrategy.ALL)
    boom = RuntimeError("filter broke")

    def explode(event: SagaEvent) -> bool:
        raise boom

    @router.handler(filters=[PredicateFilter(explode)], handler_id="fragile")
    async def fragile(event: SagaEvent, ctx: HandlerContext) -> None: ...

    @router.handler(handler_id="sturdy")
    async def sturdy(event: SagaEvent, ctx: HandlerContext) -> None: ...

    routes = router.route(STARTED)
    assert [(r.handler_id, r.error) for r in routes] == [("fragile", boom), ("sturdy", None)]


async def test_start_and_stop_run_every_handler_lifecycle_once() -> None:
    log: list[str] = []
    router = _router(RoutingStrategy.ALL, log)
    await router.start()
    await router.start()  # idempotent
    await router.stop()
    assert log == ["start:low", "start:high-a", "start:high-b", "start:other",
                   "stop:other", "stop:high-b", "stop:high-a", "stop:low"]


async def test_a_failing_start_stops_the_handlers_already_started() -> None:
    log: list[str] = []

    class Broken(Recording):
        async def start(self) -> None:
            raise RuntimeError("no database")

    router = EventRouter()
    router.register(Recording("a", log=log))
    router.register(Broken("b", log=log))
    with pytest.raises(RuntimeError, match="no database"):
        await router.start()
    assert log == ["start:a", "stop:a"]


async def test_overridden_handler_methods_are_honoured_by_the_precomputed_route() -> None:
    """Routes call a function handler's function directly and skip the stock can_handle and
    on_event_processed; a subclass that overrides any of them still gets its override."""
    from sagamesh.consuming import FunctionHandler, MessageProcessor
    from sagamesh.message import Message
    from sagamesh.retry import NoRetryPolicy
    from sagamesh.serialization import get_serializer, to_message

    calls: list[str] = []

    async def fn(event: SagaEvent, ctx: HandlerContext) -> None:
        calls.append("fn")

    class Custom(FunctionHandler):
        def can_handle(self, event: SagaEvent) -> bool:
            calls.append("can_handle")
            return event.saga_id != "skip"

        async def handle_saga_event(self, event: SagaEvent, ctx: HandlerContext) -> None:
            calls.append("handle")
            await super().handle_saga_event(event, ctx)

        async def on_event_processed(self, event: SagaEvent, duration: float) -> None:
            calls.append("processed")

    router = EventRouter()
    router.register(Custom(fn, EventHandlerConfig(handler_id="custom")))
    processor = MessageProcessor(router, retry=NoRetryPolicy())
    serializer = get_serializer("json")

    def message(saga_id: str) -> Message:
        return to_message(SagaEvent(saga_id=saga_id, type=EventType.SAGA_STARTED), "t",
                          serializer)

    await processor.process(message("s"))
    assert calls == ["can_handle", "handle", "fn", "processed"]
    calls.clear()
    await processor.process(message("skip"))
    assert calls == ["can_handle"]

    plain: list[str] = []

    @router.handler(handler_id="plain")
    async def on_any(event: SagaEvent, ctx: HandlerContext) -> None:
        plain.append(event.saga_id)

    await processor.process(message("p"))
    assert plain == ["p"]


def test_routes_of_filterless_handlers_are_fixed_per_type_until_handlers_change() -> None:
    router = _router(RoutingStrategy.ALL, [])
    first = router.route(STARTED)
    assert router.route(STARTED.replace(id="another")) is first  # no per-event list
    router.register(Recording("late", 50, EventType.SAGA_STARTED, log=[]))
    assert ids(router, STARTED) == ["late", "high-a", "high-b", "low"]
    router.unregister("late")
    assert ids(router, STARTED) == ["high-a", "high-b", "low"]


def test_changing_the_strategy_re_routes_fixed_routes() -> None:
    router = _router(RoutingStrategy.ALL, [])
    assert ids(router, STARTED) == ["high-a", "high-b", "low"]
    router.strategy = RoutingStrategy.FIRST
    assert ids(router, STARTED) == ["low"]
    router.strategy = "by_priority"
    assert ids(router, STARTED) == ["high-a", "high-b"]
