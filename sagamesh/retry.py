"""Retry policies: one implementation shared by the publisher, the consumer and the saga engine.

``delay(attempt)`` is the wait after failed attempt number ``attempt`` (counting from 1) before
the next one; ``should_retry(attempt, error)`` says whether there is a next one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ._checks import checked_count, checked_number, checked_seconds
from ._durations import Duration, require_seconds
from .errors import BusinessError, RetryableError


@runtime_checkable
class RetryPolicy(Protocol):
    max_attempts: int

    def delay(self, attempt: int) -> float: ...

    def should_retry(self, attempt: int, error: BaseException | None = None) -> bool: ...


def is_retryable_error(error: BaseException | None) -> bool | None:
    """True/False when the error type decides by itself, None when the policy decides."""
    if isinstance(error, RetryableError):
        return True
    if isinstance(error, BusinessError):
        return False
    return None


class _Base:
    max_attempts: int

    def should_retry(self, attempt: int, error: BaseException | None = None) -> bool:
        verdict = is_retryable_error(error)
        if verdict is False:
            return False
        return attempt < self.max_attempts


@dataclass(slots=True)
class ExponentialBackoffRetryPolicy(_Base):
    """``base_delay * multiplier**(attempt-1)`` capped at ``max_delay``, minus up to ``jitter``.

    Jitter only ever shortens the wait, so the cap holds exactly.
    """

    max_attempts: int = 3
    base_delay: Duration = 1.0
    max_delay: Duration = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner = "ExponentialBackoffRetryPolicy"
        checked_count(owner, "max_attempts", self.max_attempts, minimum=1)
        self.base_delay = checked_seconds(owner, "base_delay", self.base_delay, positive=False)
        self.max_delay = checked_seconds(owner, "max_delay", self.max_delay, positive=False)
        checked_number(owner, "multiplier", self.multiplier, low=1.0)
        checked_number(owner, "jitter", self.jitter, low=0.0, high=1.0)

    def delay(self, attempt: int) -> float:
        base = require_seconds(self.base_delay)
        cap = require_seconds(self.max_delay)
        raw = min(cap, base * self.multiplier ** max(0, attempt - 1))
        if self.jitter:
            raw *= 1.0 - self.jitter * self.rng.random()
        return raw


@dataclass(slots=True)
class FixedDelayRetryPolicy(_Base):
    max_attempts: int = 3
    delay_seconds: Duration = 1.0

    def __init__(self, max_attempts: int = 3, delay: Duration = 1.0) -> None:
        owner = "FixedDelayRetryPolicy"
        self.max_attempts = checked_count(owner, "max_attempts", max_attempts, minimum=1)
        self.delay_seconds = checked_seconds(owner, "delay", delay, positive=False)

    def delay(self, attempt: int) -> float:
        return require_seconds(self.delay_seconds)


@dataclass(slots=True)
class LinearBackoffRetryPolicy(_Base):
    max_attempts: int = 3
    base_delay: Duration = 1.0
    increment: Duration = 1.0
    max_delay: Duration = 30.0

    def __post_init__(self) -> None:
        owner = "LinearBackoffRetryPolicy"
        checked_count(owner, "max_attempts", self.max_attempts, minimum=1)
        self.base_delay = checked_seconds(owner, "base_delay", self.base_delay, positive=False)
        self.increment = checked_seconds(owner, "increment", self.increment, positive=False)
        self.max_delay = checked_seconds(owner, "max_delay", self.max_delay, positive=False)

    def delay(self, attempt: int) -> float:
        step = require_seconds(self.increment) * max(0, attempt - 1)
        return min(require_seconds(self.max_delay), require_seconds(self.base_delay) + step)


@dataclass(slots=True)
class NoRetryPolicy(_Base):
    max_attempts: int = 1

    def delay(self, attempt: int) -> float:
        return 0.0

    def should_retry(self, attempt: int, error: BaseException | None = None) -> bool:
        return False
