"""The APP the worker tests run (``worker_fixture:app``): an audit handler that appends to
the file named by $WORKER_OUT; events with ``data.slow`` take a while (graceful-stop test)."""

from __future__ import annotations

import asyncio
import os

from sagamesh.consuming import EventRouter, HandlerContext
from sagamesh.events import EventType, SagaEvent

router = EventRouter()


def _write(line: str) -> None:
    with open(os.environ["WORKER_OUT"], "a", encoding="utf-8") as out:
        out.write(line + "\n")


@router.handler(EventType.SAGA_STARTED, handler_id="audit", processing_timeout=30)
async def audit(event: SagaEvent, ctx: HandlerContext) -> None:
    if event.data and event.data.get("slow"):
        _write(f"start:{event.saga_id}")
        await asyncio.sleep(1.5)
    _write(f"done:{event.saga_id}")


app = router
