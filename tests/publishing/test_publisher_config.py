"""Config defaults follow the spec; durations accept timedelta; bad values name their field."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from sagamesh.errors import ConfigError
from sagamesh.publishing import DLQRetryPolicy, PublisherConfig, ReliabilityConfig
from sagamesh.retry import ExponentialBackoffRetryPolicy, FixedDelayRetryPolicy, NoRetryPolicy


def test_spec_defaults() -> None:
    config = PublisherConfig()
    assert (config.serializer, config.retry_attempts, config.retry_interval, config.timeout) == (
        "json", 3, 1.0, 5.0)
    assert (config.topic_prefix, config.topic_strategy) == ("saga.events", "single")
    assert config.reliability is None and config.enable_confirm is True
    rel = ReliabilityConfig()
    assert (rel.max_retry_attempts, rel.retry_backoff, rel.max_retry_backoff) == (5, 0.5, 5.0)
    assert (rel.confirm_timeout, rel.enable_dlq, rel.dlq_topic) == (10.0, True, "saga.dlq")
    dlq = DLQRetryPolicy()
    assert (dlq.max_retries, dlq.retry_interval, dlq.ttl) == (3, 60.0, 86400.0)


def test_timedelta_durations_become_seconds() -> None:
    config = PublisherConfig(retry_interval=timedelta(milliseconds=250),
                             timeout=timedelta(seconds=2),
                             reliability=ReliabilityConfig(retry_backoff=timedelta(seconds=1),
                                                           max_retry_backoff=timedelta(minutes=1),
                                                           confirm_timeout=timedelta(seconds=3)))
    assert config.retry_interval == 0.25 and config.timeout == 2.0
    assert config.reliability is not None
    assert (config.reliability.retry_backoff, config.reliability.max_retry_backoff,
            config.reliability.confirm_timeout) == (1.0, 60.0, 3.0)
    assert DLQRetryPolicy(ttl=timedelta(hours=1)).ttl == 3600.0


def test_retry_policy_derivation() -> None:
    basic = PublisherConfig(retry_attempts=2, retry_interval=0.3).retry_policy()
    assert isinstance(basic, FixedDelayRetryPolicy)
    assert basic.max_attempts == 3 and basic.delay(1) == 0.3
    assert isinstance(PublisherConfig(retry_attempts=0).retry_policy(), NoRetryPolicy)
    exp = PublisherConfig(reliability=ReliabilityConfig(max_retry_attempts=4, retry_backoff=0.1,
                                                        max_retry_backoff=2.0)).retry_policy()
    assert isinstance(exp, ExponentialBackoffRetryPolicy)
    assert (exp.max_attempts, exp.base_delay, exp.max_delay) == (5, 0.1, 2.0)
    off = ReliabilityConfig(enable_retry=False).build_retry_policy()
    assert isinstance(off, NoRetryPolicy)
    mine = ExponentialBackoffRetryPolicy(2, 0.1, 0.2, rng=random.Random(1))
    assert ReliabilityConfig(retry_policy=mine).build_retry_policy() is mine
    assert PublisherConfig().confirm_deadline() is None
    assert PublisherConfig(reliability=ReliabilityConfig(confirm_timeout=7)).confirm_deadline() == 7
    assert PublisherConfig(reliability=ReliabilityConfig(enable_confirm=False)).confirm_deadline() \
        is None
    assert PublisherConfig(reliability=ReliabilityConfig(enable_dlq=False)).dlq_topic() is None


@pytest.mark.parametrize(("factory", "kwargs", "field"), [
    (PublisherConfig, {"topic_prefix": ""}, "topic_prefix"),
    (PublisherConfig, {"topic_strategy": "per_saga"}, "topic_strategy"),
    (PublisherConfig, {"serializer": ""}, "serializer"),
    (PublisherConfig, {"serializer": 42}, "serializer"),
    (PublisherConfig, {"retry_attempts": -1}, "retry_attempts"),
    (PublisherConfig, {"retry_attempts": 1.5}, "retry_attempts"),
    (PublisherConfig, {"retry_interval": -0.1}, "retry_interval"),
    (PublisherConfig, {"timeout": 0}, "timeout"),
    (PublisherConfig, {"timeout": "soon"}, "timeout"),
    (PublisherConfig, {"batch_size": 0}, "batch_size"),
    (PublisherConfig, {"stages": [42]}, "stages"),
    (PublisherConfig, {"enable_confirm": False}, "enable_confirm"),
    (PublisherConfig, {"reliability": {"enable_dlq": True}}, "reliability"),
    (ReliabilityConfig, {"max_retry_attempts": -2}, "max_retry_attempts"),
    (ReliabilityConfig, {"retry_backoff": 2.0, "max_retry_backoff": 1.0}, "max_retry_backoff"),
    (ReliabilityConfig, {"jitter": 1.5}, "jitter"),
    (ReliabilityConfig, {"confirm_timeout": 0}, "confirm_timeout"),
    (ReliabilityConfig, {"dlq_topic": ""}, "dlq_topic"),
    (DLQRetryPolicy, {"max_retries": -1}, "max_retries"),
    (DLQRetryPolicy, {"ttl": 0}, "ttl"),
])
def test_invalid_values_raise_config_error_naming_the_field(
        factory: Any, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        factory(**kwargs)
    assert info.value.field == field
    assert field in str(info.value)


def test_unknown_serializer_name_is_a_config_error_at_publisher_build() -> None:
    from sagamesh.brokers.memory import MemoryBroker
    from sagamesh.publishing import SagaEventPublisher

    with pytest.raises(ConfigError) as info:
        SagaEventPublisher(MemoryBroker(), PublisherConfig(serializer="xml"))
    assert info.value.field == "serializer"
