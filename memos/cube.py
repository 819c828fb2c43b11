"""The MemCube record, validated at every boundary, and its exact protobuf mirror.

A cube is immutable: an update makes a new version (``model_copy``) and the store keeps
the old one as history.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from memos.config import Limits
from memos.errors import InvalidArgument
from memos.ids import ID_PATTERN
from memos.v1 import memcube_pb2 as pb

TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
TAG_PATTERN = re.compile(r"^[^\s,][^,\x00-\x1f]*$")
DEFAULT_NAMESPACE = "default"

TENANT_RULE = "1-63 chars of a-z, 0-9, '_' or '-', starting with a letter or digit"
NAMESPACE_RULE = "1-128 chars of letters, digits, '_', '.', ':' or '-', starting alphanumeric"


class Kind(StrEnum):
    PLAINTEXT = "plaintext"
    ACTIVATION = "activation"
    PARAMETER = "parameter"


class State(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"
    TOMBSTONE = "tombstone"


_KIND_TO_PB: dict[Kind, pb.Kind] = {
    Kind.PLAINTEXT: pb.KIND_PLAINTEXT,
    Kind.ACTIVATION: pb.KIND_ACTIVATION,
    Kind.PARAMETER: pb.KIND_PARAMETER,
}
_KIND_FROM_PB: dict[int, Kind] = {int(v): k for k, v in _KIND_TO_PB.items()}
_STATE_TO_PB: dict[State, pb.State] = {
    State.ACTIVE: pb.STATE_ACTIVE,
    State.ARCHIVED: pb.STATE_ARCHIVED,
    State.TOMBSTONE: pb.STATE_TOMBSTONE,
}
_STATE_FROM_PB: dict[int, State] = {int(v): k for k, v in _STATE_TO_PB.items()}


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return value.astimezone(UTC)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Source(_Frozen):
    writer: str = ""
    session_id: str = ""
    message_id: str = ""


class AccessStats(_Frozen):
    count: int = Field(0, ge=0)
    last_access: datetime | None = None
    decayed_frequency: float = Field(0.0, ge=0)

    _utc_last = field_validator("last_access")(_utc)


class PlaintextPayload(_Frozen):
    text: str
    embedding: tuple[float, ...] | None = None
    embedding_model: str = ""


class ActivationPayload(_Frozen):
    model_fingerprint: str
    token_count: int = Field(ge=0)
    chunk_tokens: int = Field(ge=1)
    chunk_keys: tuple[str, ...] = ()
    adapter: str = ""
    cache_salt: str = ""


class ParameterPayload(_Frozen):
    base_model_fingerprint: str
    weights_sha256: str
    rank: int = Field(ge=1)
    target_modules: tuple[str, ...] = ()
    uri: str = ""


class MemCube(_Frozen):
    id: str
    tenant: str
    namespace: str = DEFAULT_NAMESPACE
    kind: Kind = Kind.PLAINTEXT
    state: State = State.ACTIVE
    version: int = Field(1, ge=1)
    parent_ids: tuple[str, ...] = ()
    source: Source = Field(default_factory=Source)
    tags: tuple[str, ...] = ()
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    pinned: bool = False
    priority: int = 0
    size_bytes: int = Field(0, ge=0)
    access: AccessStats = Field(default_factory=AccessStats)
    metadata: dict[str, str] = Field(default_factory=dict)
    plaintext: PlaintextPayload | None = None
    activation: ActivationPayload | None = None
    parameter: ParameterPayload | None = None

    _utc_times = field_validator("created_at", "updated_at", "expires_at")(_utc)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ID_PATTERN.match(value):
            raise ValueError(f"malformed cube id {value!r}: expected a 26-character ULID")
        return value

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not TENANT_PATTERN.match(value):
            raise ValueError(f"bad tenant {value!r}: {TENANT_RULE}")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not NAMESPACE_PATTERN.match(value):
            raise ValueError(f"bad namespace {value!r}: {NAMESPACE_RULE}")
        return value

    @model_validator(mode="after")
    def _payload_matches_kind(self) -> MemCube:
        payloads = {
            Kind.PLAINTEXT: self.plaintext,
            Kind.ACTIVATION: self.activation,
            Kind.PARAMETER: self.parameter,
        }
        present = [k for k, v in payloads.items() if v is not None]
        if present and present != [self.kind]:
            raise ValueError(f"a {self.kind} cube cannot carry a {present[0]} payload")
        if self.kind == Kind.PLAINTEXT and self.plaintext is None:
            raise ValueError("a plaintext cube needs its text")
        return self

    @property
    def text(self) -> str:
        return self.plaintext.text if self.plaintext else ""

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())


class CubeInput(BaseModel):
    """What a client writes; the kernel turns it into a MemCube."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = DEFAULT_NAMESPACE
    text: str
    embedding: tuple[float, ...] | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, str] = Field(default_factory=dict)
    source: Source = Field(default_factory=Source)
    ttl_seconds: int = Field(0, ge=0)
    pinned: bool = False
    priority: int = 0

    def check(self, limits: Limits) -> None:
        """Raise InvalidArgument, with what to fix, when this input breaks a limit."""
        check_namespace(self.namespace)
        check_text(self.text, limits)
        check_tags(self.tags, limits)
        check_metadata(self.metadata, limits)
        if self.ttl_seconds:
            check_ttl(self.ttl_seconds, limits)


