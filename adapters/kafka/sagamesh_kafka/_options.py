"""Adapter options: keyword arguments and ``kafka://`` URL query parameters, one typed object."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sagamesh.errors import ConfigError

DEFAULT_PORT = 9092
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_ACKS = ("all", "1", "0", "-1")
_TX_MODES = ("auto", "on", "off")
_OFFSET_RESET = ("earliest", "latest")
_COMPRESSION = ("none", "gzip", "snappy", "lz4", "zstd")
_SECURITY = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    """How :class:`~sagamesh_kafka.KafkaBroker` talks to Kafka.

    Every field may be given as a keyword argument or as a query parameter of the URL
    (``kafka://h1:9092,h2:9092?partitions=6&linger_ms=2``); keyword arguments win.
    Durations are seconds (float) or ``timedelta``.
    """

    client_id: str = "sagamesh"
    partitions: int = 3
    """Partitions of a topic sagamesh creates (topics are created on first use)."""
    replication_factor: int = 1
    """Replication factor of a topic sagamesh creates."""
    auto_create_topics: bool = True
    acks: str = "all"
    linger_ms: int = 0
    """Batching delay of the producer; pipelined sends batch by themselves at 0."""
    max_batch_size: int = 256 * 1024
    compression: str = "none"
    request_timeout: float = 30.0
    """Deadline of one produce request (a confirm), and of admin and metadata calls."""
    publish_window: int = 2048
    """Most unconfirmed sends ``publish_many`` keeps in flight."""
    enable_idempotence: bool = False
    """Idempotent producer (needs broker support; tansu has none)."""
    transactions: str = "auto"
    """``auto``: probe the broker at connect; ``on``: require; ``off``: never use them."""
    transactional_id: str = ""
    """Transactional id of the transaction producer (default: unique per client)."""
    transaction_probe_timeout: float = 5.0
    session_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    rebalance_timeout: float = 10.0
    max_poll_interval: float = 300.0
    auto_offset_reset: str = "earliest"
    """Where a new consumer group starts: ``earliest`` keeps everything retained."""
    commit_interval: float = 0.2
    """Settled offsets are committed at most this often (and on close and on revoke)."""
    fetch_max_wait: float = 0.1
    """Longest the broker holds a fetch that finds no new records. aiokafka sends one fetch
    at a time to a broker, and once a busy partition's records have waited 100 ms for the
    handlers it fetches the idle partitions alone; the busy partition's next records then wait
    for that fetch to come back. aiokafka's default, 0.5 s, halved ordered throughput on a
    topic with idle partitions; 0.1 s costs an idle member ten empty fetches a second."""
    max_buffered: int = 0
    """Records a subscription holds before it pauses fetching (0: 8 x max_in_flight, >= 512)."""
    revoke_timeout: float = 5.0
    """How long a revoked partition waits for its in-flight handlers before committing."""
    subscribe_timeout: float = 60.0
    """Deadline for a subscription's first partition assignment (group join)."""
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    username: str = ""
    password: str = ""
    tls: bool = False
    """Use TLS with the system trust store (``ssl_context`` overrides)."""
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        positive = ("partitions", "replication_factor", "max_batch_size", "publish_window")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1", field=name)
        for name in ("request_timeout", "transaction_probe_timeout", "session_timeout",
                     "heartbeat_interval", "rebalance_timeout", "max_poll_interval",
                     "commit_interval", "revoke_timeout", "subscribe_timeout", "fetch_max_wait"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive", field=name)
        if self.linger_ms < 0 or self.max_buffered < 0:
            raise ConfigError("must not be negative",
                              field="linger_ms" if self.linger_ms < 0 else "max_buffered")
        _choice("acks", self.acks, _ACKS)
        _choice("transactions", self.transactions, _TX_MODES)
        _choice("auto_offset_reset", self.auto_offset_reset, _OFFSET_RESET)
        _choice("compression", self.compression, _COMPRESSION)
        _choice("security_protocol", self.security_protocol, _SECURITY)

    # -- what aiokafka needs ---------------------------------------------------------------------

    def security(self) -> dict[str, Any]:
        """Connection security keywords shared by producer, consumer and admin client."""
        protocol = self.security_protocol
        context = self.ssl_context
        if self.tls and context is None:
            context = ssl.create_default_context()
        if context is not None and protocol == "PLAINTEXT":
            protocol = "SSL"
        if self.username and protocol in ("PLAINTEXT", "SSL"):
            protocol = "SASL_SSL" if protocol == "SSL" else "SASL_PLAINTEXT"
        out: dict[str, Any] = {"security_protocol": protocol}
        if context is not None:
            out["ssl_context"] = context
        if self.username:
            out.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                       sasl_plain_password=self.password)
        return out

    def acks_value(self) -> int | str:
        return "all" if self.acks in ("all", "-1") else int(self.acks)

    def buffer_limit(self, max_in_flight: int) -> int:
        return self.max_buffered or max(512, 8 * max_in_flight)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{value!r} is not one of {', '.join(allowed)}", field=name)


def check_topic(topic: str) -> None:
    """Kafka's own topic rule, checked before anything is sent (a clear error, nothing lost)."""
    if not isinstance(topic, str) or not _TOPIC.match(topic) or topic in (".", ".."):
        raise ConfigError(f"invalid Kafka topic name {topic!r}: use 1-249 of [A-Za-z0-9._-]",
                          field="topic")


def _coerce(name: str, raw: Any, default: Any) -> Any:
    if name == "ssl_context":
        if raw is not None and not isinstance(raw, ssl.SSLContext):
            raise ConfigError("ssl_context must be an ssl.SSLContext", field=name)
        return raw
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
            if isinstance(raw, bool):
                raise TypeError(raw)
            return int(raw)
        if isinstance(default, float):
            return raw.total_seconds() if isinstance(raw, timedelta) else float(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{raw!r} is not a number", field=name) from exc
    if name == "transactions" and isinstance(raw, bool):
        return "on" if raw else "off"
    if name == "acks" and isinstance(raw, int):
        return str(raw)
    return str(raw)


_DEFAULTS = {f.name: f.default for f in fields(KafkaOptions)}


def parse_url(url: str) -> tuple[list[str], dict[str, str]]:
    """``kafka://h1:9092,h2[:port][?query]`` → bootstrap servers and query options."""
    parts = urlsplit(url)
    if parts.scheme != "kafka":
        raise ConfigError(f"not a kafka:// URL: {url!r}", field="broker.url")
    netloc = parts.netloc
    userinfo = ""
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
    servers = []
    for item in filter(None, (s.strip() for s in netloc.split(","))):
        if item.startswith("["):  # [::1]:9092
            inner, _, rest = item[1:].partition("]")
            host, port = f"[{inner}]", rest.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        if not host or (port and not port.isdigit()):
            raise ConfigError(f"bad bootstrap server {item!r}", field="broker.url")
        servers.append(f"{host}:{port or DEFAULT_PORT}")
    if not servers:
        raise ConfigError(f"no bootstrap server in {url!r}", field="broker.url")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if userinfo:
        user, _, password = userinfo.partition(":")
        query.setdefault("username", user)
        query.setdefault("password", password)
    return servers, query


def build_options(query: dict[str, str], overrides: dict[str, Any]) -> KafkaOptions:
    merged: dict[str, Any] = {**query, **overrides}
    unknown = sorted(set(merged) - set(_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown Kafka option(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(_DEFAULTS))}", field=unknown[0])
    values = {name: _coerce(name, raw, _DEFAULTS[name]) for name, raw in merged.items()}
    return KafkaOptions(**values)
