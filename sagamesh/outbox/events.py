"""Turning saga events into outbox messages, exactly as the publisher would send them."""

from __future__ import annotations

from ..saga.outbox import event_messages as saga_event_encoder

__all__ = ["saga_event_encoder"]
