"""The conformance Collector's timeout report: what is missing, and whether it was delivered."""

from __future__ import annotations

import asyncio

import pytest

from sagamesh.message import Message
from sagamesh.testing.conformance import Collector, messages


class _Delivery:
    def __init__(self, message: Message) -> None:
        self.message, self.attempt, self.settled = message, 1, False

    async def ack(self) -> None:
        self.settled = True


async def test_a_timed_out_wait_names_the_missing_ids_their_keys_and_unsettled_ones() -> None:
    sent = messages("t.c", 12, keys=3, prefix="p")
    never = {m.id for m in sent if m.key == "p-key-1"}  # a whole key never delivered
    stuck = sent[0]  # delivered, never settled
    collector = Collector()

    async def hold(delivery: object) -> None:
        await asyncio.Event().wait()

    record = collector.handler("m")
    held = asyncio.ensure_future(collector.handler("m", hold)(_Delivery(stuck)))  # type: ignore[arg-type]
    for message in sent:
        if message.id not in never and message is not stuck:
            await record(_Delivery(message))  # type: ignore[arg-type]
    with pytest.raises(AssertionError) as failure:
        await collector.wait_acked({m.id for m in sent}, 0.05, sent=sent)
    held.cancel()
    report = str(failure.value)
    assert "5 not acked (1 of them delivered, unsettled)" in report
    assert "p-key-0: 1 of 4" in report and "p-key-1: 4 of 4" in report
    assert "p-key-2" not in report
