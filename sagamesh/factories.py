"""Build the runtime objects from :class:`~sagamesh.settings.Settings`: broker, publisher,
consumer, saga storage, coordinator and DLQ handler, with tracing and metrics wired in when the
settings enable them. The same program runs on every broker by swapping the settings file.

Nothing here imports a broker client, redis, asyncpg, OpenTelemetry or prometheus_client at
import time; each is loaded when the settings ask for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import BrokerUnavailableError, ConfigError
from .settings import BrokerSettings, RetrySettings, Settings, mask_url

if TYPE_CHECKING:
    from .brokers.base import Broker
    from .consuming import (
        ConsumerConfig,
        DeadLetterQueueHandler,
        DLQStore,
        EventConsumer,
        EventRouter,
    )
    from .observability.metrics import Metrics
    from .observability.tracing import Tracing
    from .publishing import PublisherConfig, SagaEventPublisher
    from .retry import RetryPolicy
    from .saga import SagaCoordinator, SagaDefinition, SagaEventSink, StateStorage


def _broker_section(settings: Settings | BrokerSettings) -> BrokerSettings:
    return settings.broker if isinstance(settings, Settings) else settings


# -- broker ---------------------------------------------------------------------------------


def broker_options(broker: BrokerSettings) -> dict[str, Any]:
    """The adapter keyword arguments for ``broker`` (see :meth:`BrokerSettings.broker_options`)."""
    return broker.broker_options()


def create_broker(settings: Settings | BrokerSettings) -> Broker:
    """Build (not connect) the configured broker through the adapter registry."""
    from .brokers.registry import create_broker as from_url

    section = _broker_section(settings)
    return from_url(section.broker_url(), **broker_options(section))


async def connect_broker(broker: Broker, settings: Settings | BrokerSettings, *,
                         source: str | None = None) -> Broker:
    """Connect ``broker`` within ``broker.connect_timeout``; an unreachable broker raises
    :class:`BrokerUnavailableError` naming the (masked) URL and how to fix it."""
    section = _broker_section(settings)
    try:
        await asyncio.wait_for(broker.connect(), section.connect_timeout)
    except (BrokerUnavailableError, OSError, TimeoutError) as exc:
        with _suppress():
            await broker.close()
        raise unreachable(section, exc, source=source) from exc
    return broker


def unreachable(section: BrokerSettings, error: BaseException | str, *,
                source: str | None = None) -> BrokerUnavailableError:
    """The error for a broker that cannot be reached: where, why, and what to do."""
    url = section.display_url()
    where = f"broker.url in {source}" if source else "broker.url"
    reason = str(error) or type(error).__name__
    if isinstance(error, TimeoutError) and not str(error):
        reason = f"no answer within {section.connect_timeout:g}s"
    return BrokerUnavailableError(
        f"cannot reach the {section.type} broker at {mask_url(url)}: {reason}. Fix: start the "
        f"broker, or point {where} (or the SAGAMESH_BROKER__URL environment variable) at a "
        f"running one")


class _suppress:
    """``contextlib.suppress(Exception)`` for async cleanup, without importing contextlib."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, tb: object) -> bool:
        return isinstance(value, Exception)


# -- observability --------------------------------------------------------------------------


def create_tracing(settings: Settings) -> Tracing | None:
    """A :class:`Tracing` on the global tracer provider when ``tracing.enabled``."""
    if not settings.tracing.enabled:
        return None
    from .observability.tracing import Tracing

    return Tracing()


def create_metrics(settings: Settings) -> Metrics | None:
    """A :class:`Metrics` (own registry) when ``metrics.enabled``."""
    if not settings.metrics.enabled:
        return None
    from .observability.metrics import Metrics

    return Metrics(namespace=settings.metrics.namespace)


# -- publishing -----------------------------------------------------------------------------


def publisher_config(settings: Settings, *, tracing: Tracing | None = None,
                     metrics: Metrics | None = None, system: str = "") -> PublisherConfig:
    from .publishing import DLQRetryPolicy, PublisherConfig, ReliabilityConfig
    from .publishing.stages_observability import MetricsStage, TracingStage

    p = settings.publisher
    r = p.reliability
    stages: list[Any] = []
    if tracing is not None:
        stages.append(TracingStage(tracing, system=system or settings.broker.type))
    if metrics is not None:
        stages.append(MetricsStage(metrics))
    return PublisherConfig(
        topic_prefix=p.topic_prefix, topic_strategy=p.topic_strategy, serializer=p.serializer,
        enable_confirm=p.enable_confirm, retry_attempts=p.retry_attempts,
        retry_interval=p.retry_interval, timeout=p.timeout,
        reliability=ReliabilityConfig(
            enable_retry=r.enable_retry, max_retry_attempts=r.max_retry_attempts,
            retry_backoff=r.retry_backoff, max_retry_backoff=r.max_retry_backoff,
            enable_confirm=r.enable_confirm, confirm_timeout=r.confirm_timeout,
            enable_dlq=r.enable_dlq, dlq_topic=r.dlq_topic,
            dlq_retry_policy=DLQRetryPolicy(
                max_retries=r.dlq_retry_policy.max_retries,
                retry_interval=r.dlq_retry_policy.retry_interval,
                ttl=r.dlq_retry_policy.ttl)),
        stages=stages)


