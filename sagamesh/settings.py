"""Settings: one YAML file per deployment, overridden by ``SAGAMESH_…`` environment variables.

``Settings.from_yaml("configs/nats.yaml")`` then ``SAGAMESH_BROKER__URL=nats://other:4222``
wins over the file. Unknown keys, wrong types and bad YAML raise :class:`ConfigError` naming
the file, the field and what to do. Secrets (passwords, credentials inside URLs) never print.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def _parse_duration(value: Any) -> Any:
    """Accept 2.5, "2.5", "500ms", "30s", "5m", "1h" or a timedelta; return seconds."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration (use seconds or e.g. 500ms, 30s, 5m)")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return value


Seconds = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0)]
PositiveSeconds = Annotated[float, BeforeValidator(_parse_duration), Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for repr, logs and the CLI)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class TLSSettings(_Section):
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify: bool = True


BrokerType = Literal["memory", "nats", "rabbitmq", "kafka"]
_SCHEMES: dict[str, str] = {
    "memory": "memory",
    "nats": "nats",
    "rabbitmq": "amqp",
    "kafka": "kafka",
}


class BrokerSettings(_Section):
    """Where the broker is. Either ``url`` or ``endpoints`` (host:port list) plus credentials."""

    type: BrokerType = "memory"
    url: SecretStr | None = None
    endpoints: list[str] = Field(default_factory=list)
    username: str | None = None
    password: SecretStr | None = None
    tls: TLSSettings = Field(default_factory=TLSSettings)
    connect_timeout: PositiveSeconds = 10.0
    options: dict[str, Any] = Field(default_factory=dict)

    def broker_url(self) -> str:
        if self.url is not None:
            url = self.url.get_secret_value()
            scheme = urlsplit(url).scheme
            expected = _SCHEMES[self.type]
            if scheme and self.type != "memory" and not scheme.startswith(expected):
                raise ConfigError(
                    f"url scheme {scheme!r} does not match broker type {self.type!r} "
                    f"(expected {expected}://)",
                    field="broker.url",
                )
            return url
        scheme = _SCHEMES[self.type]
        if self.type == "memory":
            return "memory://"
        if not self.endpoints:
            raise ConfigError(
                f"broker type {self.type!r} needs `url` or `endpoints`", field="broker.endpoints"
            )
        if self.tls.enabled and self.type == "rabbitmq":
            scheme = "amqps"
        auth = ""
        if self.username:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + quote(self.password.get_secret_value(), safe="")
            auth += "@"
        return f"{scheme}://{auth}{','.join(self.endpoints)}"

    def broker_options(self) -> dict[str, Any]:
        """The adapter keyword arguments: the generic settings (connect timeout, TLS,
        credentials) translated to what this ``type``'s adapter understands, then ``options``
        as given. ``sagamesh.create_broker(settings.broker)`` passes them on."""
        mapped: dict[str, Any] = {}
        tls = self.tls
        if self.type == "rabbitmq":
            mapped["connect_timeout"] = self.connect_timeout
            if tls.enabled:
                mapped["tls"] = tls
        elif self.type == "kafka":
            if tls.enabled:
                mapped["tls"] = True
                if tls.ca_file or tls.cert_file or not tls.verify:
                    mapped["ssl_context"] = self.ssl_context()
            if self.url is not None and self.username:
                mapped["username"] = self.username
                if self.password is not None:
                    mapped["password"] = self.password.get_secret_value()
        elif self.type == "nats":
            mapped["connect_timeout"] = self.connect_timeout
            connect: dict[str, Any] = {}
            if tls.enabled:
                connect["tls"] = self.ssl_context()
            if self.url is not None and self.username:
                connect["user"] = self.username
                if self.password is not None:
                    connect["password"] = self.password.get_secret_value()
            if connect:
                mapped["connect_options"] = {**connect,
                                             **self.options.get("connect_options", {})}
        mapped.update({k: v for k, v in self.options.items()
                       if not (k == "connect_options" and "connect_options" in mapped)})
        return mapped

    def ssl_context(self) -> Any:
        """An ``ssl.SSLContext`` from ``tls`` (CA file, client certificate, verification)."""
        import ssl

        tls = self.tls
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file:
            context.load_cert_chain(str(tls.cert_file),
                                    str(tls.key_file) if tls.key_file else None)
        if not tls.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def display_url(self) -> str:
        try:
            return mask_url(self.broker_url())
        except ConfigError:
            return "<invalid>"

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            yield key, (self.display_url() if key == "url" and value is not None else value)


class DLQRetrySettings(_Section):
    max_retries: int = Field(3, ge=0)
    retry_interval: Seconds = 60.0
    ttl: Seconds = 86400.0


class ReliabilitySettings(_Section):
    enable_retry: bool = True
    max_retry_attempts: int = Field(5, ge=0)
    retry_backoff: Seconds = 0.5
    max_retry_backoff: Seconds = 5.0
    enable_confirm: bool = True
    confirm_timeout: PositiveSeconds = 10.0
    enable_dlq: bool = True
    dlq_topic: str = "saga.dlq"
    dlq_retry_policy: DLQRetrySettings = Field(default_factory=DLQRetrySettings)


class PublisherSettings(_Section):
    topic_prefix: str = "saga.events"
    topic_strategy: Literal["single", "per_type"] = "single"
    serializer: Literal["json", "protobuf"] = "json"
    enable_confirm: Literal[True] = True  # every publish waits for its confirm (at-least-once)
    retry_attempts: int = Field(3, ge=0)
    retry_interval: Seconds = 1.0
    timeout: PositiveSeconds = 5.0
    reliability: ReliabilitySettings = Field(default_factory=ReliabilitySettings)


