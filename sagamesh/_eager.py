"""Run an awaitable eagerly and arm a timeout only if it actually has to wait.

Arming ``asyncio.timeout`` costs a timer-heap entry per call (several µs) even when the broker
confirms without suspending (the memory broker always does). So the coroutine is first stepped
synchronously; only when it suspends is the rest awaited under the timeout, continuing the very
same coroutine (cancellation is delivered into it, as a Task would).
"""

from __future__ import annotations

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
