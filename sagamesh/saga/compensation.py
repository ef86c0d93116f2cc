"""Compensation strategies: which completed steps are undone, in what order, and whether a
failure stops the rest.

A strategy receives the completed steps in forward order and a ``compensate_one`` coroutine (which
already applies the step's retries and the strategy's per-attempt ``timeout``; it raises once the
retries are exhausted) and returns the failures. Any failure leaves the saga ``FAILED``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .._durations import Duration, seconds
from ..events import SagaError


@dataclass(frozen=True, slots=True)
class CompensationTarget:
    """A completed step to undo: its id, position, output, and why the saga is compensating."""

    step_id: str
    index: int
    output: Any
    reason: SagaError | None = None


CompensateOne = Callable[[CompensationTarget], Awaitable[None]]
Failures = list[tuple[CompensationTarget, BaseException]]


@runtime_checkable
class CompensationStrategy(Protocol):
    timeout: float | None

    def select(self, targets: Sequence[CompensationTarget]) -> list[CompensationTarget]:
        """The targets to undo, in the order to undo them (the rest are skipped)."""

    async def run(
        self, targets: Sequence[CompensationTarget], compensate_one: CompensateOne
    ) -> Failures:
        """Undo ``targets`` (as :meth:`select` returned them); return what failed."""


async def _in_order(
    targets: Sequence[CompensationTarget], compensate_one: CompensateOne, *, stop_on_failure: bool
) -> Failures:
    failures: Failures = []
    for target in targets:
        try:
            await compensate_one(target)
        except Exception as exc:
            failures.append((target, exc))
            if stop_on_failure:
                break
    return failures


async def _concurrently(
    targets: Sequence[CompensationTarget], compensate_one: CompensateOne
) -> Failures:
    results = await asyncio.gather(*(compensate_one(t) for t in targets), return_exceptions=True)
    failures: Failures = []
    for target, result in zip(targets, results, strict=True):
        if isinstance(result, asyncio.CancelledError):
            raise result
        if isinstance(result, BaseException):
            failures.append((target, result))
    return failures


class _Timed:
    __slots__ = ("timeout",)

    def __init__(self, timeout: Duration | None = None) -> None:
        self.timeout = seconds(timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(timeout={self.timeout})"

    def select(self, targets: Sequence[CompensationTarget]) -> list[CompensationTarget]:
        """Most recently completed first: later steps may depend on earlier ones."""
        return list(reversed(targets))


class SequentialCompensation(_Timed):
    """Undo in reverse order of completion; stop at the first compensation that fails."""

    __slots__ = ()

    async def run(
        self, targets: Sequence[CompensationTarget], compensate_one: CompensateOne
    ) -> Failures:
        return await _in_order(targets, compensate_one, stop_on_failure=True)


class ParallelCompensation(_Timed):
    """Undo every completed step at the same time (independent steps, fastest rollback)."""

    __slots__ = ()

    async def run(
        self, targets: Sequence[CompensationTarget], compensate_one: CompensateOne
    ) -> Failures:
        return await _concurrently(targets, compensate_one)


class BestEffortCompensation(_Timed):
    """Undo in reverse order and keep going past failures (all are reported)."""

    __slots__ = ()

    async def run(
        self, targets: Sequence[CompensationTarget], compensate_one: CompensateOne
    ) -> Failures:
        return await _in_order(targets, compensate_one, stop_on_failure=False)


OrderSpec = Callable[[list[CompensationTarget]], Sequence[CompensationTarget]] | Sequence[str]


class CustomCompensation(_Timed):
    """Your rules: ``should_compensate(target)`` picks the steps (e.g. by ``target.reason``),
    ``order`` is a list of step ids (unlisted ones follow in reverse) or a function reordering
    the targets; ``parallel`` runs them concurrently; ``continue_on_failure`` keeps going."""

    __slots__ = ("continue_on_failure", "order", "parallel", "should_compensate")

    def __init__(
        self,
        timeout: Duration | None = None,
        should_compensate: Callable[[CompensationTarget], bool] | None = None,
        order: OrderSpec | None = None,
        *,
        parallel: bool = False,
        continue_on_failure: bool = False,
    ) -> None:
        super().__init__(timeout)
        self.should_compensate = should_compensate
        self.order = order
        self.parallel = parallel
        self.continue_on_failure = continue_on_failure

    def select(self, targets: Sequence[CompensationTarget]) -> list[CompensationTarget]:
        chosen = [t for t in targets if self.should_compensate is None or self.should_compensate(t)]
        if self.order is None:
            return list(reversed(chosen))
        if callable(self.order):
            return list(self.order(chosen))
        rank = {step_id: i for i, step_id in enumerate(self.order)}
        listed = sorted((t for t in chosen if t.step_id in rank), key=lambda t: rank[t.step_id])
        rest = [t for t in reversed(chosen) if t.step_id not in rank]
        return listed + rest

    async def run(
        self, targets: Sequence[CompensationTarget], compensate_one: CompensateOne
    ) -> Failures:
        if self.parallel:
            return await _concurrently(targets, compensate_one)
        stop = not self.continue_on_failure
        return await _in_order(targets, compensate_one, stop_on_failure=stop)
