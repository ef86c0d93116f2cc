"""Tuning knobs of the NATS adapter (all keyword arguments of ``NatsBroker``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from sagamesh._durations import Duration, require_seconds
from sagamesh.errors import ConfigError


@dataclass(frozen=True, slots=True)
class NatsOptions:
    stream_prefix: str = "SAGAMESH_"  # stream name = prefix + topic (made valid)
    storage: str = "file"  # file | memory
    replicas: int = 1
    max_age: float | None = None  # seconds a stream keeps messages (None: no limit)
    max_msgs: int | None = None
    max_bytes: int | None = None
    duplicate_window: float = 120.0  # JetStream de-duplication on Nats-Msg-Id
    ack_wait: float = 30.0  # unsettled deliveries are kept alive with +WPI before this
    max_ack_pending: int | None = None  # per consumer; default 4 x max_in_flight (>= 256)
    deliver_policy: str = "all"  # where a NEW durable group starts: all | new
    inactive_threshold: float = 300.0  # ephemeral (group=None) consumers vanish after this
    pull_expires: float = 30.0  # lifetime of one pull request
    idle_heartbeat: float = 2.0  # server heartbeat on pull requests; 2 missed -> re-pull
    lease_ttl: float = 10.0  # ordered groups: a silent active member is replaced after this
    publish_timeout: float = 10.0  # PubAck wait per publish
    max_pending_publishes: int = 2048  # PubAcks awaited at once by publish_many
    connect_timeout: float = 5.0
    reconnect_time_wait: float = 0.25
    api_timeout: float = 10.0  # JetStream API requests (stream/consumer management)
    client_name: str = "sagamesh"
    connect_options: dict[str, Any] = field(default_factory=dict)  # passed to nats.connect

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> NatsOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown NATS broker option(s): {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(known))})", field="broker.options")
        durations = {"max_age", "duplicate_window", "ack_wait", "inactive_threshold",
                     "pull_expires", "idle_heartbeat", "publish_timeout", "connect_timeout",
                     "lease_ttl", "reconnect_time_wait", "api_timeout"}
        values: dict[str, Any] = {}
        for name, value in options.items():
            if name in durations and value is not None:
                value = require_seconds(_as_duration(value, name))
            values[name] = value
        opts = cls(**values)
        if opts.storage not in ("file", "memory"):
            raise ConfigError(f"storage must be 'file' or 'memory', not {opts.storage!r}",
                              field="broker.options.storage")
        if opts.deliver_policy not in ("all", "new"):
            raise ConfigError("deliver_policy must be 'all' or 'new'",
                              field="broker.options.deliver_policy")
        if opts.idle_heartbeat * 2 >= opts.pull_expires:
            raise ConfigError("idle_heartbeat must be less than half of pull_expires",
                              field="broker.options.idle_heartbeat")
        return opts


def _as_duration(value: Any, name: str) -> Duration:
    if isinstance(value, bool) or (not isinstance(value, int | float) and not hasattr(
            value, "total_seconds")):
        raise ConfigError(f"{name} must be seconds or a timedelta, not {value!r}",
                          field=f"broker.options.{name}")
    result: Duration = value
    return result