def check_tenant(tenant: str) -> None:
    if not TENANT_PATTERN.match(tenant):
        raise InvalidArgument(f"bad tenant {tenant!r}: {TENANT_RULE}")


def check_namespace(namespace: str) -> None:
    if not NAMESPACE_PATTERN.match(namespace):
        raise InvalidArgument(f"bad namespace {namespace!r}: {NAMESPACE_RULE}")


def check_id(cube_id: str) -> None:
    if not ID_PATTERN.match(cube_id):
        raise InvalidArgument(
            f"malformed cube id {cube_id!r}: expected a 26-character ULID such as "
            "01JDZ8Q3V2X7G4M5N6P7R8S9T0"
        )


def check_text(text: str, limits: Limits) -> None:
    if not text.strip():
        raise InvalidArgument("text is empty: a plaintext cube needs some text")
    size = len(text.encode("utf-8"))
    if size > limits.max_text_bytes:
        raise InvalidArgument(
            f"text is {size} bytes, over the limit of {limits.max_text_bytes}: "
            "split it into several cubes or raise limits.max_text_bytes"
        )
    if "\x00" in text:
        raise InvalidArgument("text contains a NUL character")


def check_tags(tags: tuple[str, ...] | list[str], limits: Limits) -> None:
    if len(tags) > limits.max_tags:
        raise InvalidArgument(f"{len(tags)} tags, over the limit of {limits.max_tags}")
    for tag in tags:
        if not tag or len(tag) > limits.max_tag_chars or not TAG_PATTERN.match(tag):
            raise InvalidArgument(
                f"bad tag {tag!r}: 1-{limits.max_tag_chars} characters, no commas, "
                "no control characters, not starting with a space"
            )


def check_metadata(metadata: dict[str, str], limits: Limits) -> None:
    if len(metadata) > limits.max_metadata_entries:
        raise InvalidArgument(
            f"{len(metadata)} metadata entries, over the limit of {limits.max_metadata_entries}"
        )
    for key, value in metadata.items():
        if not key or len(key) > limits.max_metadata_key_chars:
            raise InvalidArgument(
                f"bad metadata key {key!r}: 1-{limits.max_metadata_key_chars} characters"
            )
        if len(value) > limits.max_metadata_value_chars:
            raise InvalidArgument(
                f"metadata value of {key!r} is {len(value)} characters, over the limit of "
                f"{limits.max_metadata_value_chars}"
            )


def check_ttl(ttl_seconds: int, limits: Limits) -> None:
    if not limits.min_ttl_seconds <= ttl_seconds <= limits.max_ttl_seconds:
        raise InvalidArgument(
            f"ttl_seconds={ttl_seconds} is out of range: use 0 for no expiry, or "
            f"{limits.min_ttl_seconds}..{limits.max_ttl_seconds}"
        )


def expiry(now: datetime, ttl_seconds: int) -> datetime | None:
    return now + timedelta(seconds=ttl_seconds) if ttl_seconds else None


