"""Splits big batches into ``publish_many`` calls of at most ``batch_size`` messages."""

from __future__ import annotations

from collections.abc import Awaitable

from ..stage import CallNext, Publication


class BatchStage:
    """Chunks go out one after another (order kept); each chunk is pipelined by the broker.

    A transaction commit is never split: it must stay all-or-nothing.
    """

    name = "batch"
    __slots__ = ("batch_size",)

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def __call__(self, pub: Publication, call_next: CallNext) -> Awaitable[None]:
        if len(pub.messages) <= self.batch_size or pub.transaction is not None:
            return call_next(pub)  # nothing to split: no coroutine of this stage
        return self._split(pub, call_next)

    async def _split(self, pub: Publication, call_next: CallNext) -> None:
        size = self.batch_size
        total = len(pub.messages)
        results: list[BaseException | None] = []
        for start in range(0, total, size):
            chunk = pub.subset(range(start, min(start + size, total)))
            try:
                await call_next(chunk)
            except Exception as exc:  # the whole chunk failed the same way
                results.extend([exc] * len(chunk.messages))
            else:
                results.extend(chunk.results or [None] * len(chunk.messages))
        pub.results = results
