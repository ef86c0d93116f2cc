"""How a dead-lettered message looks: the original plus reason headers. Shared by the
publisher (publish failures), the consumer (handler failures, poison bytes) and the DLQ handler."""

from __future__ import annotations

from datetime import UTC, datetime

from .message import Headers, Message


def dead_letter(
    message: Message,
    *,
    dlq_topic: str,
    reason: str,
    attempts: int,
    first_failure: datetime | None = None,
    error: BaseException | None = None,
) -> Message:
    """The DLQ copy of ``message``: same id, key and body; original headers plus the DLQ ones.

    A message that is dead-lettered again keeps its first ``sagamesh-original-topic`` and
    ``sagamesh-first-failure``.
    """
    headers = dict(message.headers)
    headers[Headers.DLQ_REASON] = reason[:1000]
    headers.setdefault(Headers.ORIGINAL_TOPIC, message.topic)
    headers[Headers.ATTEMPTS] = str(attempts)
    headers.setdefault(
        Headers.FIRST_FAILURE, (first_failure or datetime.now(UTC)).isoformat()
    )
    if error is not None:
        headers[Headers.DLQ_ERROR] = type(error).__name__
    return Message(id=message.id, topic=dlq_topic, key=message.key, headers=headers,
                   body=message.body)


def original_topic(message: Message) -> str:
    return message.headers.get(Headers.ORIGINAL_TOPIC, message.topic)
