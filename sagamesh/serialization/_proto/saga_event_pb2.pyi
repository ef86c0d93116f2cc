import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SagaError(_message.Message):
    __slots__ = ("code", "message", "retryable", "details", "type", "timestamp", "cause")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    retryable: bool
    details: str
    type: str
    timestamp: _timestamp_pb2.Timestamp
    cause: SagaError
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ..., details: _Optional[str] = ..., type: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cause: _Optional[_Union[SagaError, _Mapping]] = ...) -> None: ...

class SagaEvent(_message.Message):
    __slots__ = ("id", "saga_id", "step_id", "type", "version", "timestamp", "correlation_id", "data", "previous_state", "new_state", "error", "duration", "attempt", "max_attempts", "metadata", "source", "service", "service_version", "trace_id", "span_id", "parent_span_id", "instance_id", "metadata_json")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetadataJsonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    NEW_STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    saga_id: str
    step_id: str
    type: str
    version: str
    timestamp: _timestamp_pb2.Timestamp
    correlation_id: str
    data: bytes
    previous_state: bytes
    new_state: bytes
    error: SagaError
    duration: int
    attempt: int
    max_attempts: int
    metadata: _containers.ScalarMap[str, str]
    source: str
    service: str
    service_version: str
    trace_id: str
    span_id: str
    parent_span_id: str
    instance_id: str
    metadata_json: _containers.ScalarMap[str, bytes]
    def __init__(self, id: _Optional[str] = ..., saga_id: _Optional[str] = ..., step_id: _Optional[str] = ..., type: _Optional[str] = ..., version: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., correlation_id: _Optional[str] = ..., data: _Optional[bytes] = ..., previous_state: _Optional[bytes] = ..., new_state: _Optional[bytes] = ..., error: _Optional[_Union[SagaError, _Mapping]] = ..., duration: _Optional[int] = ..., attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., source: _Optional[str] = ..., service: _Optional[str] = ..., service_version: _Optional[str] = ..., trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., parent_span_id: _Optional[str] = ..., instance_id: _Optional[str] = ..., metadata_json: _Optional[_Mapping[str, bytes]] = ...) -> None: ...
