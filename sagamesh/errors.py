"""Every error sagamesh raises, rooted at :class:`SagameshError` so callers can catch one type."""

from __future__ import annotations

from collections.abc import Mapping


class SagameshError(Exception):
    """Base class of all sagamesh errors."""


class ConfigError(SagameshError, ValueError):
    """Invalid configuration; the message names the field (and the file when there is one)."""

    def __init__(self, message: str, *, field: str | None = None, file: str | None = None) -> None:
        self.field = field
        self.file = file
        where = []
        if file:
            where.append(f"file {file}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


class InvalidEventError(SagameshError, ValueError):
    """An event lacks what every event must have (id, saga_id, type)."""


class SerializationError(SagameshError, ValueError):
    """Bytes that cannot be decoded, or an event that cannot be encoded."""


class PublisherClosedError(SagameshError, RuntimeError):
    """The publisher was closed; it takes no more events."""


class PublishTimeoutError(SagameshError, TimeoutError):
    """The broker did not confirm a publish in time."""


class BrokerUnavailableError(SagameshError, ConnectionError):
    """The broker cannot be reached (or the connection was lost)."""


class BatchPublishError(SagameshError):
    """Some events of a batch were not confirmed; ``failures`` maps event id to its error."""

    def __init__(self, failures: Mapping[str, BaseException], total: int) -> None:
        self.failures = dict(failures)
        self.total = total
        ids = ", ".join(list(self.failures)[:10])
        more = "" if len(self.failures) <= 10 else f" (+{len(self.failures) - 10} more)"
        super().__init__(f"{len(self.failures)} of {total} events failed: {ids}{more}")

    @property
    def failed_event_ids(self) -> list[str]:
        return list(self.failures)


class TransactionError(SagameshError):
    """A transaction could not be committed (nothing of it was published)."""


class ConcurrencyConflictError(SagameshError):
    """A write was based on a stale version of a saga (optimistic concurrency)."""


class LeaseError(SagameshError):
    """A saga is leased by another coordinator."""


class SagaEngineError(SagameshError):
    """Base of errors raised by the saga engine."""


class SagaNotFoundError(SagaEngineError, KeyError):
    """No saga with that id."""


class SagaDefinitionError(SagaEngineError, ValueError):
    """A saga definition is invalid (duplicate step ids, no steps, bad timeout)."""


class CoordinatorSaturatedError(SagaEngineError):
    """No saga slot became free within ``acquire_timeout``."""


class CoordinatorClosedError(SagaEngineError, RuntimeError):
    """The coordinator is closed and starts no more sagas."""


class StepTimeoutError(SagaEngineError, TimeoutError):
    """A step ran past its timeout and was cancelled."""


class SagaTimeoutError(SagaEngineError, TimeoutError):
    """A saga ran past its timeout."""


class RetryableError(SagameshError):
    """Wraps an error that must always be retried."""

    def __init__(self, error: BaseException | str) -> None:
        self.error = error
        super().__init__(str(error))


class BusinessError(SagameshError):
    """A business rule said no: never retried, the saga compensates."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class HandlerTimeoutError(SagameshError, TimeoutError):
    """An event handler ran past its ``processing_timeout`` and was cancelled."""


class DeadLetterNotFoundError(SagameshError, KeyError):
    """No dead-lettered message with that id."""
