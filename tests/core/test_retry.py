"""Retry policies: delays follow the formula, jitter only shortens, caps hold."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagamesh.errors import BusinessError, ConfigError, RetryableError
from sagamesh.retry import (
    ExponentialBackoffRetryPolicy,
    FixedDelayRetryPolicy,
    LinearBackoffRetryPolicy,
    NoRetryPolicy,
    RetryPolicy,
)


def test_exponential_without_jitter_doubles_until_cap() -> None:
    policy = ExponentialBackoffRetryPolicy(6, 0.5, 3.0, jitter=0)
    assert [policy.delay(a) for a in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


@given(st.integers(1, 50), st.floats(0.001, 10), st.floats(0.001, 100), st.floats(0, 1),
       st.integers(0, 2**32))
def test_exponential_jitter_stays_within_bounds(
    attempt: int, base: float, cap: float, jitter: float, seed: int
) -> None:
    policy = ExponentialBackoffRetryPolicy(10, base, cap, jitter=jitter, rng=random.Random(seed))
    raw = min(cap, base * 2 ** (attempt - 1))
    delay = policy.delay(attempt)
    assert raw * (1 - jitter) - 1e-9 <= delay <= raw + 1e-9
    assert delay <= cap + 1e-9


def test_jitter_spreads_delays() -> None:
    policy = ExponentialBackoffRetryPolicy(5, 1.0, 10.0, jitter=0.5, rng=random.Random(7))
    delays = {round(policy.delay(3), 6) for _ in range(50)}
    assert len(delays) > 40
    assert all(2.0 <= d <= 4.0 for d in delays)


def test_timedelta_durations_accepted() -> None:
    policy = ExponentialBackoffRetryPolicy(3, timedelta(milliseconds=100), timedelta(seconds=1),
                                           jitter=0)
    assert policy.delay(2) == pytest.approx(0.2)


def test_fixed_and_linear() -> None:
    assert FixedDelayRetryPolicy(3, 0.25).delay(5) == 0.25
    linear = LinearBackoffRetryPolicy(5, 1.0, 0.5, 2.0)
    assert [linear.delay(a) for a in (1, 2, 3, 4)] == [1.0, 1.5, 2.0, 2.0]


@pytest.mark.parametrize("policy", [
    ExponentialBackoffRetryPolicy(3, 0.1, 1.0),
    FixedDelayRetryPolicy(3, 0.1),
    LinearBackoffRetryPolicy(3, 0.1, 0.1, 1.0),
])
def test_attempt_budget_and_error_kinds(policy: RetryPolicy) -> None:
    assert isinstance(policy, RetryPolicy)
    assert policy.should_retry(1, ValueError("x"))
    assert policy.should_retry(2, RetryableError("flaky"))
    assert not policy.should_retry(3, ValueError("x"))  # budget of 3 attempts used up
    assert not policy.should_retry(1, BusinessError("OUT_OF_STOCK", "no"))


def test_no_retry_never_retries() -> None:
    assert not NoRetryPolicy().should_retry(1, RetryableError("x"))
    assert NoRetryPolicy().max_attempts == 1


def test_invalid_parameters_rejected() -> None:
    with pytest.raises(ValueError):
        ExponentialBackoffRetryPolicy(0, 1, 1)
    with pytest.raises(ValueError):
        ExponentialBackoffRetryPolicy(3, 1, 1, jitter=2)


@pytest.mark.parametrize(("build", "field"), [
    (lambda: ExponentialBackoffRetryPolicy(0, 1, 1), "max_attempts"),
    (lambda: ExponentialBackoffRetryPolicy(3, -1, 1), "base_delay"),
    (lambda: ExponentialBackoffRetryPolicy(3, 1, "soon"), "max_delay"),  # type: ignore[arg-type]
    (lambda: ExponentialBackoffRetryPolicy(3, 1, 1, multiplier=0.5), "multiplier"),
    (lambda: ExponentialBackoffRetryPolicy(3, 1, 1, jitter=2), "jitter"),
    (lambda: FixedDelayRetryPolicy(0, 1), "max_attempts"),
    (lambda: FixedDelayRetryPolicy(3, -1), "delay"),
    (lambda: LinearBackoffRetryPolicy(True, 1, 1, 1), "max_attempts"),
    (lambda: LinearBackoffRetryPolicy(3, -2, 1, 1), "base_delay"),
    (lambda: LinearBackoffRetryPolicy(3, 1, -1, 1), "increment"),
    (lambda: LinearBackoffRetryPolicy(3, 1, 1, float("nan")), "max_delay"),
])
def test_invalid_parameters_raise_config_error_naming_the_field(
        build: Callable[[], object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.field == field and field in str(info.value)
