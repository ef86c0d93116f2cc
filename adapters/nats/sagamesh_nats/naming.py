"""Map sagamesh topics and groups onto valid NATS subjects, stream and consumer names."""

from __future__ import annotations

from sagamesh.brokers.nats_wire import name_digest, safe_name, stream_name
from sagamesh.errors import ConfigError

__all__ = ["check_subject", "consumer_name", "safe_name", "stream_name"]


def check_subject(topic: str) -> str:
    """A topic is published as a NATS subject: dot-separated tokens, no wildcards or spaces."""
    if (not topic or any(c in topic for c in " \t\r\n*>") or topic.startswith(".")
            or topic.endswith(".") or ".." in topic):
        raise ConfigError(f"topic {topic!r} is not a valid NATS subject "
                          "(dot-separated tokens without spaces or wildcards)", field="topic")
    return topic


def consumer_name(group: str, topic: str, *, shared_stream: bool) -> str:
    """Durable name of ``group`` on ``topic``; a stream holding several subjects needs the
    topic in the name so the same group on two of its topics gets two consumers."""
    name = safe_name(group)
    return f"{name}__{name_digest(topic)}" if shared_stream else name
