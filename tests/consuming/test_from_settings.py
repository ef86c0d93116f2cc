"""Consume-side objects built from Settings sections (what `sagamesh worker --config` uses)."""

from __future__ import annotations

from sagamesh.consuming import (
    EventRouter,
    HandlerContext,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
    RoutingStrategy,
    apply_handler_settings,
    consumer_config_from_settings,
    dlq_config_from_settings,
)
from sagamesh.events import EventType, SagaEvent
from sagamesh.retry import FixedDelayRetryPolicy, LinearBackoffRetryPolicy, NoRetryPolicy
from sagamesh.settings import Settings


def test_consumer_and_dlq_configs_follow_the_settings() -> None:
    settings = Settings.load({
        "consumer": {"group": "billing", "max_in_flight": 32, "ordering": "none",
                     "topic_strategy": "per_type", "shutdown_timeout": "5s",
                     "retry": {"kind": "fixed", "max_attempts": 7, "base_delay": 0.5},
                     "idempotency": {"kind": "memory", "ttl": 60}},
        "dlq": {"topic": "billing.dlq", "auto_retry": True,
                "retry_policy": {"max_retries": 2, "retry_interval": 30, "ttl": 600}},
    })
    config = consumer_config_from_settings(settings.consumer, workers=4)
    assert (config.group, config.max_in_flight, config.ordering, config.topic_strategy,
            config.shutdown_timeout, config.workers) == ("billing", 32, "none", "per_type", 5.0, 4)
    assert isinstance(config.retry, FixedDelayRetryPolicy)
    assert (config.retry.max_attempts, config.retry.delay(1)) == (7, 0.5)
    assert isinstance(config.idempotency, MemoryIdempotencyStore)
    assert config.idempotency.ttl == 60
    dlq = dlq_config_from_settings(settings.dlq)
    assert (dlq.topic, dlq.auto_retry) == ("billing.dlq", True)
    assert (dlq.retry_policy.max_retries, dlq.retry_policy.retry_interval,
            dlq.retry_policy.ttl) == (2, 30.0, 600.0)


def test_other_retry_kinds_and_redis_idempotency() -> None:
    settings = Settings.load({"consumer": {
        "retry": {"kind": "linear", "max_attempts": 3, "base_delay": 1, "increment": 2,
                  "max_delay": 4},
        "idempotency": {"kind": "redis", "url": "redis://127.0.0.1:6379/0", "prefix": "p:"}}})
    config = consumer_config_from_settings(settings.consumer)
    assert isinstance(config.retry, LinearBackoffRetryPolicy)
    assert [config.retry.delay(a) for a in (1, 2, 3)] == [1.0, 3.0, 4.0]
    assert isinstance(config.idempotency, RedisIdempotencyStore)  # lazily connects
    assert config.idempotency.prefix == "p:"
    none = Settings.load({"consumer": {"retry": {"kind": "none"},
                                       "idempotency": {"kind": "none"}}})
    plain = consumer_config_from_settings(none.consumer)
    assert isinstance(plain.retry, NoRetryPolicy) and plain.idempotency is None


def test_handler_overrides_keep_registration_order() -> None:
    router = EventRouter(RoutingStrategy.FIRST)

    async def noop(event: SagaEvent, ctx: HandlerContext) -> None:
        return None

    for hid in ("a", "b", "c"):
        router.handler(EventType.SAGA_STARTED, handler_id=hid, priority=1)(noop)
    settings = Settings.load({"handlers": {
        "a": {"enabled": False},
        "b": {"priority": 9, "max_concurrency": 2, "processing_timeout": 1.5},
        "missing": {"priority": 3}}})
    apply_handler_settings(router, settings.handlers)
    assert [h.handler_id for h in router.handlers] == ["b", "c"]
    b = router.get_handler("b").config
    assert (b.priority, b.max_concurrency, b.processing_timeout) == (9, 2, 1.5)
    [route] = router.route(SagaEvent(saga_id="s", type=EventType.SAGA_STARTED))
    assert route.handler_id == "b" and route.limiter is not None and route.timeout == 1.5
