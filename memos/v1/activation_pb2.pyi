from memos.v1 import memcube_pb2 as _memcube_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KvLookupRequest(_message.Message):
    __slots__ = ("keys", "pin", "lease_ms", "cube_ids", "hint", "shared_dir_id")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PIN_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    CUBE_IDS_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    SHARED_DIR_ID_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    pin: bool
    lease_ms: int
    cube_ids: _containers.RepeatedScalarFieldContainer[str]
    hint: _memcube_pb2.Hint
    shared_dir_id: str
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., pin: _Optional[bool] = ..., lease_ms: _Optional[int] = ..., cube_ids: _Optional[_Iterable[str]] = ..., hint: _Optional[_Union[_memcube_pb2.Hint, str]] = ..., shared_dir_id: _Optional[str] = ...) -> None: ...

class KvLookupResponse(_message.Message):
    __slots__ = ("matched", "pinned", "lease_id", "lease_ms", "local_paths", "local_sizes")
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PATHS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_SIZES_FIELD_NUMBER: _ClassVar[int]
    matched: int
    pinned: int
    lease_id: str
    lease_ms: int
    local_paths: _containers.RepeatedScalarFieldContainer[str]
    local_sizes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, matched: _Optional[int] = ..., pinned: _Optional[int] = ..., lease_id: _Optional[str] = ..., lease_ms: _Optional[int] = ..., local_paths: _Optional[_Iterable[str]] = ..., local_sizes: _Optional[_Iterable[int]] = ...) -> None: ...

class KvFetchRequest(_message.Message):
    __slots__ = ("keys", "lease_id", "max_piece_bytes", "shared_dir_id", "shared_recheck")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_PIECE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHARED_DIR_ID_FIELD_NUMBER: _ClassVar[int]
    SHARED_RECHECK_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    lease_id: str
    max_piece_bytes: int
    shared_dir_id: str
    shared_recheck: bool
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., lease_id: _Optional[str] = ..., max_piece_bytes: _Optional[int] = ..., shared_dir_id: _Optional[str] = ..., shared_recheck: _Optional[bool] = ...) -> None: ...

class KvChunkPiece(_message.Message):
    __slots__ = ("index", "key", "chunk_bytes", "offset", "data", "local_path", "local_hold")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PATH_FIELD_NUMBER: _ClassVar[int]
    LOCAL_HOLD_FIELD_NUMBER: _ClassVar[int]
    index: int
    key: bytes
    chunk_bytes: int
    offset: int
    data: bytes
    local_path: str
    local_hold: str
    def __init__(self, index: _Optional[int] = ..., key: _Optional[bytes] = ..., chunk_bytes: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., local_path: _Optional[str] = ..., local_hold: _Optional[str] = ...) -> None: ...

class KvStoreResponse(_message.Message):
    __slots__ = ("received", "stored", "refused", "levels")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    received: int
    stored: int
    refused: int
    levels: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, received: _Optional[int] = ..., stored: _Optional[int] = ..., refused: _Optional[int] = ..., levels: _Optional[_Iterable[int]] = ...) -> None: ...

class KvReleaseRequest(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    def __init__(self, lease_id: _Optional[str] = ...) -> None: ...

class KvReleaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: _Optional[bool] = ...) -> None: ...

class KvStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KvLevelStats(_message.Message):
    __slots__ = ("name", "kind", "hits", "misses", "puts", "put_failures", "evictions", "errors", "corrupt", "bytes_read", "bytes_written", "items", "used_bytes", "budget_bytes", "available")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    PUTS_FIELD_NUMBER: _ClassVar[int]
    PUT_FAILURES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    CORRUPT_FIELD_NUMBER: _ClassVar[int]
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    hits: int
    misses: int
    puts: int
    put_failures: int
    evictions: int
    errors: int
    corrupt: int
    bytes_read: int
    bytes_written: int
    items: int
    used_bytes: int
    budget_bytes: int
    available: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., puts: _Optional[int] = ..., put_failures: _Optional[int] = ..., evictions: _Optional[int] = ..., errors: _Optional[int] = ..., corrupt: _Optional[int] = ..., bytes_read: _Optional[int] = ..., bytes_written: _Optional[int] = ..., items: _Optional[int] = ..., used_bytes: _Optional[int] = ..., budget_bytes: _Optional[int] = ..., available: _Optional[bool] = ...) -> None: ...

class KvStatsResponse(_message.Message):
    __slots__ = ("lookups", "lookup_keys", "lookup_hits", "fetches", "fetched_chunks", "fetched_bytes", "promotions", "corrupt", "stored_chunks", "rejected_puts", "leases", "pinned_chunks", "levels", "chunk_tokens", "none_hash_seed", "cache_salt", "model_id", "model_fingerprint", "max_message_bytes")
    LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_KEYS_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_HITS_FIELD_NUMBER: _ClassVar[int]
    FETCHES_FIELD_NUMBER: _ClassVar[int]
    FETCHED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    FETCHED_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROMOTIONS_FIELD_NUMBER: _ClassVar[int]
    CORRUPT_FIELD_NUMBER: _ClassVar[int]
    STORED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_PUTS_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    PINNED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NONE_HASH_SEED_FIELD_NUMBER: _ClassVar[int]
    CACHE_SALT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    lookups: int
    lookup_keys: int
    lookup_hits: int
    fetches: int
    fetched_chunks: int
    fetched_bytes: int
    promotions: int
    corrupt: int
    stored_chunks: int
    rejected_puts: int
    leases: int
    pinned_chunks: int
    levels: _containers.RepeatedCompositeFieldContainer[KvLevelStats]
    chunk_tokens: int
    none_hash_seed: str
    cache_salt: str
    model_id: str
    model_fingerprint: str
    max_message_bytes: int
    def __init__(self, lookups: _Optional[int] = ..., lookup_keys: _Optional[int] = ..., lookup_hits: _Optional[int] = ..., fetches: _Optional[int] = ..., fetched_chunks: _Optional[int] = ..., fetched_bytes: _Optional[int] = ..., promotions: _Optional[int] = ..., corrupt: _Optional[int] = ..., stored_chunks: _Optional[int] = ..., rejected_puts: _Optional[int] = ..., leases: _Optional[int] = ..., pinned_chunks: _Optional[int] = ..., levels: _Optional[_Iterable[_Union[KvLevelStats, _Mapping]]] = ..., chunk_tokens: _Optional[int] = ..., none_hash_seed: _Optional[str] = ..., cache_salt: _Optional[str] = ..., model_id: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...
