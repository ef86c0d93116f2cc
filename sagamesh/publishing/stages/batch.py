"""Splits big batches into ``publish_many`` calls of at most ``batch_size`` messages."""

from __future__ import annotations

from ..stage import CallNext, Publication


class BatchStage:
    """Chunks go out one after another (order kept); each chunk is pipelined by the broker.

    A transaction commit is never split: it must stay all-or-nothing.
    """

    name = "batch"
    __slots__ = ("batch_size",)

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    async def __call__(self, pub: Publication, call_next: CallNext) -> None:
        size = self.batch_size
        total = len(pub.messages)
        if total <= size or pub.transaction is not None:
            await call_next(pub)
            return
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
