"""Build consume-side objects from :mod:`sagamesh.settings` sections (YAML / environment).

Duck-typed on the settings models so this module imports neither pydantic nor redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..retry import (
    ExponentialBackoffRetryPolicy,
    FixedDelayRetryPolicy,
    LinearBackoffRetryPolicy,
    NoRetryPolicy,
    RetryPolicy,
)
from .consumer import ConsumerConfig
from .dlq import DLQConfig
from .idempotency import IdempotencyStore, MemoryIdempotencyStore
from .router import EventRouter

if TYPE_CHECKING:
    from ..settings import ConsumerSettings, DLQSettings, HandlerSettings, RetrySettings


def retry_policy_from_settings(retry: RetrySettings) -> RetryPolicy:
    if retry.kind == "none":
        return NoRetryPolicy()
    if retry.kind == "fixed":
        return FixedDelayRetryPolicy(retry.max_attempts, retry.base_delay)
    if retry.kind == "linear":
        return LinearBackoffRetryPolicy(retry.max_attempts, retry.base_delay, retry.increment,
                                        retry.max_delay)
    return ExponentialBackoffRetryPolicy(retry.max_attempts, retry.base_delay, retry.max_delay,
                                         jitter=retry.jitter)


def idempotency_from_settings(settings: Any) -> IdempotencyStore | None:
    kind = settings.kind
    if kind == "none":
        return None
    if kind == "redis":
        from .redis_idempotency import RedisIdempotencyStore

        url = settings.url.get_secret_value() if settings.url is not None else None
        return RedisIdempotencyStore(url or "redis://127.0.0.1:6379", prefix=settings.prefix,
                                     ttl=settings.ttl)
    return MemoryIdempotencyStore(ttl=settings.ttl)


def consumer_config_from_settings(settings: ConsumerSettings, **overrides: Any) -> ConsumerConfig:
    """A :class:`ConsumerConfig` from ``settings.consumer``; keyword overrides win."""
    values: dict[str, Any] = {
        "topic_prefix": settings.topic_prefix,
        "topic_strategy": settings.topic_strategy,
        "group": settings.group,
        "max_in_flight": settings.max_in_flight,
        "ordering": settings.ordering,
        "retry": retry_policy_from_settings(settings.retry),
        "dlq_topic": settings.dlq_topic,
        "idempotency": idempotency_from_settings(settings.idempotency),
        "shutdown_timeout": settings.shutdown_timeout,
    }
    values.update(overrides)
    return ConsumerConfig(**values)


def dlq_config_from_settings(settings: DLQSettings, **overrides: Any) -> DLQConfig:
    from ..publishing import DLQRetryPolicy

    policy = settings.retry_policy
    values: dict[str, Any] = {
        "topic": settings.topic,
        "group": settings.group,
        "auto_retry": settings.auto_retry,
        "retry_policy": DLQRetryPolicy(max_retries=policy.max_retries,
                                       retry_interval=policy.retry_interval, ttl=policy.ttl),
    }
    values.update(overrides)
    return DLQConfig(**values)


def apply_handler_settings(router: EventRouter, handlers: Mapping[str, HandlerSettings]) -> None:
    """Apply per-handler overrides (``handlers:`` section) to registered handlers: disabled
    ones are unregistered; priority / max_concurrency / processing_timeout replace the code's.
    Ids that match no registered handler are ignored."""
    for handler_id, override in handlers.items():
        try:
            router.get_handler(handler_id)
        except KeyError:
            continue
        if not override.enabled:
            router.unregister(handler_id)
            continue
        changes: dict[str, Any] = {}
        if override.priority is not None:
            changes["priority"] = override.priority
        if override.max_concurrency is not None:
            changes["max_concurrency"] = override.max_concurrency
        if override.processing_timeout is not None:
            changes["processing_timeout"] = override.processing_timeout
        if changes:
            router.reconfigure(handler_id, **changes)
