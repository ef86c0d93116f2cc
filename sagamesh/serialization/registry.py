"""Serializers by name (configuration) and by content type (decoding)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Final

from ..errors import ConfigError, SerializationError
from .base import Serializer

JSON_CONTENT_TYPE: Final = "application/json"
PROTOBUF_CONTENT_TYPE: Final = "application/x-protobuf"


@cache  # serializers are stateless: one shared instance each, built on first use
def _json() -> Serializer:
    from .json_serializer import JsonSerializer

    return JsonSerializer()


@cache
def _protobuf() -> Serializer:
    from .protobuf_serializer import ProtobufSerializer

    return ProtobufSerializer()


_FACTORIES: Final[dict[str, Callable[[], Serializer]]] = {"json": _json, "protobuf": _protobuf}
_CONTENT_TYPES: Final = {JSON_CONTENT_TYPE: "json", PROTOBUF_CONTENT_TYPE: "protobuf"}
#: Exact content type -> serializer factory: the decode hot path's one dict lookup.
BY_CONTENT_TYPE: Final = {JSON_CONTENT_TYPE: _json, PROTOBUF_CONTENT_TYPE: _protobuf}
default_serializer: Final = _json

SERIALIZER_NAMES: Final = tuple(_FACTORIES)


def get_serializer(name: str) -> Serializer:
    """The serializer called ``name`` ("json" or "protobuf")."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ConfigError(
            f"unknown serializer {name!r}; choose one of {', '.join(SERIALIZER_NAMES)}",
            field="serializer",
        )
    return factory()


def serializer_for_content_type(content_type: str) -> Serializer:
    """The serializer that reads ``content_type`` (parameters such as ``charset`` are ignored)."""
    name = _CONTENT_TYPES.get(content_type)
    if name is None:
        name = _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
        if name is None:
            raise SerializationError(f"no serializer for content type {content_type!r}")
    return get_serializer(name)
