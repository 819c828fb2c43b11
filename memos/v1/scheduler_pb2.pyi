from memos.v1 import memcube_pb2 as _memcube_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MigrateRequest(_message.Message):
    __slots__ = ("id", "to", "engine")
    ID_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    id: str
    to: _memcube_pb2.Kind
    engine: str
    def __init__(self, id: _Optional[str] = ..., to: _Optional[_Union[_memcube_pb2.Kind, str]] = ..., engine: _Optional[str] = ...) -> None: ...

class MigrateResponse(_message.Message):
    __slots__ = ("cube", "created", "prefilled_chunks", "reused_chunks", "dropped_chunks", "archived")
    CUBE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    PREFILLED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    REUSED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    cube: _memcube_pb2.MemCube
    created: bool
    prefilled_chunks: int
    reused_chunks: int
    dropped_chunks: int
    archived: _containers.RepeatedCompositeFieldContainer[_memcube_pb2.MemCube]
    def __init__(self, cube: _Optional[_Union[_memcube_pb2.MemCube, _Mapping]] = ..., created: _Optional[bool] = ..., prefilled_chunks: _Optional[int] = ..., reused_chunks: _Optional[int] = ..., dropped_chunks: _Optional[int] = ..., archived: _Optional[_Iterable[_Union[_memcube_pb2.MemCube, _Mapping]]] = ...) -> None: ...
