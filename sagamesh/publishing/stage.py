"""The stage protocol and the chain that composes stages (middleware, as in Starlette/Watermill).

A stage is any object (or async function) with ONE method::

    async def __call__(self, pub: Publication, call_next: CallNext) -> None

It may look at or change ``pub`` (events, messages, headers), call ``await call_next(pub)``
exactly once to hand over to the next stage (or more than once, e.g. to retry, or not at all,
e.g. to buffer), and look at ``pub.results`` afterwards. A stage that has nothing to do after
the hand-over may instead be a plain ``def`` returning ``call_next(pub)``: the caller awaits
that directly, so the publish resumes through one coroutine fewer (the built-in ``serialize``,
``batch`` and ``transaction`` stages do this whenever they only pass a publication on).
The chain is linked once when the publisher is built, so a publish allocates no closures:
each link is a tiny slotted object.

Built-in order: ``serialize`` → (user stages) → ``reliability`` → ``batch`` → ``transaction``
→ the broker sink. A stage may carry a ``name`` attribute; ``publisher.add_stage(stage,
before=..., after=...)`` positions it by those names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from ..events import SagaEvent
from ..message import Message

CallNext = Callable[["Publication"], Awaitable[None]]

_NO_RESULTS: tuple[BaseException | None, ...] = ()


class Publication:
    """One trip down the pipeline: a single event, a batch, or a transaction commit.

    ``messages[i]`` is the wire form of ``events[i]`` (set by the serialize stage);
    ``results[i]`` is None when message i was confirmed, else its error (set by the sink and
    rewritten by the reliability stage). ``dead_lettered`` holds indexes parked in the DLQ.
    ``transaction`` is the transaction id when this is a commit. ``extra`` is free for stages.
    """

    __slots__ = ("dead_lettered", "events", "extra", "messages", "results", "transaction")

    def __init__(
        self,
        events: Sequence[SagaEvent],
        messages: Sequence[Message] = (),
        *,
        transaction: str | None = None,
    ) -> None:
        self.events = events
        self.messages = messages
        self.results: Sequence[BaseException | None] = _NO_RESULTS
        self.transaction = transaction
        self.dead_lettered: frozenset[int] = frozenset()
        self.extra: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.messages) or len(self.events)

    def subset(self, indexes: Sequence[int]) -> Publication:
        """A publication of some of this one's messages (used to retry only the failed)."""
        events = self.events
        sub = Publication([events[i] for i in indexes] if events else (),
                          [self.messages[i] for i in indexes], transaction=self.transaction)
        sub.extra = self.extra
        return sub

    def __repr__(self) -> str:
        return (f"Publication({len(self)} message(s), transaction={self.transaction!r}, "
                f"results={list(self.results)!r})")


@runtime_checkable
class PublishStage(Protocol):
    """One step of the publish pipeline; see the module docstring for the contract."""

    def __call__(self, pub: Publication, call_next: CallNext) -> Awaitable[None]: ...


def stage_name(stage: object) -> str:
    name = getattr(stage, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(stage, "__name__", type(stage).__name__)


class _Link:
    """``stage`` bound to the rest of the chain; calling it returns the stage's coroutine."""

    __slots__ = ("call_next", "stage")

    def __init__(self, stage: PublishStage, call_next: CallNext) -> None:
        self.stage = stage
        self.call_next = call_next

    def __call__(self, pub: Publication) -> Awaitable[None]:
        return self.stage(pub, self.call_next)


def compose(stages: Sequence[PublishStage], sink: CallNext) -> CallNext:
    """Link ``stages`` (outermost first) in front of ``sink``."""
    call: CallNext = sink
    for stage in reversed(stages):
        call = _Link(stage, call)
    return call
