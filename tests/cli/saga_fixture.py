"""The saga definition the `sagamesh sagas` tests use (``saga_fixture:app``). ``pay`` hangs
while $SAGA_HANG is 1 (the "crashed worker" holds it); ``reserve``'s compensation appends
to $SAGA_OUT so the test sees it ran in the CLI process."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from sagamesh.saga import SagaDefinition, StepContext, step


async def reserve(ctx: StepContext, data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "reserved": True}


def _record(line: str) -> None:
    with open(os.environ["SAGA_OUT"], "a", encoding="utf-8") as out:
        out.write(line + "\n")


async def release(ctx: StepContext, data: dict[str, Any]) -> None:
    _record(f"released:{ctx.saga_id}")


async def pay(ctx: StepContext, data: dict[str, Any]) -> dict[str, Any]:
    if os.environ.get("SAGA_HANG") == "1":
        await asyncio.Event().wait()
    return data


app = SagaDefinition(id="cli-order", name="CLI order",
                     steps=[step("reserve", reserve, release), step("pay", pay)])