def create_publisher(broker: Broker, settings: Settings, *, tracing: Tracing | None = None,
                     metrics: Metrics | None = None) -> SagaEventPublisher:
    from .publishing import SagaEventPublisher

    system = getattr(broker, "name", "") or settings.broker.type
    publisher = SagaEventPublisher(broker, publisher_config(settings, tracing=tracing,
                                                            metrics=metrics, system=system))
    if metrics is not None:
        from .publishing.stages_observability import RetryCounterStage

        publisher.add_stage(RetryCounterStage(metrics), after="reliability")
    return publisher


# -- consuming ------------------------------------------------------------------------------


def retry_policy(retry: RetrySettings) -> RetryPolicy:
    """The ``sagamesh.retry`` policy a :class:`RetrySettings` describes."""
    from .consuming.from_settings import retry_policy_from_settings

    return retry_policy_from_settings(retry)


def consumer_config(settings: Settings) -> ConsumerConfig:
    """``consumer:`` as a :class:`ConsumerConfig` (retry policy, idempotency store)."""
    from .consuming.from_settings import consumer_config_from_settings

    return consumer_config_from_settings(settings.consumer)


def create_consumer(broker: Broker, router: EventRouter, settings: Settings, *,
                    tracing: Tracing | None = None,
                    metrics: Metrics | None = None) -> EventConsumer:
    """An :class:`EventConsumer` configured by ``consumer:`` and ``handlers:``; with tracing
    its handlers run inside span ``sagamesh.consume`` (child of the publisher's span), with
    metrics their outcomes, latency and dead letters are counted."""
    from .consuming import EventConsumer
    from .consuming.from_settings import apply_handler_settings

    apply_handler_settings(router, settings.handlers)
    return EventConsumer(broker, router, consumer_config(settings), tracing=tracing,
                         prometheus=metrics)


def create_dlq_handler(broker: Broker, settings: Settings, *,
                       store: DLQStore | None = None) -> DeadLetterQueueHandler:
    """A :class:`DeadLetterQueueHandler` for ``dlq:`` (topic, group, retry policy).

    What ``dlq:`` leaves unset follows the publisher's ``reliability`` where that sets it
    (``dlq_topic``, ``dlq_retry_policy``): the handler then serves the publisher's dead letters.
    """
    from .consuming import DeadLetterQueueHandler
    from .consuming.from_settings import dlq_config_from_settings

    dlq = settings.dlq
    reliability = settings.publisher.reliability
    given, follows = dlq.model_fields_set, reliability.model_fields_set
    update: dict[str, Any] = {}
    if "topic" not in given and "dlq_topic" in follows:
        update["topic"] = reliability.dlq_topic
    if "retry_policy" not in given and "dlq_retry_policy" in follows:
        update["retry_policy"] = reliability.dlq_retry_policy
    if update:
        dlq = dlq.model_copy(update=update)
    config = dlq_config_from_settings(dlq) if store is None \
        else dlq_config_from_settings(dlq, store=store)
    return DeadLetterQueueHandler(broker, config)


# -- sagas ----------------------------------------------------------------------------------


def create_storage(settings: Settings) -> StateStorage:
    """The saga state storage of ``storage:`` (memory, redis or postgres)."""
    s = settings.storage
    if s.type == "memory":
        from .saga import MemoryStateStorage

        return MemoryStateStorage()
    if s.url is None:
        example = "redis://127.0.0.1:6379/0" if s.type == "redis" \
            else "postgresql://user@host:5432/db"
        raise ConfigError(f"{s.type} storage needs a url such as {example}", field="storage.url")
    url = s.url.get_secret_value()
    if s.type == "redis":
        from .saga.storage.redis import RedisStateStorage

        return RedisStateStorage(url, prefix=s.prefix)
    from .saga.storage.postgres import PostgresStateStorage

    return PostgresStateStorage(url, schema=s.schema_name)


def create_coordinator(settings: Settings, storage: StateStorage,
                       publisher: SagaEventSink | None = None, *,
                       definitions: Sequence[SagaDefinition] = (),
                       tracing: Tracing | None = None,
                       metrics: Metrics | None = None) -> SagaCoordinator:
    """A :class:`SagaCoordinator` with the ``saga:`` limits and lease. With tracing or
    metrics, its events pass through :class:`ObservedSagaSink`, which turns them into spans
    ``sagamesh.saga`` / ``sagamesh.step`` / ``sagamesh.compensate`` and saga/step counters."""
    from .saga import ConcurrencyConfig, SagaCoordinator

    s = settings.saga
    if tracing is not None or metrics is not None:
        from .observability.saga import ObservedSagaSink
        from .saga import InMemoryEventPublisher

        publisher = ObservedSagaSink(publisher if publisher is not None
                                     else InMemoryEventPublisher(),
                                     tracing=tracing, metrics=metrics)
    return SagaCoordinator(
        storage, publisher,
        ConcurrencyConfig(max_concurrent_sagas=s.max_concurrent_sagas,
                          worker_pool_size=s.worker_pool_size,
                          acquire_timeout=s.acquire_timeout,
                          shutdown_timeout=s.shutdown_timeout),
        lease_ttl=s.lease_ttl, definitions=definitions)


__all__ = [
    "broker_options",
    "connect_broker",
    "consumer_config",
    "create_broker",
    "create_consumer",
    "create_coordinator",
    "create_dlq_handler",
    "create_metrics",
    "create_publisher",
    "create_storage",
    "create_tracing",
    "publisher_config",
    "retry_policy",
    "unreachable",
]
