"""aiokafka's exceptions as sagamesh's typed errors (the original stays as ``__cause__``)."""

from __future__ import annotations

from aiokafka import errors as kafka_errors

from sagamesh.errors import BrokerUnavailableError, PublishTimeoutError, SagameshError

_TIMEOUTS = (kafka_errors.KafkaTimeoutError, kafka_errors.RequestTimedOutError, TimeoutError)
_UNAVAILABLE = (
    kafka_errors.KafkaConnectionError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.NotLeaderForPartitionError,
    kafka_errors.LeaderNotAvailableError,
    kafka_errors.UnknownTopicOrPartitionError,
    kafka_errors.ProducerClosed,
    ConnectionError,
)


def map_publish_error(exc: BaseException, topic: str) -> Exception:
    if isinstance(exc, SagameshError):
        return exc
    if isinstance(exc, _TIMEOUTS):
        err: Exception = PublishTimeoutError(f"Kafka did not confirm a message to {topic!r} "
                                             f"in time: {exc!r}")
    elif isinstance(exc, _UNAVAILABLE):
        err = BrokerUnavailableError(f"Kafka unavailable for {topic!r}: {exc!r}")
    elif isinstance(exc, Exception):
        return exc
    else:  # pragma: no cover - BaseException that is not an Exception
        err = BrokerUnavailableError(repr(exc))
    err.__cause__ = exc
    return err
