"""Run an awaitable eagerly and arm a timeout only if it actually has to wait.

Arming ``asyncio.timeout`` costs a timer-heap entry per call (several µs) even when the broker
confirms without suspending (the memory broker always does). So the coroutine is first stepped
synchronously; only when it suspends is the rest awaited under a deadline
(:func:`finish_within`), continuing the very same coroutine (cancellation is delivered into it,
as a Task would).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Generator
from types import CoroutineType
from typing import Any

DONE: Any = object()  # returned by step() when the awaitable finished without waiting


class _Resume:
    """Awaits the rest of a coroutine that already yielded ``pending`` once."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        pending = self.pending
        self.pending = None
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value


def step(awaitable: Awaitable[Any]) -> Any:
    """Start ``awaitable``; ``DONE`` when it completed without waiting (exceptions propagate),
    else an object to ``await`` for the rest."""
    if type(awaitable) is CoroutineType:
        try:
            pending = awaitable.send(None)
        except StopIteration:
            return DONE
        return _Resume(awaitable, pending)
    return awaitable


class _Deadline:
    """Cancels ``task`` when called: a single-purpose ``asyncio.timeout`` at a third of the cost
    (no context manager, no state machine; measured 1.8 µs against 4.5 µs per armed await)."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()


async def finish_within(rest: Awaitable[Any], limit: float) -> bool:
    """Await ``rest`` in the current task, cancelling it after ``limit`` seconds.

    Returns True when the deadline fired (the work was cancelled, or ignored the cancellation
    and finished late); other exceptions and outside cancellations propagate unchanged.
    """
    task = asyncio.current_task()
    if task is None:  # not in a task (cannot happen under asyncio): no deadline possible
        await rest
        return False
    deadline = _Deadline(task)
    handle = task.get_loop().call_later(max(0.0, limit), deadline)
    try:
        await rest
    except asyncio.CancelledError:
        if deadline.fired and task.uncancel() == 0:
            return True
        raise
    finally:
        handle.cancel()
    if deadline.fired:
        task.uncancel()
        return True
    return False