# ---------------------------------------------------------------------------- protobuf


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _dt(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def source_to_proto(source: Source) -> pb.Source:
    return pb.Source(
        writer=source.writer, session_id=source.session_id, message_id=source.message_id
    )


def source_from_proto(msg: pb.Source) -> Source:
    return Source(writer=msg.writer, session_id=msg.session_id, message_id=msg.message_id)


def to_proto(cube: MemCube, *, include_embedding: bool = False) -> pb.MemCube:
    """The protobuf form of a cube. Embeddings travel only when asked for."""
    msg = pb.MemCube(
        id=cube.id,
        tenant=cube.tenant,
        namespace=cube.namespace,
        kind=_KIND_TO_PB[cube.kind],
        state=_STATE_TO_PB[cube.state],
        version=cube.version,
        parent_ids=list(cube.parent_ids),
        source=source_to_proto(cube.source),
        tags=list(cube.tags),
        created_at=_ts(cube.created_at),
        updated_at=_ts(cube.updated_at),
        pinned=cube.pinned,
        priority=cube.priority,
        size_bytes=cube.size_bytes,
        access=pb.AccessStats(
            count=cube.access.count, decayed_frequency=cube.access.decayed_frequency
        ),
        metadata=dict(cube.metadata),
    )
    if cube.expires_at is not None:
        msg.expires_at.CopyFrom(_ts(cube.expires_at))
    if cube.access.last_access is not None:
        msg.access.last_access.CopyFrom(_ts(cube.access.last_access))
    if cube.plaintext is not None:
        p = cube.plaintext
        msg.plaintext.CopyFrom(
            pb.PlaintextPayload(
                text=p.text,
                embedding=list(p.embedding) if include_embedding and p.embedding else [],
                embedding_model=p.embedding_model,
            )
        )
    elif cube.activation is not None:
        a = cube.activation
        msg.activation.CopyFrom(
            pb.ActivationPayload(
                model_fingerprint=a.model_fingerprint,
                token_count=a.token_count,
                chunk_tokens=a.chunk_tokens,
                chunk_keys=list(a.chunk_keys),
                adapter=a.adapter,
                cache_salt=a.cache_salt,
            )
        )
    elif cube.parameter is not None:
        q = cube.parameter
        msg.parameter.CopyFrom(
            pb.ParameterPayload(
                base_model_fingerprint=q.base_model_fingerprint,
                weights_sha256=q.weights_sha256,
                rank=q.rank,
                target_modules=list(q.target_modules),
                uri=q.uri,
            )
        )
    return msg


def from_proto(msg: pb.MemCube) -> MemCube:
    """The cube a protobuf message describes; raises pydantic's ValidationError when invalid."""
    payload: dict[str, Any] = {}
    which = msg.WhichOneof("payload")
    if which == "plaintext":
        payload["plaintext"] = PlaintextPayload(
            text=msg.plaintext.text,
            embedding=tuple(msg.plaintext.embedding) or None,
            embedding_model=msg.plaintext.embedding_model,
        )
    elif which == "activation":
        a = msg.activation
        payload["activation"] = ActivationPayload(
            model_fingerprint=a.model_fingerprint,
            token_count=a.token_count,
            chunk_tokens=a.chunk_tokens,
            chunk_keys=tuple(a.chunk_keys),
            adapter=a.adapter,
            cache_salt=a.cache_salt,
        )
    elif which == "parameter":
        q = msg.parameter
        payload["parameter"] = ParameterPayload(
            base_model_fingerprint=q.base_model_fingerprint,
            weights_sha256=q.weights_sha256,
            rank=q.rank,
            target_modules=tuple(q.target_modules),
            uri=q.uri,
        )
    return MemCube(
        id=msg.id,
        tenant=msg.tenant,
        namespace=msg.namespace,
        kind=_KIND_FROM_PB[msg.kind],
        state=_STATE_FROM_PB[msg.state],
        version=msg.version,
        parent_ids=tuple(msg.parent_ids),
        source=source_from_proto(msg.source),
        tags=tuple(msg.tags),
        created_at=_dt(msg.created_at),
        updated_at=_dt(msg.updated_at),
        expires_at=_dt(msg.expires_at) if msg.HasField("expires_at") else None,
        pinned=msg.pinned,
        priority=msg.priority,
        size_bytes=msg.size_bytes,
        access=AccessStats(
            count=msg.access.count,
            last_access=(
                _dt(msg.access.last_access) if msg.access.HasField("last_access") else None
            ),
            decayed_frequency=msg.access.decayed_frequency,
        ),
        metadata=dict(msg.metadata),
        **payload,
    )


def kind_to_proto(kind: Kind) -> pb.Kind:
    return _KIND_TO_PB[kind]


def kind_from_proto(value: int) -> Kind | None:
    return _KIND_FROM_PB.get(value)


def state_to_proto(state: State) -> pb.State:
    return _STATE_TO_PB[state]


def state_from_proto(value: int) -> State | None:
    return _STATE_FROM_PB.get(value)