class RetrySettings(_Section):
    """A retry policy of ``sagamesh.retry`` described in data."""

    kind: Literal["exponential", "fixed", "linear", "none"] = "exponential"
    max_attempts: int = Field(5, ge=1)
    base_delay: Seconds = 0.2
    max_delay: Seconds = 10.0
    increment: Seconds = 1.0
    jitter: float = Field(0.2, ge=0, le=1)


class IdempotencySettings(_Section):
    kind: Literal["none", "memory", "redis"] = "memory"
    ttl: PositiveSeconds = 3600.0
    url: SecretStr | None = None
    prefix: str = "sagamesh:idem:"


class ConsumerSettings(_Section):
    topic_prefix: str = "saga.events"
    topic_strategy: Literal["single", "per_type"] = "single"
    group: str = "sagamesh"
    max_in_flight: int = Field(256, ge=1)
    ordering: Literal["per_saga", "none"] = "per_saga"
    retry: RetrySettings = Field(default_factory=RetrySettings)
    dlq_topic: str = "saga.dlq"
    idempotency: IdempotencySettings = Field(default_factory=IdempotencySettings)
    shutdown_timeout: PositiveSeconds = 30.0


class HandlerSettings(_Section):
    """Per-handler overrides, keyed by handler id in ``handlers:``."""

    enabled: bool = True
    priority: int | None = None
    max_concurrency: int | None = Field(None, ge=1)
    processing_timeout: PositiveSeconds | None = None


class StorageSettings(_Section):
    type: Literal["memory", "redis", "postgres"] = "memory"
    url: SecretStr | None = None
    prefix: str = "sagamesh"
    schema_name: str = Field("sagamesh", alias="schema")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and "://" not in value.get_secret_value():
            raise ValueError("must be a URL such as redis://host:6379/0 or postgresql://…")
        return value

    def display_url(self) -> str:
        return mask_url(self.url.get_secret_value()) if self.url else ""


class DLQSettings(_Section):
    topic: str = "saga.dlq"
    group: str = "sagamesh-dlq"
    auto_retry: bool = False
    retry_policy: DLQRetrySettings = Field(default_factory=DLQRetrySettings)


class SagaSettings(_Section):
    max_concurrent_sagas: int = Field(100, ge=1)
    worker_pool_size: int = Field(20, ge=1)
    acquire_timeout: PositiveSeconds = 5.0
    shutdown_timeout: PositiveSeconds = 30.0
    lease_ttl: PositiveSeconds = 30.0


class TracingSettings(_Section):
    enabled: bool = False
    service_name: str = "sagamesh"


class MetricsSettings(_Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    namespace: str = "sagamesh"


class Settings(BaseSettings):
    """Everything a sagamesh process needs, section by section."""

    model_config = SettingsConfigDict(
        env_prefix="SAGAMESH_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    app: str | None = None
    """``'module:attr'`` that ``sagamesh worker --config FILE`` runs (an EventRouter,
    SagaDefinition(s), a WorkerApp or a function returning one); the APP argument wins."""
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    publisher: PublisherSettings = Field(default_factory=PublisherSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    handlers: dict[str, HandlerSettings] = Field(default_factory=dict)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    dlq: DLQSettings = Field(default_factory=DLQSettings)
    saga: SagaSettings = Field(default_factory=SagaSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file: a deployment changes one value without a new file.
        return env_settings, init_settings, file_secret_settings

    def __init__(self, _source: str | None = None, **values: Any) -> None:
        """Invalid values (given or from ``SAGAMESH_…`` variables) raise ConfigError."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _config_error(exc, _source) from None

    @classmethod
    def load(cls, data: dict[str, Any] | None = None, *, source: str | None = None) -> Settings:
        return cls(_source=source, **(data or {}))

    @classmethod
    def from_yaml(cls, path: str | Path) -> Settings:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config: {exc.strerror}", file=str(path)) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"invalid YAML{where}: {getattr(exc, 'problem', exc)}",
                              file=str(path)) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError("the top level must be a mapping of sections (broker:, …)",
                              file=str(path))
        return cls.load(data, source=str(path))

    def redacted(self) -> dict[str, Any]:
        """A JSON-able dump with every secret masked (for `sagamesh config check`)."""
        dumped: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        dumped["broker"]["url"] = self.broker.display_url() if self.broker.url else None
        if self.storage.url is not None:
            dumped["storage"]["url"] = self.storage.display_url()
        idem = self.consumer.idempotency.url
        if idem is not None:
            dumped["consumer"]["idempotency"]["url"] = mask_url(idem.get_secret_value())
        return dumped


def _config_error(exc: ValidationError, source: str | None) -> ConfigError:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    variable = "SAGAMESH_" + "__".join(str(part) for part in first["loc"]).upper()
    from_env = variable in os.environ  # the environment overrides the file: blame the variable
    kind = first["type"]
    if kind == "extra_forbidden":
        message = f"unknown key {field!r}; check the spelling against the documented sections"
    elif kind == "missing":
        message = f"{field!r} is required"
    else:
        message = f"{first['msg']} (got {first.get('input')!r})"
    more = exc.error_count() - 1
    if more:
        message += f"; and {more} more error(s)"
    if from_env:
        return ConfigError(f"{message}, from the environment variable {variable}", field=field)
    return ConfigError(message, field=field, file=source)
