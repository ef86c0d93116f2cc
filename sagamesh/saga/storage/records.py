"""JSON encoding of saga and step records for the durable stores (Redis, PostgreSQL).

msgspec encodes the ``SagaInstance``/``StepState`` dataclasses directly; user data that is a
pydantic model is dumped through its own JSON mode, so whatever ``data_type`` the definition
declares round-trips as plain JSON and the coordinator's codec rehydrates it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from ...errors import SerializationError
from ...events import SagaError
from ..state import SagaInstance, StepState


def _enc_hook(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)  # pydantic v2 models, without importing pydantic
    if callable(dump):
        return dump(mode="json")
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    raise NotImplementedError(f"cannot store a {type(obj).__name__} as JSON")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_saga_decoder = msgspec.json.Decoder(SagaInstance)
_step_decoder = msgspec.json.Decoder(StepState)
_error_decoder = msgspec.json.Decoder(SagaError)
_any_decoder = msgspec.json.Decoder()


def encode(value: Any) -> bytes:
    """JSON bytes of any stored value; :class:`SerializationError` names what cannot be stored."""
    try:
        return _encoder.encode(value)
    except (NotImplementedError, TypeError, OverflowError) as exc:
        raise SerializationError(f"saga state is not storable as JSON: {exc}") from exc


def encode_text(value: Any) -> str:
    return encode(value).decode()


def encode_saga(saga: SagaInstance) -> bytes:
    return encode(saga)


def decode_saga(raw: bytes | str) -> SagaInstance:
    try:
        return _saga_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise SerializationError(f"stored saga record is corrupt: {exc}") from exc


def encode_step(step: StepState) -> bytes:
    return encode(step)


def decode_step(raw: bytes | str) -> StepState:
    try:
        return _step_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise SerializationError(f"stored step record is corrupt: {exc}") from exc


def decode_json(raw: bytes | str | None) -> Any:
    return None if raw is None else _any_decoder.decode(raw)


def decode_error(raw: bytes | str | None) -> SagaError | None:
    return None if raw is None else _error_decoder.decode(raw)


def epoch(value: datetime) -> float:
    """Seconds since the epoch; naive datetimes are taken as UTC (as ``utcnow`` produces)."""
    if value.tzinfo is None:
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return value.timestamp()
