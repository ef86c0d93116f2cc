"""Map sagamesh topics and groups onto valid NATS subjects, stream and consumer names."""

from __future__ import annotations

import hashlib
import re

from sagamesh.errors import ConfigError

# Stream and consumer names may not hold '.', '*', '>', whitespace or path separators.
_INVALID_NAME = re.compile(r"[^A-Za-z0-9_-]")
_MAX_NAME = 200


def check_subject(topic: str) -> str:
    """A topic is published as a NATS subject: dot-separated tokens, no wildcards or spaces."""
    if (not topic or any(c in topic for c in " \t\r\n*>") or topic.startswith(".")
            or topic.endswith(".") or ".." in topic):
        raise ConfigError(f"topic {topic!r} is not a valid NATS subject "
                          "(dot-separated tokens without spaces or wildcards)", field="topic")
    return topic


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:8]


def safe_name(text: str) -> str:
    """``text`` as a valid name; a hash suffix keeps names distinct when characters changed."""
    clean = _INVALID_NAME.sub("_", text)
    if clean != text or len(clean) > _MAX_NAME:
        clean = f"{clean[:_MAX_NAME]}_{_digest(text)}"
    return clean


def stream_name(prefix: str, topic: str) -> str:
    return safe_name(f"{prefix}{topic}")


def consumer_name(group: str, topic: str, *, shared_stream: bool) -> str:
    """Durable name of ``group`` on ``topic``; a stream holding several subjects needs the
    topic in the name so the same group on two of its topics gets two consumers."""
    name = safe_name(group)
    return f"{name}__{_digest(topic)}" if shared_stream else name
