"""Factories turn Settings into the runtime objects; unreachable brokers give a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagamesh import factories
from sagamesh.errors import BrokerUnavailableError, ConfigError
from sagamesh.retry import (
    ExponentialBackoffRetryPolicy,
    FixedDelayRetryPolicy,
    LinearBackoffRetryPolicy,
    NoRetryPolicy,
)
from sagamesh.settings import Settings
from sagamesh.testing.services import free_port

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(("config", "cls", "name"), [
    ("memory.yaml", "MemoryBroker", "memory"),
    ("nats.yaml", "NatsBroker", "nats"),
    ("rabbitmq.yaml", "RabbitBroker", "rabbitmq"),
    ("kafka.yaml", "KafkaBroker", "kafka"),
])
def test_each_config_file_builds_its_broker_without_connecting(config: str, cls: str,
                                                                name: str) -> None:
    broker = factories.create_broker(Settings.from_yaml(CONFIGS / config))
    assert type(broker).__name__ == cls
    assert broker.name == name


def test_publisher_and_consumer_configs_follow_the_settings() -> None:
    settings = Settings.load({
        "publisher": {"topic_prefix": "orders.events", "serializer": "protobuf",
                      "timeout": "2s", "reliability": {"max_retry_attempts": 2,
                                                       "dlq_topic": "orders.dlq"}},
        "consumer": {"group": "billing", "max_in_flight": 32, "ordering": "none",
                     "retry": {"kind": "linear", "max_attempts": 4, "base_delay": "100ms",
                               "increment": "50ms", "max_delay": 1},
                     "idempotency": {"kind": "memory", "ttl": "10m"}},
    })
    pub = factories.publisher_config(settings)
    assert (pub.topic_prefix, pub.serializer, pub.timeout) == ("orders.events", "protobuf", 2.0)
    assert pub.reliability is not None
    assert (pub.reliability.max_retry_attempts, pub.reliability.dlq_topic) == (2, "orders.dlq")
    con = factories.consumer_config(settings)
    assert (con.group, con.max_in_flight, con.ordering) == ("billing", 32, "none")
    assert isinstance(con.retry, LinearBackoffRetryPolicy)
    assert [con.retry.delay(n) for n in (1, 2, 3)] == pytest.approx([0.1, 0.15, 0.2])
    assert con.idempotency is not None and con.idempotency.ttl == 600.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(("retry", "cls", "delays"), [
    ({"kind": "fixed", "max_attempts": 3, "base_delay": 0.5}, FixedDelayRetryPolicy,
     [0.5, 0.5]),
    ({"kind": "exponential", "max_attempts": 4, "base_delay": 0.1, "max_delay": 0.3,
      "jitter": 0}, ExponentialBackoffRetryPolicy, [0.1, 0.2, 0.3]),
    ({"kind": "none"}, NoRetryPolicy, []),
])
def test_retry_policy_from_settings(retry: dict, cls: type, delays: list[float]) -> None:
    policy = factories.retry_policy(Settings.load({"consumer": {"retry": retry}}).consumer.retry)
    assert isinstance(policy, cls)
    assert [policy.delay(n) for n in range(1, len(delays) + 1)] == pytest.approx(delays)
    assert policy.should_retry(len(delays), ValueError()) is bool(delays)
    assert not policy.should_retry(len(delays) + 1, ValueError())


def test_storage_types() -> None:
    from sagamesh.saga import MemoryStateStorage

    assert isinstance(factories.create_storage(Settings.load({})), MemoryStateStorage)
    with pytest.raises(ConfigError) as info:
        factories.create_storage(Settings.load({"storage": {"type": "redis"}}))
    assert info.value.field == "storage.url" and "redis://" in str(info.value)
    redis = factories.create_storage(Settings.load(
        {"storage": {"type": "redis", "url": "redis://127.0.0.1:6379/0", "prefix": "p1"}}))
    assert type(redis).__name__ == "RedisStateStorage"
    pg = factories.create_storage(Settings.load(
        {"storage": {"type": "postgres", "url": "postgresql://u@h/db", "schema": "s1"}}))
    assert type(pg).__name__ == "PostgresStateStorage"


async def test_coordinator_and_dlq_handler_follow_the_settings() -> None:
    settings = Settings.load({"saga": {"max_concurrent_sagas": 7, "worker_pool_size": 3,
                                       "lease_ttl": "12s"},
                              "dlq": {"topic": "x.dlq", "group": "ops", "auto_retry": True,
                                      "retry_policy": {"max_retries": 9, "ttl": "1h"}}})
    coordinator = factories.create_coordinator(settings, factories.create_storage(settings))
    assert coordinator.concurrency.max_concurrent_sagas == 7
    assert coordinator.concurrency.worker_pool_size == 3
    assert coordinator.lease_ttl == 12.0
    await coordinator.close()
    broker = factories.create_broker(settings)
    dlq = factories.create_dlq_handler(broker, settings)
    assert (dlq.config.topic, dlq.config.group, dlq.config.auto_retry) == ("x.dlq", "ops", True)
    assert (dlq.config.retry_policy.max_retries, dlq.config.retry_policy.ttl) == (9, 3600.0)


@pytest.mark.parametrize("kind", ["nats", "rabbitmq", "kafka"])
async def test_unreachable_broker_names_masked_url_and_fix(kind: str) -> None:
    port = free_port()
    url = {"nats": f"nats://admin:s3cret@127.0.0.1:{port}",
           "rabbitmq": f"amqp://admin:s3cret@127.0.0.1:{port}/",
           "kafka": f"kafka://127.0.0.1:{port}"}[kind]
    settings = Settings.load({"broker": {"type": kind, "url": url, "connect_timeout": 2}})
    broker = factories.create_broker(settings)
    with pytest.raises(BrokerUnavailableError) as info:
        await factories.connect_broker(broker, settings, source="prod.yaml")
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text
    assert "s3cret" not in text
    assert "broker.url in prod.yaml" in text and "SAGAMESH_BROKER__URL" in text


def test_handler_settings_reconfigure_the_router() -> None:
    from sagamesh.consuming import EventRouter
    from sagamesh.events import EventType

    router = EventRouter()

    @router.handler(EventType.SAGA_STARTED, handler_id="a", priority=1)
    async def a(event: object, ctx: object) -> None: ...

    @router.handler(EventType.SAGA_STARTED, handler_id="b")
    async def b(event: object, ctx: object) -> None: ...

    settings = Settings.load({"handlers": {"a": {"priority": 9, "max_concurrency": 2},
                                           "b": {"enabled": False}}})
    from sagamesh.brokers.memory import MemoryBroker

    consumer = factories.create_consumer(MemoryBroker(), router, settings)
    assert [h.handler_id for h in consumer.router.handlers] == ["a"]
    config = router.get_handler("a").config
    assert (config.priority, config.max_concurrency) == (9, 2)


@pytest.mark.parametrize("config", ["memory.yaml", "nats.yaml", "rabbitmq.yaml", "kafka.yaml"])
def test_the_spec_form_create_broker_of_settings_broker_builds_each_config(config: str) -> None:
    """``sagamesh.create_broker(settings.broker)`` (SPEC §4) translates the generic settings
    as the factories do: Kafka has no ``connect_timeout`` and must not be handed one."""
    import sagamesh

    settings = Settings.from_yaml(CONFIGS / config)
    broker = sagamesh.create_broker(settings.broker)
    assert type(broker) is type(factories.create_broker(settings))
    assert settings.broker.broker_options() == factories.broker_options(settings.broker)


def test_the_spec_form_create_broker_translates_tls_and_credentials(tmp_path: Path) -> None:
    import ssl

    import sagamesh

    kafka = Settings.load({"broker": {
        "type": "kafka", "url": "kafka://127.0.0.1:9093", "username": "u", "password": "p",
        "tls": {"enabled": True, "verify": False}}}).broker
    broker = sagamesh.create_broker(kafka)
    assert broker.options.tls is True  # type: ignore[attr-defined]
    assert isinstance(broker.options.ssl_context, ssl.SSLContext)  # type: ignore[attr-defined]
    assert broker.options.ssl_context.verify_mode == ssl.CERT_NONE  # type: ignore[attr-defined]
    assert (broker.options.username, broker.options.password) == ("u", "p")  # type: ignore[attr-defined]

    nats = Settings.load({"broker": {"type": "nats", "url": "nats://127.0.0.1:4223",
                                     "username": "u", "password": "p", "connect_timeout": 3,
                                     "tls": {"enabled": True}}}).broker
    broker = sagamesh.create_broker(nats)
    options = broker.options  # type: ignore[attr-defined]
    assert isinstance(options.connect_options["tls"], ssl.SSLContext)
    assert (options.connect_options["user"], options.connect_options["password"]) == ("u", "p")
    assert options.connect_timeout == 3.0

    rabbit = Settings.load({"broker": {"type": "rabbitmq", "endpoints": ["127.0.0.1:5671"],
                                       "connect_timeout": 4, "tls": {"enabled": True}}}).broker
    broker = sagamesh.create_broker(rabbit)
    assert broker.url.startswith("amqps://")  # type: ignore[attr-defined]
    assert broker.options.connect_timeout == 4.0  # type: ignore[attr-defined]


def test_dlq_handler_follows_the_publishers_reliability_where_dlq_is_silent() -> None:
    follows = factories.create_dlq_handler(factories.create_broker(Settings.load({})),
                                           Settings.load({"publisher": {"reliability": {
                                               "dlq_topic": "orders.dlq",
                                               "dlq_retry_policy": {"max_retries": 7,
                                                                    "ttl": "2h"}}}}))
    assert follows.config.topic == "orders.dlq"
    assert (follows.config.retry_policy.max_retries, follows.config.retry_policy.ttl) == (7, 7200)
    given = Settings.load({"dlq": {"topic": "ops.dlq", "retry_policy": {"max_retries": 1}},
                           "publisher": {"reliability": {"dlq_topic": "orders.dlq",
                                                         "dlq_retry_policy": {"max_retries": 7}}}})
    wins = factories.create_dlq_handler(factories.create_broker(given), given)
    assert (wins.config.topic, wins.config.retry_policy.max_retries) == ("ops.dlq", 1)
    default = factories.create_dlq_handler(factories.create_broker(Settings.load({})),
                                           Settings.load({}))
    assert (default.config.topic, default.config.retry_policy.max_retries) == ("saga.dlq", 3)
