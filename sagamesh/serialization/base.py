"""The serializer contract and the lookup by name or content type."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..events import SagaEvent


@runtime_checkable
class Serializer(Protocol):
    """Turns a :class:`SagaEvent` into bytes and back, exactly (every field round-trips).

    ``decode`` raises only :class:`~sagamesh.errors.SerializationError` on bad input.
    """

    name: str
    content_type: str

    def encode(self, event: SagaEvent) -> bytes: ...

    def decode(self, data: bytes) -> SagaEvent: ...
