from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EchoRequest(_message.Message):
    __slots__ = ("text", "delay_ms", "fail_code", "count")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    FAIL_CODE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    text: str
    delay_ms: int
    fail_code: int
    count: int
    def __init__(self, text: _Optional[str] = ..., delay_ms: _Optional[int] = ..., fail_code: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class EchoReply(_message.Message):
    __slots__ = ("text", "served_by", "deadline_left_s", "traceparent")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_LEFT_S_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    text: str
    served_by: str
    deadline_left_s: float
    traceparent: str
    def __init__(self, text: _Optional[str] = ..., served_by: _Optional[str] = ..., deadline_left_s: _Optional[float] = ..., traceparent: _Optional[str] = ...) -> None: ...
