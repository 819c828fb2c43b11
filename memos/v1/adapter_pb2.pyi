import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from memos.v1 import memcube_pb2 as _memcube_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AdapterOrigin(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADAPTER_ORIGIN_UNSPECIFIED: _ClassVar[AdapterOrigin]
    ADAPTER_ORIGIN_UPLOAD: _ClassVar[AdapterOrigin]
    ADAPTER_ORIGIN_MERGE: _ClassVar[AdapterOrigin]
    ADAPTER_ORIGIN_TRAIN: _ClassVar[AdapterOrigin]

class MergeMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MERGE_METHOD_UNSPECIFIED: _ClassVar[MergeMethod]
    MERGE_METHOD_LINEAR: _ClassVar[MergeMethod]
    MERGE_METHOD_TIES: _ClassVar[MergeMethod]

class MergeSpace(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MERGE_SPACE_UNSPECIFIED: _ClassVar[MergeSpace]
    MERGE_SPACE_FACTORS: _ClassVar[MergeSpace]
    MERGE_SPACE_DENSE: _ClassVar[MergeSpace]
ADAPTER_ORIGIN_UNSPECIFIED: AdapterOrigin
ADAPTER_ORIGIN_UPLOAD: AdapterOrigin
ADAPTER_ORIGIN_MERGE: AdapterOrigin
ADAPTER_ORIGIN_TRAIN: AdapterOrigin
MERGE_METHOD_UNSPECIFIED: MergeMethod
MERGE_METHOD_LINEAR: MergeMethod
MERGE_METHOD_TIES: MergeMethod
MERGE_SPACE_UNSPECIFIED: MergeSpace
MERGE_SPACE_FACTORS: MergeSpace
MERGE_SPACE_DENSE: MergeSpace

class Adapter(_message.Message):
    __slots__ = ("id", "tenant", "name", "version", "ref", "digest", "path", "base_model", "rank", "alpha", "target_modules", "modules", "dtype", "size_bytes", "origin", "created_at", "parent_ids", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    MODULES_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PARENT_IDS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    name: str
    version: int
    ref: str
    digest: str
    path: str
    base_model: str
    rank: int
    alpha: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    modules: int
    dtype: str
    size_bytes: int
    origin: AdapterOrigin
    created_at: _timestamp_pb2.Timestamp
    parent_ids: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ..., ref: _Optional[str] = ..., digest: _Optional[str] = ..., path: _Optional[str] = ..., base_model: _Optional[str] = ..., rank: _Optional[int] = ..., alpha: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ..., modules: _Optional[int] = ..., dtype: _Optional[str] = ..., size_bytes: _Optional[int] = ..., origin: _Optional[_Union[AdapterOrigin, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parent_ids: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RegisterHeader(_message.Message):
    __slots__ = ("name", "source_path", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATH_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    source_path: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., source_path: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("file", "data")
    FILE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    file: str
    data: bytes
    def __init__(self, file: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: RegisterHeader
    chunk: FileChunk
    def __init__(self, header: _Optional[_Union[RegisterHeader, _Mapping]] = ..., chunk: _Optional[_Union[FileChunk, _Mapping]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("adapter", "cube", "created")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    CUBE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    cube: _memcube_pb2.MemCube
    created: bool
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ..., cube: _Optional[_Union[_memcube_pb2.MemCube, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ListAdaptersRequest(_message.Message):
    __slots__ = ("all_versions",)
    ALL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    all_versions: bool
    def __init__(self, all_versions: _Optional[bool] = ...) -> None: ...

class ListAdaptersResponse(_message.Message):
    __slots__ = ("adapters",)
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    adapters: _containers.RepeatedCompositeFieldContainer[Adapter]
    def __init__(self, adapters: _Optional[_Iterable[_Union[Adapter, _Mapping]]] = ...) -> None: ...

class GetAdapterRequest(_message.Message):
    __slots__ = ("name", "version", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    id: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., id: _Optional[str] = ...) -> None: ...

class GetAdapterResponse(_message.Message):
    __slots__ = ("adapter",)
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ...) -> None: ...

class DeleteAdapterRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DeleteAdapterResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.RepeatedCompositeFieldContainer[Adapter]
    def __init__(self, deleted: _Optional[_Iterable[_Union[Adapter, _Mapping]]] = ...) -> None: ...

class MergeSource(_message.Message):
    __slots__ = ("name", "version", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    weight: float
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class MergeRequest(_message.Message):
    __slots__ = ("name", "sources", "method", "space", "rank", "density")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    DENSITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    sources: _containers.RepeatedCompositeFieldContainer[MergeSource]
    method: MergeMethod
    space: MergeSpace
    rank: int
    density: float
    def __init__(self, name: _Optional[str] = ..., sources: _Optional[_Iterable[_Union[MergeSource, _Mapping]]] = ..., method: _Optional[_Union[MergeMethod, str]] = ..., space: _Optional[_Union[MergeSpace, str]] = ..., rank: _Optional[int] = ..., density: _Optional[float] = ...) -> None: ...

class MergeResponse(_message.Message):
    __slots__ = ("adapter", "cube", "rank", "error", "module_errors")
    class ModuleErrorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    CUBE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODULE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    cube: _memcube_pb2.MemCube
    rank: int
    error: float
    module_errors: _containers.ScalarMap[str, float]
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ..., cube: _Optional[_Union[_memcube_pb2.MemCube, _Mapping]] = ..., rank: _Optional[int] = ..., error: _Optional[float] = ..., module_errors: _Optional[_Mapping[str, float]] = ...) -> None: ...

class TrainOptions(_message.Message):
    __slots__ = ("rank", "alpha", "target_modules", "steps", "learning_rate", "batch_size", "max_tokens", "seed")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    rank: int
    alpha: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    steps: int
    learning_rate: float
    batch_size: int
    max_tokens: int
    seed: int
    def __init__(self, rank: _Optional[int] = ..., alpha: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ..., steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., batch_size: _Optional[int] = ..., max_tokens: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("name", "memory_ids", "options")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_IDS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    memory_ids: _containers.RepeatedScalarFieldContainer[str]
    options: TrainOptions
    def __init__(self, name: _Optional[str] = ..., memory_ids: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[TrainOptions, _Mapping]] = ...) -> None: ...

class TrainStarted(_message.Message):
    __slots__ = ("memories", "steps")
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    memories: int
    steps: int
    def __init__(self, memories: _Optional[int] = ..., steps: _Optional[int] = ...) -> None: ...

class TrainProgress(_message.Message):
    __slots__ = ("step", "steps", "loss", "elapsed_s")
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    step: int
    steps: int
    loss: float
    elapsed_s: float
    def __init__(self, step: _Optional[int] = ..., steps: _Optional[int] = ..., loss: _Optional[float] = ..., elapsed_s: _Optional[float] = ...) -> None: ...

class TrainResult(_message.Message):
    __slots__ = ("adapter", "cube", "losses", "tokens", "seconds")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    CUBE_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    cube: _memcube_pb2.MemCube
    losses: _containers.RepeatedScalarFieldContainer[float]
    tokens: int
    seconds: float
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ..., cube: _Optional[_Union[_memcube_pb2.MemCube, _Mapping]] = ..., losses: _Optional[_Iterable[float]] = ..., tokens: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class TrainEvent(_message.Message):
    __slots__ = ("started", "progress", "result")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    started: TrainStarted
    progress: TrainProgress
    result: TrainResult
    def __init__(self, started: _Optional[_Union[TrainStarted, _Mapping]] = ..., progress: _Optional[_Union[TrainProgress, _Mapping]] = ..., result: _Optional[_Union[TrainResult, _Mapping]] = ...) -> None: ...

class PageRequest(_message.Message):
    __slots__ = ("name", "version", "hint")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    hint: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., hint: _Optional[int] = ...) -> None: ...

class PageDecision(_message.Message):
    __slots__ = ("hit", "key", "adapter", "load", "unload", "bit", "applied")
    HIT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    UNLOAD_FIELD_NUMBER: _ClassVar[int]
    BIT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    hit: bool
    key: str
    adapter: Adapter
    load: bool
    unload: _containers.RepeatedScalarFieldContainer[str]
    bit: int
    applied: bool
    def __init__(self, hit: _Optional[bool] = ..., key: _Optional[str] = ..., adapter: _Optional[_Union[Adapter, _Mapping]] = ..., load: _Optional[bool] = ..., unload: _Optional[_Iterable[str]] = ..., bit: _Optional[int] = ..., applied: _Optional[bool] = ...) -> None: ...

class DownloadAdapterRequest(_message.Message):
    __slots__ = ("name", "version", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    id: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., id: _Optional[str] = ...) -> None: ...

class DownloadAdapterResponse(_message.Message):
    __slots__ = ("adapter", "chunk")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    chunk: FileChunk
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ..., chunk: _Optional[_Union[FileChunk, _Mapping]] = ...) -> None: ...
