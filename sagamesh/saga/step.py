"""Saga steps: the class form (:class:`SagaStep`), the functional form (:func:`step`) and the
context every call receives."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

from .._durations import Duration
from ..errors import BusinessError, RetryableError
from ..retry import RetryPolicy


class StepContext(msgspec.Struct, frozen=True, gc=False):
    """What a step call knows about itself (immutable; a Struct because one is built per call).

    ``idempotency_key`` is ``f"{saga_id}:{step_id}"``: identical for every attempt, after a
    restart and for the step's compensation, so services can deduplicate on it.
    ``attempt`` counts from 1; ``compensating`` is True in ``compensate``.
    """

    saga_id: str
    step_id: str
    attempt: int = 1
    step_index: int = 0
    definition_id: str = ""
    compensating: bool = False
    metadata: Mapping[str, Any] = msgspec.field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        return f"{self.saga_id}:{self.step_id}"


class SagaStep:
    """Subclass and set ``id`` (plus optionally ``name``, ``timeout``, ``retry_policy``).

    ``execute`` returns the step's output, which is the next step's input; ``compensate`` is
    given that same output to undo the step. ``retry_policy`` ``None`` means the definition's.
    ``output_type`` (default: the definition's ``data_type``) rehydrates the output after a
    restart when it differs from the saga's data type.
    """

    id: str = ""
    name: str = ""
    timeout: Duration | None = None
    retry_policy: RetryPolicy | None = None
    output_type: Any = None

    async def execute(self, ctx: StepContext, data: Any) -> Any:
        raise NotImplementedError(f"step {self.id!r} does not implement execute()")

    async def compensate(self, ctx: StepContext, data: Any) -> None:
        """Undo the step; the default has nothing to undo."""

    def is_retryable(self, error: BaseException) -> bool:
        """Whether a failure may be retried (the retry policy still bounds the attempts).

        ``RetryableError`` always is and ``BusinessError`` never is, whatever this returns.
        """
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id!r}>"


ExecuteFn = Callable[[StepContext, Any], Awaitable[Any] | Any]
CompensateFn = Callable[[StepContext, Any], Awaitable[None] | None]


def _as_async(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    if inspect.iscoroutinefunction(fn):
        return fn

    async def call(ctx: StepContext, data: Any) -> Any:
        result = fn(ctx, data)
        if inspect.isawaitable(result):
            return await result
        return result

    return call


class FunctionStep(SagaStep):
    """A step built from functions (see :func:`step`); plain and async functions both work."""

    def __init__(
        self,
        id: str,
        execute: ExecuteFn,
        compensate: CompensateFn | None = None,
        *,
        name: str = "",
        timeout: Duration | None = None,
        retry_policy: RetryPolicy | None = None,
        is_retryable: Callable[[BaseException], bool] | None = None,
        output_type: Any = None,
    ) -> None:
        self.id = id
        self.name = name or id
        self.timeout = timeout
        self.retry_policy = retry_policy
        self.output_type = output_type
        self._execute = _as_async(execute)
        self._compensate = _as_async(compensate) if compensate is not None else None
        self._is_retryable = is_retryable

    async def execute(self, ctx: StepContext, data: Any) -> Any:
        return await self._execute(ctx, data)

    async def compensate(self, ctx: StepContext, data: Any) -> None:
        if self._compensate is not None:
            await self._compensate(ctx, data)

    def is_retryable(self, error: BaseException) -> bool:
        return True if self._is_retryable is None else self._is_retryable(error)


def step(
    id: str,
    execute: ExecuteFn,
    compensate: CompensateFn | None = None,
    *,
    name: str = "",
    timeout: Duration | None = None,
    retry_policy: RetryPolicy | None = None,
    is_retryable: Callable[[BaseException], bool] | None = None,
    output_type: Any = None,
) -> FunctionStep:
    """A saga step from an ``execute(ctx, data)`` and an optional ``compensate(ctx, output)``."""
    return FunctionStep(
        id,
        execute,
        compensate,
        name=name,
        timeout=timeout,
        retry_policy=retry_policy,
        is_retryable=is_retryable,
        output_type=output_type,
    )


def may_retry(step_: SagaStep, error: BaseException) -> bool:
    """The type verdict first (RetryableError yes, BusinessError no), then the step's opinion."""
    if isinstance(error, RetryableError):
        return True
    if isinstance(error, BusinessError):
        return False
    return bool(step_.is_retryable(error))
