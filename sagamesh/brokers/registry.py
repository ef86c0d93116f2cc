"""Resolve a broker from a URL scheme through the ``sagamesh.brokers`` entry-point group."""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import Broker

GROUP = "sagamesh.brokers"


class BrokerSettingsLike(Protocol):
    """What :func:`create_broker` needs of a settings section (see ``sagamesh.settings``)."""

    def broker_url(self) -> str: ...

    def broker_options(self) -> dict[str, Any]: ...


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available_schemes() -> list[str]:
    return sorted(_entry_points())


def broker_class(scheme: str) -> type[Broker]:
    ep = _entry_points().get(scheme)
    if ep is None:
        known = ", ".join(available_schemes()) or "none"
        hint = {
            "nats": "sagamesh-nats",
            "amqp": "sagamesh-rabbitmq",
            "amqps": "sagamesh-rabbitmq",
            "kafka": "sagamesh-kafka",
        }.get(scheme)
        fix = f"; install {hint}" if hint else ""
        raise ConfigError(f"no broker adapter for scheme {scheme!r} (installed: {known}){fix}",
                          field="broker.url")
    cls: type[Broker] = ep.load()
    return cls


def create_broker(target: str | BrokerSettingsLike, **options: Any) -> Broker:
    """Build (not connect) a broker from a URL like ``nats://127.0.0.1:4222`` or settings."""
    if isinstance(target, str):
        url = target
    else:
        url = target.broker_url()
        options = {**target.broker_options(), **options}
    scheme = urlsplit(url).scheme if "://" in url else ""
    if not scheme:
        raise ConfigError(f"broker URL {url!r} has no scheme (e.g. memory://, nats://)",
                          field="broker.url")
    cls: Any = broker_class(scheme)
    broker: Broker = cls(url, **options)
    return broker
