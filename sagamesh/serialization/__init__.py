"""Serializers: SagaEvent to bytes and back (json by default, protobuf) and the envelope."""

from .base import Serializer
from .json_serializer import JsonSerializer
from .messages import from_message, to_message
from .protobuf_serializer import ProtobufSerializer
from .registry import (
    JSON_CONTENT_TYPE,
    PROTOBUF_CONTENT_TYPE,
    SERIALIZER_NAMES,
    get_serializer,
    serializer_for_content_type,
)

__all__ = [
    "JSON_CONTENT_TYPE",
    "PROTOBUF_CONTENT_TYPE",
    "SERIALIZER_NAMES",
    "JsonSerializer",
    "ProtobufSerializer",
    "Serializer",
    "from_message",
    "get_serializer",
    "serializer_for_content_type",
    "to_message",
]
