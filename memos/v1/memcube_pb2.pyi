import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KIND_UNSPECIFIED: _ClassVar[Kind]
    KIND_PLAINTEXT: _ClassVar[Kind]
    KIND_ACTIVATION: _ClassVar[Kind]
    KIND_PARAMETER: _ClassVar[Kind]

class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_UNSPECIFIED: _ClassVar[State]
    STATE_ACTIVE: _ClassVar[State]
    STATE_ARCHIVED: _ClassVar[State]
    STATE_TOMBSTONE: _ClassVar[State]

class Hint(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HINT_UNSPECIFIED: _ClassVar[Hint]
    HINT_REUSE: _ClassVar[Hint]
    HINT_DONE: _ClassVar[Hint]

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_DENSE: _ClassVar[SearchMode]
    SEARCH_MODE_LEXICAL: _ClassVar[SearchMode]
    SEARCH_MODE_HYBRID: _ClassVar[SearchMode]

class ChangeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_TYPE_UNSPECIFIED: _ClassVar[ChangeType]
    CHANGE_TYPE_PUT: _ClassVar[ChangeType]
    CHANGE_TYPE_UPDATE: _ClassVar[ChangeType]
    CHANGE_TYPE_DELETE: _ClassVar[ChangeType]
    CHANGE_TYPE_ARCHIVE: _ClassVar[ChangeType]
    CHANGE_TYPE_EXPIRE: _ClassVar[ChangeType]
KIND_UNSPECIFIED: Kind
KIND_PLAINTEXT: Kind
KIND_ACTIVATION: Kind
KIND_PARAMETER: Kind
STATE_UNSPECIFIED: State
STATE_ACTIVE: State
STATE_ARCHIVED: State
STATE_TOMBSTONE: State
HINT_UNSPECIFIED: Hint
HINT_REUSE: Hint
HINT_DONE: Hint
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_DENSE: SearchMode
SEARCH_MODE_LEXICAL: SearchMode
SEARCH_MODE_HYBRID: SearchMode
CHANGE_TYPE_UNSPECIFIED: ChangeType
CHANGE_TYPE_PUT: ChangeType
CHANGE_TYPE_UPDATE: ChangeType
CHANGE_TYPE_DELETE: ChangeType
CHANGE_TYPE_ARCHIVE: ChangeType
CHANGE_TYPE_EXPIRE: ChangeType

class Source(_message.Message):
    __slots__ = ("writer", "session_id", "message_id")
    WRITER_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    writer: str
    session_id: str
    message_id: str
    def __init__(self, writer: _Optional[str] = ..., session_id: _Optional[str] = ..., message_id: _Optional[str] = ...) -> None: ...

class AccessStats(_message.Message):
    __slots__ = ("count", "last_access", "decayed_frequency")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACCESS_FIELD_NUMBER: _ClassVar[int]
    DECAYED_FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    count: int
    last_access: _timestamp_pb2.Timestamp
    decayed_frequency: float
    def __init__(self, count: _Optional[int] = ..., last_access: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decayed_frequency: _Optional[float] = ...) -> None: ...

class PlaintextPayload(_message.Message):
    __slots__ = ("text", "embedding", "embedding_model")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    text: str
    embedding: _containers.RepeatedScalarFieldContainer[float]
    embedding_model: str
    def __init__(self, text: _Optional[str] = ..., embedding: _Optional[_Iterable[float]] = ..., embedding_model: _Optional[str] = ...) -> None: ...

class ActivationPayload(_message.Message):
    __slots__ = ("model_fingerprint", "token_count", "chunk_tokens", "chunk_keys", "adapter", "cache_salt")
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_KEYS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    CACHE_SALT_FIELD_NUMBER: _ClassVar[int]
    model_fingerprint: str
    token_count: int
    chunk_tokens: int
    chunk_keys: _containers.RepeatedScalarFieldContainer[str]
    adapter: str
    cache_salt: str
    def __init__(self, model_fingerprint: _Optional[str] = ..., token_count: _Optional[int] = ..., chunk_tokens: _Optional[int] = ..., chunk_keys: _Optional[_Iterable[str]] = ..., adapter: _Optional[str] = ..., cache_salt: _Optional[str] = ...) -> None: ...

class ParameterPayload(_message.Message):
    __slots__ = ("base_model_fingerprint", "weights_sha256", "rank", "target_modules", "uri")
    BASE_MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    base_model_fingerprint: str
    weights_sha256: str
    rank: int
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    uri: str
    def __init__(self, base_model_fingerprint: _Optional[str] = ..., weights_sha256: _Optional[str] = ..., rank: _Optional[int] = ..., target_modules: _Optional[_Iterable[str]] = ..., uri: _Optional[str] = ...) -> None: ...

class MemCube(_message.Message):
    __slots__ = ("id", "tenant", "namespace", "kind", "state", "version", "parent_ids", "source", "tags", "created_at", "updated_at", "expires_at", "pinned", "priority", "size_bytes", "access", "metadata", "plaintext", "activation", "parameter")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARENT_IDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    namespace: str
    kind: Kind
    state: State
    version: int
    parent_ids: _containers.RepeatedScalarFieldContainer[str]
    source: Source
    tags: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    pinned: bool
    priority: int
    size_bytes: int
    access: AccessStats
    metadata: _containers.ScalarMap[str, str]
    plaintext: PlaintextPayload
    activation: ActivationPayload
    parameter: ParameterPayload
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., namespace: _Optional[str] = ..., kind: _Optional[_Union[Kind, str]] = ..., state: _Optional[_Union[State, str]] = ..., version: _Optional[int] = ..., parent_ids: _Optional[_Iterable[str]] = ..., source: _Optional[_Union[Source, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pinned: _Optional[bool] = ..., priority: _Optional[int] = ..., size_bytes: _Optional[int] = ..., access: _Optional[_Union[AccessStats, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., plaintext: _Optional[_Union[PlaintextPayload, _Mapping]] = ..., activation: _Optional[_Union[ActivationPayload, _Mapping]] = ..., parameter: _Optional[_Union[ParameterPayload, _Mapping]] = ...) -> None: ...

class CubeInput(_message.Message):
    __slots__ = ("namespace", "text", "embedding", "tags", "metadata", "source", "ttl_seconds", "pinned", "priority", "embedding_f32")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_F32_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    text: str
    embedding: _containers.RepeatedScalarFieldContainer[float]
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    source: Source
    ttl_seconds: int
    pinned: bool
    priority: int
    embedding_f32: bytes
    def __init__(self, namespace: _Optional[str] = ..., text: _Optional[str] = ..., embedding: _Optional[_Iterable[float]] = ..., tags: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., source: _Optional[_Union[Source, _Mapping]] = ..., ttl_seconds: _Optional[int] = ..., pinned: _Optional[bool] = ..., priority: _Optional[int] = ..., embedding_f32: _Optional[bytes] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("cube",)
    CUBE_FIELD_NUMBER: _ClassVar[int]
    cube: CubeInput
    def __init__(self, cube: _Optional[_Union[CubeInput, _Mapping]] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("cube",)
    CUBE_FIELD_NUMBER: _ClassVar[int]
    cube: MemCube
    def __init__(self, cube: _Optional[_Union[MemCube, _Mapping]] = ...) -> None: ...

class PutBatchRequest(_message.Message):
    __slots__ = ("cubes",)
    CUBES_FIELD_NUMBER: _ClassVar[int]
    cubes: _containers.RepeatedCompositeFieldContainer[CubeInput]
    def __init__(self, cubes: _Optional[_Iterable[_Union[CubeInput, _Mapping]]] = ...) -> None: ...

class PutBatchResponse(_message.Message):
    __slots__ = ("cubes",)
    CUBES_FIELD_NUMBER: _ClassVar[int]
    cubes: _containers.RepeatedCompositeFieldContainer[MemCube]
    def __init__(self, cubes: _Optional[_Iterable[_Union[MemCube, _Mapping]]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("id", "version", "include_embedding", "hint")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    include_embedding: bool
    hint: Hint
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ..., include_embedding: _Optional[bool] = ..., hint: _Optional[_Union[Hint, str]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("cube",)
    CUBE_FIELD_NUMBER: _ClassVar[int]
    cube: MemCube
    def __init__(self, cube: _Optional[_Union[MemCube, _Mapping]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("namespaces", "tags", "kind", "states", "created_after", "created_before", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    kind: Kind
    states: _containers.RepeatedScalarFieldContainer[State]
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, namespaces: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ..., kind: _Optional[_Union[Kind, str]] = ..., states: _Optional[_Iterable[_Union[State, str]]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("query", "query_embedding", "k", "filter", "mode", "exact", "hint")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    QUERY_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    query: str
    query_embedding: _containers.RepeatedScalarFieldContainer[float]
    k: int
    filter: Filter
    mode: SearchMode
    exact: bool
    hint: Hint
    def __init__(self, query: _Optional[str] = ..., query_embedding: _Optional[_Iterable[float]] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., mode: _Optional[_Union[SearchMode, str]] = ..., exact: _Optional[bool] = ..., hint: _Optional[_Union[Hint, str]] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("cube", "score")
    CUBE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    cube: MemCube
    score: float
    def __init__(self, cube: _Optional[_Union[MemCube, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ...) -> None: ...

class UpdateRequest(_message.Message):
    __slots__ = ("id", "expected_version", "text", "embedding", "replace_tags", "tags", "replace_metadata", "metadata", "ttl_seconds", "pinned", "priority")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    REPLACE_TAGS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    REPLACE_METADATA_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    id: str
    expected_version: int
    text: str
    embedding: _containers.RepeatedScalarFieldContainer[float]
    replace_tags: bool
    tags: _containers.RepeatedScalarFieldContainer[str]
    replace_metadata: bool
    metadata: _containers.ScalarMap[str, str]
    ttl_seconds: int
    pinned: bool
    priority: int
    def __init__(self, id: _Optional[str] = ..., expected_version: _Optional[int] = ..., text: _Optional[str] = ..., embedding: _Optional[_Iterable[float]] = ..., replace_tags: _Optional[bool] = ..., tags: _Optional[_Iterable[str]] = ..., replace_metadata: _Optional[bool] = ..., metadata: _Optional[_Mapping[str, str]] = ..., ttl_seconds: _Optional[int] = ..., pinned: _Optional[bool] = ..., priority: _Optional[int] = ...) -> None: ...

class UpdateResponse(_message.Message):
    __slots__ = ("cube",)
    CUBE_FIELD_NUMBER: _ClassVar[int]
    cube: MemCube
    def __init__(self, cube: _Optional[_Union[MemCube, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("id", "expected_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    expected_version: int
    def __init__(self, id: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("id", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("filter", "page_size", "page_token", "include_embedding")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    filter: Filter
    page_size: int
    page_token: str
    include_embedding: bool
    def __init__(self, filter: _Optional[_Union[Filter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_embedding: _Optional[bool] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("cubes", "next_page_token")
    CUBES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    cubes: _containers.RepeatedCompositeFieldContainer[MemCube]
    next_page_token: str
    def __init__(self, cubes: _Optional[_Iterable[_Union[MemCube, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[MemCube]
    def __init__(self, versions: _Optional[_Iterable[_Union[MemCube, _Mapping]]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("cubes", "by_state", "by_kind", "by_namespace", "size_bytes", "versions", "embedding_model", "embedding_dim", "ann_index", "unindexed_rows")
    class ByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ByKindEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ByNamespaceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CUBES_FIELD_NUMBER: _ClassVar[int]
    BY_STATE_FIELD_NUMBER: _ClassVar[int]
    BY_KIND_FIELD_NUMBER: _ClassVar[int]
    BY_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    ANN_INDEX_FIELD_NUMBER: _ClassVar[int]
    UNINDEXED_ROWS_FIELD_NUMBER: _ClassVar[int]
    cubes: int
    by_state: _containers.ScalarMap[str, int]
    by_kind: _containers.ScalarMap[str, int]
    by_namespace: _containers.ScalarMap[str, int]
    size_bytes: int
    versions: int
    embedding_model: str
    embedding_dim: int
    ann_index: bool
    unindexed_rows: int
    def __init__(self, cubes: _Optional[int] = ..., by_state: _Optional[_Mapping[str, int]] = ..., by_kind: _Optional[_Mapping[str, int]] = ..., by_namespace: _Optional[_Mapping[str, int]] = ..., size_bytes: _Optional[int] = ..., versions: _Optional[int] = ..., embedding_model: _Optional[str] = ..., embedding_dim: _Optional[int] = ..., ann_index: _Optional[bool] = ..., unindexed_rows: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("namespaces",)
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, namespaces: _Optional[_Iterable[str]] = ...) -> None: ...

class ChangeEvent(_message.Message):
    __slots__ = ("type", "id", "version", "namespace", "at", "cube")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CUBE_FIELD_NUMBER: _ClassVar[int]
    type: ChangeType
    id: str
    version: int
    namespace: str
    at: _timestamp_pb2.Timestamp
    cube: MemCube
    def __init__(self, type: _Optional[_Union[ChangeType, str]] = ..., id: _Optional[str] = ..., version: _Optional[int] = ..., namespace: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cube: _Optional[_Union[MemCube, _Mapping]] = ...) -> None: ...

class ReindexRequest(_message.Message):
    __slots__ = ("namespaces", "all")
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    def __init__(self, namespaces: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ...) -> None: ...

class ReindexProgress(_message.Message):
    __slots__ = ("done", "total")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...
