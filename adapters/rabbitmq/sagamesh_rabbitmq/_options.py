"""Adapter options: keyword arguments and ``amqp://`` URL query parameters, one typed object."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sagamesh.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
QUEUE_TYPES = ("classic", "quorum")


@dataclass(frozen=True, slots=True)
class RabbitOptions:
    """How :class:`~sagamesh_rabbitmq.RabbitBroker` maps topics and groups onto RabbitMQ.

    Every field may be given as a keyword argument or as a query parameter of the URL
    (``amqp://guest:guest@host/?exchange=orders&publish_window=256``); keyword arguments win.
    Query parameters sagamesh does not know (``heartbeat``, ``name``, ...) go to aio-pika.
    """

    exchange: str = "sagamesh"
    """Durable topic exchange every topic is published to (topic = routing key)."""
    publish_window: int = 512
    """Most unconfirmed publishes ``publish_many`` keeps in flight."""
    publish_timeout: float = 30.0
    """Deadline of one publish, including waiting for a reconnect and retrying."""
    mandatory: bool = False
    """Publish with ``mandatory``: a message no queue is bound for fails with
    :class:`~sagamesh_rabbitmq.UnroutableMessageError` instead of being dropped."""
    reconnect_interval: float = 1.0
    """Pause between reconnection attempts of the robust connection."""
    queue_type: str = "classic"
    """``classic`` or ``quorum`` for consumer-group queues (quorum counts redeliveries exactly)."""
    delay_queue_ttl_margin: float = 600.0
    """A delay queue is deleted by RabbitMQ this long after it was last declared plus its delay."""
    tx_channels: int = 4
    """Channels kept for native transactions (one transaction uses one channel at a time)."""
    connect_timeout: float = 10.0
    drain_timeout: float = 10.0
    """How long closing a subscription waits for running handlers before cancelling them."""

    def __post_init__(self) -> None:
        if not self.exchange:
            raise ConfigError("the exchange name must not be empty (the default exchange "
                              "cannot be bound to)", field="exchange")
        from ._topology import valid_name

        if not valid_name(self.exchange):
            raise ConfigError(f"exchange name {self.exchange!r} must be at most 255 bytes of "
                              "letters, digits and - _ . : @ # , / + or space", field="exchange")
        if self.publish_window < 1:
            raise ConfigError("publish_window must be at least 1", field="publish_window")
        if self.publish_timeout <= 0:
            raise ConfigError("publish_timeout must be positive", field="publish_timeout")
        if self.queue_type not in QUEUE_TYPES:
            raise ConfigError(f"queue_type must be one of {QUEUE_TYPES}", field="queue_type")
        if self.tx_channels < 1:
            raise ConfigError("tx_channels must be at least 1", field="tx_channels")
        if self.reconnect_interval <= 0:
            raise ConfigError("reconnect_interval must be positive",
                              field="reconnect_interval")


def _coerce(name: str, raw: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{raw!r} is not a boolean", field=name)
    try:
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw.total_seconds() if hasattr(raw, "total_seconds") else raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{raw!r} is not a number", field=name) from exc
    return str(raw)


def parse_options(url: str, options: dict[str, Any]) -> tuple[str, RabbitOptions]:
    """Split sagamesh's options off ``url``; returns the URL for aio-pika and the options."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError(f"not an AMQP URL: {url!r}", field="broker.url")
    known = {f.name: f.default for f in fields(RabbitOptions)}
    values: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in known:
            values[key] = _coerce(key, value, known[key])
        else:
            rest.append((key, value))
    for key, value in options.items():
        if key not in known:
            raise ConfigError(f"unknown RabbitMQ broker option {key!r} "
                              f"(known: {', '.join(sorted(known))})", field=key)
        values[key] = _coerce(key, value, known[key])
    clean = urlunsplit(parts._replace(query=urlencode(rest)))
    return clean, RabbitOptions(**values)
