"""What a handler learns about the delivery behind the event it handles."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(slots=True)
class HandlerContext:
    """Broker-side facts of one delivery; ``attempt`` counts from 1 (2 = first redelivery).

    Read-only by convention (not frozen: one is built per delivery on the hot path)."""

    message_id: str
    topic: str
    attempt: int = 1
    partition: int | None = None
    offset: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    broker: str = ""
    group: str | None = None
