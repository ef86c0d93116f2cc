"""Settings: YAML files, environment overrides, typed errors naming file and field, masking."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagamesh.errors import ConfigError
from sagamesh.settings import Settings, _parse_duration, mask_url

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["memory", "nats", "rabbitmq", "kafka", "nats-postgres"])
def test_every_shipped_config_loads(name: str) -> None:
    settings = Settings.from_yaml(CONFIGS / f"{name}.yaml")
    expected = {"memory": "memory", "nats": "nats", "rabbitmq": "rabbitmq", "kafka": "kafka",
                "nats-postgres": "nats"}[name]
    assert settings.broker.type == expected
    assert settings.publisher.topic_prefix == "saga.events"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "broker:\n  type: nats\n  url: nats://a:4222\n"
                           "publisher:\n  timeout: 3\n")
    monkeypatch.setenv("SAGAMESH_BROKER__URL", "nats://b:4222")
    monkeypatch.setenv("SAGAMESH_CONSUMER__RETRY__MAX_ATTEMPTS", "9")
    settings = Settings.from_yaml(path)
    assert settings.broker.broker_url() == "nats://b:4222"
    assert settings.broker.type == "nats"  # the rest of the section stays from the file
    assert settings.publisher.timeout == 3.0
    assert settings.consumer.retry.max_attempts == 9


def test_durations_accept_units(tmp_path: Path) -> None:
    path = write(tmp_path, "publisher:\n  timeout: 250ms\n  retry_interval: 2m\n"
                           "dlq:\n  retry_policy: {ttl: 1h}\n")
    settings = Settings.from_yaml(path)
    assert settings.publisher.timeout == pytest.approx(0.25)
    assert settings.publisher.retry_interval == 120.0
    assert settings.dlq.retry_policy.ttl == 3600.0


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False),
       st.sampled_from([("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("", 1)]))
def test_duration_parser_scales_by_unit(value: float, unit: tuple[str, float]) -> None:
    text = f"{value:.3f}{unit[0]}"
    assert _parse_duration(text) == pytest.approx(float(f"{value:.3f}") * unit[1])


def test_unknown_key_names_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "broker:\n  typ: nats\n")
    with pytest.raises(ConfigError) as info:
        Settings.from_yaml(path)
    assert info.value.field == "broker.typ"
    assert info.value.file == str(path)
    assert "unknown key" in str(info.value)


def test_wrong_type_names_field(tmp_path: Path) -> None:
    path = write(tmp_path, "consumer:\n  max_in_flight: lots\n")
    with pytest.raises(ConfigError) as info:
        Settings.from_yaml(path)
    assert info.value.field == "consumer.max_in_flight"
    assert "lots" in str(info.value)


def test_bad_duration_explains_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "publisher:\n  timeout: fast\n")
    with pytest.raises(ConfigError, match="500ms") as info:
        Settings.from_yaml(path)
    assert info.value.field == "publisher.timeout"


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broker:\n  type: nats\n  url: [unclosed\n")
    with pytest.raises(ConfigError, match="line") as info:
        Settings.from_yaml(path)
    assert info.value.file == str(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.from_yaml(tmp_path / "nope.yaml")


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        Settings.from_yaml(write(tmp_path, "- a\n- b\n"))


def test_secrets_never_print(tmp_path: Path) -> None:
    path = write(tmp_path, "broker:\n  type: rabbitmq\n  url: amqp://guest:hunter2@h:5672/\n"
                           "storage:\n  type: postgres\n  url: postgresql://u:pw9@db/x\n")
    settings = Settings.from_yaml(path)
    for text in (repr(settings), str(settings), repr(settings.broker), str(settings.redacted())):
        assert "hunter2" not in text
        assert "pw9" not in text
    assert settings.broker.broker_url() == "amqp://guest:hunter2@h:5672/"


def test_url_built_from_endpoints_and_credentials() -> None:
    settings = Settings.load({"broker": {"type": "rabbitmq", "endpoints": ["h1:5672"],
                                         "username": "u", "password": "p@ss"}})
    assert settings.broker.broker_url() == "amqp://u:p%40ss@h1:5672"
    assert "p%40ss" not in repr(settings.broker)


def test_scheme_must_match_type() -> None:
    settings = Settings.load({"broker": {"type": "kafka", "url": "nats://x:4222"}})
    with pytest.raises(ConfigError) as info:
        settings.broker.broker_url()
    assert info.value.field == "broker.url"


def test_mask_url() -> None:
    assert mask_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url("nats://h:4222") == "nats://h:4222"


def test_a_bad_environment_variable_is_named_instead_of_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "publisher:\n  timeout: 2s\n")
    monkeypatch.setenv("SAGAMESH_PUBLISHER__TIMEOUT", "abc")
    with pytest.raises(ConfigError) as info:
        Settings.from_yaml(path)
    assert info.value.field == "publisher.timeout"
    assert info.value.file is None  # the file is fine
    assert "SAGAMESH_PUBLISHER__TIMEOUT" in str(info.value) and "abc" in str(info.value)


def test_settings_built_directly_raise_config_error_too(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(consumer={"max_in_flight": 0})  # type: ignore[arg-type]
    assert info.value.field == "consumer.max_in_flight"
    monkeypatch.setenv("SAGAMESH_BROKER__TYPE", "zeromq")
    with pytest.raises(ConfigError) as info:
        Settings()
    assert info.value.field == "broker.type" and "SAGAMESH_BROKER__TYPE" in str(info.value)
