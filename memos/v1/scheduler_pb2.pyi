import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from memos.v1 import memcube_pb2 as _memcube_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MigrateRequest(_message.Message):
    __slots__ = ("id", "to", "engine", "engine_url")
    ID_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_URL_FIELD_NUMBER: _ClassVar[int]
    id: str
    to: _memcube_pb2.Kind
    engine: str
    engine_url: str
    def __init__(self, id: _Optional[str] = ..., to: _Optional[_Union[_memcube_pb2.Kind, str]] = ..., engine: _Optional[str] = ..., engine_url: _Optional[str] = ...) -> None: ...

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

class JobRun(_message.Message):
    __slots__ = ("job", "started_at", "seconds", "ok", "detail")
    JOB_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    job: str
    started_at: _timestamp_pb2.Timestamp
    seconds: float
    ok: bool
    detail: str
    def __init__(self, job: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., seconds: _Optional[float] = ..., ok: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("name", "description", "interval_s", "next_run_at", "runs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUN_AT_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    interval_s: float
    next_run_at: _timestamp_pb2.Timestamp
    runs: _containers.RepeatedCompositeFieldContainer[JobRun]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., interval_s: _Optional[float] = ..., next_run_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., runs: _Optional[_Iterable[_Union[JobRun, _Mapping]]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("history",)
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    history: int
    def __init__(self, history: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class RunJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RunJobResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: JobRun
    def __init__(self, run: _Optional[_Union[JobRun, _Mapping]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Access(_message.Message):
    __slots__ = ("at", "op", "bit", "source", "hit")
    AT_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    BIT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    HIT_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    op: str
    bit: int
    source: str
    hit: bool
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., op: _Optional[str] = ..., bit: _Optional[int] = ..., source: _Optional[str] = ..., hit: _Optional[bool] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("cube", "tier", "activation_ids", "cache", "policy", "resident", "decision", "accesses", "last_access", "latest_bit", "bit_source", "size_tokens", "recent")
    CUBE_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_IDS_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    ACCESSES_FIELD_NUMBER: _ClassVar[int]
    LAST_ACCESS_FIELD_NUMBER: _ClassVar[int]
    LATEST_BIT_FIELD_NUMBER: _ClassVar[int]
    BIT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    SIZE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    cube: _memcube_pb2.MemCube
    tier: str
    activation_ids: _containers.RepeatedScalarFieldContainer[str]
    cache: str
    policy: str
    resident: bool
    decision: str
    accesses: int
    last_access: _timestamp_pb2.Timestamp
    latest_bit: int
    bit_source: str
    size_tokens: int
    recent: _containers.RepeatedCompositeFieldContainer[Access]
    def __init__(self, cube: _Optional[_Union[_memcube_pb2.MemCube, _Mapping]] = ..., tier: _Optional[str] = ..., activation_ids: _Optional[_Iterable[str]] = ..., cache: _Optional[str] = ..., policy: _Optional[str] = ..., resident: _Optional[bool] = ..., decision: _Optional[str] = ..., accesses: _Optional[int] = ..., last_access: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., latest_bit: _Optional[int] = ..., bit_source: _Optional[str] = ..., size_tokens: _Optional[int] = ..., recent: _Optional[_Iterable[_Union[Access, _Mapping]]] = ...) -> None: ...

class TierStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CacheStats(_message.Message):
    __slots__ = ("name", "policy", "unit", "budget", "used", "residents", "known", "requests", "hits", "evictions", "labelled", "false_evicts", "false_keeps", "threshold", "promoted", "demoted", "prefilled_tokens", "loads", "unloads")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    RESIDENTS_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    LABELLED_FIELD_NUMBER: _ClassVar[int]
    FALSE_EVICTS_FIELD_NUMBER: _ClassVar[int]
    FALSE_KEEPS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    DEMOTED_FIELD_NUMBER: _ClassVar[int]
    PREFILLED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LOADS_FIELD_NUMBER: _ClassVar[int]
    UNLOADS_FIELD_NUMBER: _ClassVar[int]
    name: str
    policy: str
    unit: str
    budget: int
    used: int
    residents: int
    known: int
    requests: int
    hits: int
    evictions: int
    labelled: int
    false_evicts: int
    false_keeps: int
    threshold: float
    promoted: int
    demoted: int
    prefilled_tokens: int
    loads: int
    unloads: int
    def __init__(self, name: _Optional[str] = ..., policy: _Optional[str] = ..., unit: _Optional[str] = ..., budget: _Optional[int] = ..., used: _Optional[int] = ..., residents: _Optional[int] = ..., known: _Optional[int] = ..., requests: _Optional[int] = ..., hits: _Optional[int] = ..., evictions: _Optional[int] = ..., labelled: _Optional[int] = ..., false_evicts: _Optional[int] = ..., false_keeps: _Optional[int] = ..., threshold: _Optional[float] = ..., promoted: _Optional[int] = ..., demoted: _Optional[int] = ..., prefilled_tokens: _Optional[int] = ..., loads: _Optional[int] = ..., unloads: _Optional[int] = ...) -> None: ...

class TierStatsResponse(_message.Message):
    __slots__ = ("caches", "tenants", "coretrieved_sets", "fused_sets")
    CACHES_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    CORETRIEVED_SETS_FIELD_NUMBER: _ClassVar[int]
    FUSED_SETS_FIELD_NUMBER: _ClassVar[int]
    caches: _containers.RepeatedCompositeFieldContainer[CacheStats]
    tenants: int
    coretrieved_sets: int
    fused_sets: int
    def __init__(self, caches: _Optional[_Iterable[_Union[CacheStats, _Mapping]]] = ..., tenants: _Optional[int] = ..., coretrieved_sets: _Optional[int] = ..., fused_sets: _Optional[int] = ...) -> None: ...
