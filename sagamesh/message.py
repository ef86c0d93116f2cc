"""The broker-level message: what every adapter sends and receives."""

from __future__ import annotations

import msgspec


class Headers:
    """Header names sagamesh sets and reads (constants, lower case as HTTP-style headers)."""

    CONTENT_TYPE = "content-type"
    EVENT_ID = "sagamesh-event-id"
    EVENT_TYPE = "sagamesh-event-type"
    SAGA_ID = "sagamesh-saga-id"
    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"
    DLQ_REASON = "sagamesh-dlq-reason"
    ORIGINAL_TOPIC = "sagamesh-original-topic"
    ATTEMPTS = "sagamesh-attempts"
    FIRST_FAILURE = "sagamesh-first-failure"
    DLQ_ERROR = "sagamesh-dlq-error"
    DLQ_HANDLER = "sagamesh-dlq-handler"
    DLQ_RECOVERIES = "sagamesh-dlq-recoveries"

    DLQ_HEADERS = (DLQ_REASON, ORIGINAL_TOPIC, ATTEMPTS, FIRST_FAILURE)


class Message(msgspec.Struct, kw_only=True):
    """A message on a broker. ``key`` orders and partitions (defaults to the saga id)."""

    id: str
    topic: str
    body: bytes = b""
    key: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
