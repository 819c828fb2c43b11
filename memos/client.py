"""The Python client of memosd: typed calls over one gRPC channel, pydantic results.

    from memos.client import MemosClient

    with MemosClient("127.0.0.1:50051", token="...") as memos:
        cube = memos.put("The deploy key rotates every Monday", tags=["ops"])
        for hit in memos.search("when do we rotate keys?", k=3):
            print(hit.score, hit.cube.text)

A client holds one channel and is safe to share between threads. Failures raise the
``memos.errors`` class of the server's status (``NotFound``, ``InvalidArgument``, ...) with
the server's message, so callers catch typed errors rather than ``grpc.RpcError``.
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal, NoReturn, Self, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import BaseModel, ConfigDict

from memos.config import client_env
from memos.cube import (
    DEFAULT_NAMESPACE,
    CubeInput,
    Kind,
    MemCube,
    Source,
    State,
    from_proto,
    kind_to_proto,
    source_to_proto,
    state_to_proto,
)
from memos.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MemosError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from memos.v1 import memcube_pb2 as pb
from memos.v1 import memcube_pb2_grpc as pb_grpc

__all__ = [
    "DEFAULT_ADDR",
    "ChangeEvent",
    "ChangeType",
    "CubeInput",
    "DeadlineExceeded",
    "Deleted",
    "MemosClient",
    "Page",
    "SearchMode",
    "SearchResult",
    "Source",
    "Stats",
    "WatchStream",
]

DEFAULT_ADDR = "127.0.0.1:50051"
# Whether this contract's List can return embeddings; without it, a caller fetches them
# with Get (what `memosctl export` falls back to).
LIST_CARRIES_EMBEDDINGS = "include_embedding" in pb.ListRequest.DESCRIPTOR.fields_by_name
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
TENANT_HEADER = "x-memos-tenant"
SERVICE_NAME = "memos.v1.MemCubeService"

# Reads are idempotent, so gRPC may retry them by itself when a daemon restarts under them
# (a sidecar rollout); writes are not, because a retried Put would store the cube twice.
_RETRYABLE_READS = ("Get", "Search", "List", "History", "Stats")
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": SERVICE_NAME, "method": m} for m in _RETRYABLE_READS]
                + [{"service": "grpc.health.v1.Health", "method": "Check"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


class DeadlineExceeded(MemosError):
    """The call did not finish within the client's timeout."""

    code = "DEADLINE_EXCEEDED"


_ERRORS: dict[grpc.StatusCode, type[MemosError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def error_class(code: grpc.StatusCode) -> type[MemosError]:
    """The memos error a failed call with status ``code`` raises."""
    return _ERRORS.get(code, MemosError)


# ------------------------------------------------------------------------------ results


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SearchResult(_Result):
    cube: MemCube
    score: float  # higher is better


class Page(_Result):
    cubes: tuple[MemCube, ...]
    next_page_token: str  # empty: no more pages


class Deleted(_Result):
    id: str
    version: int  # the tombstone's version


class Stats(_Result):
    cubes: int
    by_state: dict[str, int]
    by_kind: dict[str, int]
    by_namespace: dict[str, int]
    size_bytes: int
    versions: int
    embedding_model: str
    embedding_dim: int
    ann_index: bool
    unindexed_rows: int


class ChangeType(StrEnum):
    PUT = "put"
    UPDATE = "update"
    DELETE = "delete"
    ARCHIVE = "archive"
    EXPIRE = "expire"
    UNSPECIFIED = "unspecified"


class ChangeEvent(_Result):
    type: ChangeType
    id: str
    version: int
    namespace: str
    at: datetime | None
    cube: MemCube | None


class SearchMode(StrEnum):
    DENSE = "dense"
    LEXICAL = "lexical"
    HYBRID = "hybrid"


_CHANGE_FROM_PB: dict[int, ChangeType] = {
    pb.CHANGE_TYPE_PUT: ChangeType.PUT,
    pb.CHANGE_TYPE_UPDATE: ChangeType.UPDATE,
    pb.CHANGE_TYPE_DELETE: ChangeType.DELETE,
    pb.CHANGE_TYPE_ARCHIVE: ChangeType.ARCHIVE,
    pb.CHANGE_TYPE_EXPIRE: ChangeType.EXPIRE,
}
_MODE_TO_PB: dict[SearchMode, pb.SearchMode] = {
    SearchMode.DENSE: pb.SEARCH_MODE_DENSE,
    SearchMode.LEXICAL: pb.SEARCH_MODE_LEXICAL,
    SearchMode.HYBRID: pb.SEARCH_MODE_HYBRID,
}


# ------------------------------------------------------------------------- conversions


_E = TypeVar("_E", bound=StrEnum)


_HINTS = {None: pb.HINT_UNSPECIFIED, "reuse": pb.HINT_REUSE, "done": pb.HINT_DONE}


def _hint(value: str | None) -> pb.Hint:
    try:
        return _HINTS[value]
    except KeyError:
        raise ValueError(f"hint must be 'reuse', 'done' or None, not {value!r}") from None


def _choice(enum: type[_E], value: _E | str, what: str) -> _E:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(e.value for e in enum)
        raise InvalidArgument(f"unknown {what} {value!r}: use one of {choices}") from None


def _timestamp(value: datetime, what: str) -> Any:
    if value.tzinfo is None:
        raise InvalidArgument(
            f"{what} is a naive datetime: pass a timezone-aware one, e.g. datetime.now(UTC)"
        )
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _source(source: Source | str | None) -> pb.Source | None:
    if source is None:
        return None
    if isinstance(source, str):
        source = Source(writer=source)
    return source_to_proto(source)


def input_to_proto(cube: CubeInput) -> pb.CubeInput:
    """The protobuf form of what a client writes."""
    msg = pb.CubeInput(
        namespace=cube.namespace,
        text=cube.text,
        # The fast form: the daemon reads the bytes in place, with no Python float per number.
        embedding_f32=np.asarray(cube.embedding, dtype="<f4").tobytes() if cube.embedding else b"",
        tags=list(cube.tags),
        metadata=dict(cube.metadata),
        ttl_seconds=cube.ttl_seconds,
        pinned=cube.pinned,
        priority=cube.priority,
    )
    msg.source.CopyFrom(source_to_proto(cube.source))
    return msg


def make_filter(
    *,
    namespaces: Iterable[str] = (),
    tags: Iterable[str] = (),
    kind: Kind | str | None = None,
    states: Iterable[State | str] = (),
    metadata: Mapping[str, str] | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> pb.Filter:
    """The filter shared by Search and List; empty arguments do not filter."""
    msg = pb.Filter(
        namespaces=list(namespaces),
        tags=list(tags),
        states=[state_to_proto(_choice(State, s, "state")) for s in states],
        metadata=dict(metadata or {}),
    )
    if kind is not None:
        msg.kind = kind_to_proto(_choice(Kind, kind, "kind"))
    if created_after is not None:
        msg.created_after.CopyFrom(_timestamp(created_after, "created_after"))
    if created_before is not None:
        msg.created_before.CopyFrom(_timestamp(created_before, "created_before"))
    return msg


def _stats_from_proto(msg: pb.StatsResponse) -> Stats:
    return Stats(
        cubes=msg.cubes,
        by_state=dict(msg.by_state),
        by_kind=dict(msg.by_kind),
        by_namespace=dict(msg.by_namespace),
        size_bytes=msg.size_bytes,
        versions=msg.versions,
        embedding_model=msg.embedding_model,
        embedding_dim=msg.embedding_dim,
        ann_index=msg.ann_index,
        unindexed_rows=msg.unindexed_rows,
    )


def _event_from_proto(msg: pb.ChangeEvent) -> ChangeEvent:
    return ChangeEvent(
        type=_CHANGE_FROM_PB.get(msg.type, ChangeType.UNSPECIFIED),
        id=msg.id,
        version=msg.version,
        namespace=msg.namespace,
        at=msg.at.ToDatetime(tzinfo=UTC) if msg.HasField("at") else None,
        cube=from_proto(msg.cube) if msg.HasField("cube") else None,
    )


# ------------------------------------------------------------------------------ client


class MemosClient:
    """A connection to memosd. Thread-safe; close it (or use ``with``) when done.

    ``token`` is sent as ``authorization: Bearer <token>``. ``tenant`` is sent as
    ``x-memos-tenant``: it names the tenant in development mode (a daemon with no tokens),
    or the tenant an admin token acts on; a plain token always acts on its own tenant.
    ``timeout`` bounds every unary call in seconds; ``credentials``
    (``grpc.ssl_channel_credentials(...)``) switches to TLS.
    """

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        *,
        token: str | None = None,
        tenant: str | None = None,
        timeout: float | None = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.addr = addr
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._has_token = bool(token)
        metadata: list[tuple[str, str]] = []
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        if tenant:
            metadata.append((TENANT_HEADER, tenant))
        self._metadata = tuple(metadata)
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
        ]
        if credentials is None:
            self._channel = grpc.insecure_channel(addr, options=options)
        else:
            self._channel = grpc.secure_channel(addr, credentials, options=options)
        self._stub = pb_grpc.MemCubeServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def from_env(
        cls,
        addr: str | None = None,
        *,
        token: str | None = None,
        tenant: str | None = None,
        **kwargs: Any,
    ) -> MemosClient:
        """A client whose unset arguments come from MEMOS_ADDR, MEMOS_TOKEN, MEMOS_TENANT."""
        return cls(
            addr or client_env("ADDR") or DEFAULT_ADDR,
            token=token or client_env("TOKEN"),
            tenant=tenant or client_env("TENANT"),
            **kwargs,
        )

    # -------------------------------------------------------------- lifecycle

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemosClient(addr={self.addr!r})"

    # ------------------------------------------------------------------ calls

    @property
    def channel(self) -> grpc.Channel:
        """The client's channel, for the other services' clients (adapters, KV, jobs)."""
        return self._channel

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata (token, tenant) every request carries."""
        return self._metadata

    def call(self, stub: Any, method: str, request: Any, *, timeout: float | None = None) -> Any:
        """One unary (or client-streaming) call on any of the daemon's services, with this
        client's metadata and timeout, a failure raised as the matching memos error."""
        try:
            return getattr(stub, method)(
                request,
                metadata=self._metadata,
                timeout=timeout if timeout is not None else self.timeout,
            )
        except grpc.RpcError as exc:
            self._raise(exc)

    def _call(self, method: str, request: Any) -> Any:
        return self.call(self._stub, method, request)

    def _raise(self, exc: grpc.RpcError) -> NoReturn:
        raise self.error_from_rpc(exc) from exc

    def error_from_rpc(self, exc: grpc.RpcError) -> MemosError:
        """The typed error for a failed call, with a message that says what to do."""
        code: grpc.StatusCode = exc.code()
        details: str = exc.details() or code.name
        cls = error_class(code)
        message = details
        if code == grpc.StatusCode.UNAVAILABLE:
            if "connect" in details.lower() or "dns" in details.lower():
                message = (
                    f"cannot reach memosd at {self.addr} ({details}): is the daemon running? "
                    "Start it with `memosd`, or point the client at it (MEMOS_ADDR, --addr)"
                )
            else:
                message = f"memosd at {self.addr} is unavailable: {details}"
        elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
            message = (
                f"{details}: the client's max_message_bytes is {self.max_message_bytes}; "
                "send fewer cubes per call, ask for fewer results, or raise the limit"
            )
        elif code == grpc.StatusCode.UNAUTHENTICATED and "MEMOS_TOKEN" not in details:
            sent = "a token was sent" if self._has_token else "no token was sent"
            message = f"{details} ({sent}: pass one with --token or MEMOS_TOKEN)"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"no answer from memosd at {self.addr} within {self.timeout} s"
        error = cls(message)
        if cls is MemosError:
            error.code = code.name
        return error

    # ----------------------------------------------------------------- writes

    def put(
        self,
        text: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        tags: Iterable[str] = (),
        metadata: Mapping[str, str] | None = None,
        embedding: Sequence[float] | None = None,
        ttl_seconds: int = 0,
        pinned: bool = False,
        priority: int = 0,
        source: Source | str | None = None,
    ) -> MemCube:
        """Store one plaintext cube; returns it as stored (with its new ``id``).

        ``embedding`` skips the server's embedding model (it must have the model's
        dimension); ``ttl_seconds=0`` never expires; ``source`` may be a writer name.
        """
        cube = pb.CubeInput(
            namespace=namespace,
            text=text,
            embedding=list(embedding or ()),
            tags=list(tags),
            metadata=dict(metadata or {}),
            ttl_seconds=ttl_seconds,
            pinned=pinned,
            priority=priority,
        )
        src = _source(source)
        if src is not None:
            cube.source.CopyFrom(src)
        response = self._call("Put", pb.PutRequest(cube=cube))
        return from_proto(response.cube)

    def put_batch(self, cubes: Iterable[CubeInput]) -> builtins.list[MemCube]:
        """Store several cubes in one call (one commit); results are in input order."""
        request = pb.PutBatchRequest(cubes=[input_to_proto(c) for c in cubes])
        response = self._call("PutBatch", request)
        return [from_proto(c) for c in response.cubes]

    def update(
        self,
        id: str,
        *,
        text: str | None = None,
        embedding: Sequence[float] | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        ttl_seconds: int | None = None,
        pinned: bool | None = None,
        priority: int | None = None,
        expected_version: int = 0,
    ) -> MemCube:
        """Write a new version; arguments left ``None`` keep their value.

        ``tags`` and ``metadata`` replace the old ones (``tags=[]`` clears them);
        ``ttl_seconds=0`` clears the expiry. ``expected_version`` makes the update
        conditional: FailedPrecondition when the latest version is another one.
        """
        request = pb.UpdateRequest(id=id, expected_version=expected_version)
        if text is not None:
            request.text = text
        if embedding is not None:
            request.embedding.extend(embedding)
        if tags is not None:
            request.replace_tags = True
            request.tags.extend(tags)
        if metadata is not None:
            request.replace_metadata = True
            request.metadata.update(metadata)
        if ttl_seconds is not None:
            request.ttl_seconds = ttl_seconds
        if pinned is not None:
            request.pinned = pinned
        if priority is not None:
            request.priority = priority
        response = self._call("Update", request)
        return from_proto(response.cube)

    def delete(self, id: str, *, expected_version: int = 0) -> Deleted:
        """Delete a cube (it becomes a tombstone, its history stays)."""
        response = self._call("Delete", pb.DeleteRequest(id=id, expected_version=expected_version))
        return Deleted(id=response.id, version=response.version)

    # ------------------------------------------------------------------ reads

    def get(
        self,
        id: str,
        *,
        version: int = 0,
        include_embedding: bool = False,
        hint: Literal["reuse", "done"] | None = None,
    ) -> MemCube:
        """One cube: the latest version, or ``version`` from its history. ``hint`` tells the
        scheduler whether this memory will be needed again soon ("reuse") or not ("done")."""
        request = pb.GetRequest(
            id=id, version=version, include_embedding=include_embedding, hint=_hint(hint)
        )
        return from_proto(self._call("Get", request).cube)

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        namespaces: Iterable[str] = (),
        tags: Iterable[str] = (),
        kind: Kind | str | None = None,
        states: Iterable[State | str] = (),
        metadata: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        mode: SearchMode | str | None = None,
        exact: bool = False,
        query_embedding: Sequence[float] | None = None,
        hint: Literal["reuse", "done"] | None = None,
    ) -> builtins.list[SearchResult]:
        """The ``k`` cubes nearest to ``query``, best first, within the filters. ``hint``
        (applied to every hit) tells the scheduler whether they will be needed again soon."""
        request = pb.SearchRequest(
            query=query,
            query_embedding=list(query_embedding or ()),
            k=k,
            filter=make_filter(
                namespaces=namespaces,
                tags=tags,
                kind=kind,
                states=states,
                metadata=metadata,
                created_after=created_after,
                created_before=created_before,
            ),
            exact=exact,
            hint=_hint(hint),
        )
        if mode is not None:
            request.mode = _MODE_TO_PB[_choice(SearchMode, mode, "search mode")]
        response = self._call("Search", request)
        return [SearchResult(cube=from_proto(h.cube), score=h.score) for h in response.hits]

    def list_page(
        self,
        *,
        namespaces: Iterable[str] = (),
        tags: Iterable[str] = (),
        kind: Kind | str | None = None,
        states: Iterable[State | str] = (),
        metadata: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
        include_embedding: bool = False,
    ) -> Page:
        """One page of cubes in id (creation) order; pass ``next_page_token`` on.

        ``include_embedding`` asks for the vectors too, where the contract has the field
        (``LIST_CARRIES_EMBEDDINGS``); cubes that come back without one need a ``get``.
        """
        request = pb.ListRequest(
            filter=make_filter(
                namespaces=namespaces,
                tags=tags,
                kind=kind,
                states=states,
                metadata=metadata,
                created_after=created_after,
                created_before=created_before,
            ),
            page_size=page_size,
            page_token=page_token,
        )
        if include_embedding and LIST_CARRIES_EMBEDDINGS:
            request.include_embedding = True  # type: ignore[attr-defined]
        response = self._call("List", request)
        return Page(
            cubes=tuple(from_proto(c) for c in response.cubes),
            next_page_token=response.next_page_token,
        )

    def list(
        self,
        *,
        namespaces: Iterable[str] = (),
        tags: Iterable[str] = (),
        kind: Kind | str | None = None,
        states: Iterable[State | str] = (),
        metadata: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = 0,
    ) -> Iterator[MemCube]:
        """Every matching cube, fetching pages as the iteration reaches them."""
        filters: dict[str, Any] = {
            "namespaces": tuple(namespaces),
            "tags": tuple(tags),
            "kind": kind,
            "states": tuple(states),
            "metadata": metadata,
            "created_after": created_after,
            "created_before": created_before,
        }
        token = ""
        while True:
            page = self.list_page(**filters, page_size=page_size, page_token=token)
            yield from page.cubes
            token = page.next_page_token
            if not token:
                return

    def history(self, id: str) -> builtins.list[MemCube]:
        """Every version of a cube, oldest first."""
        response = self._call("History", pb.HistoryRequest(id=id))
        return [from_proto(c) for c in response.versions]

    def stats(self) -> Stats:
        """Counts and sizes of the tenant's cubes, and the state of the search index."""
        return _stats_from_proto(self._call("Stats", pb.StatsRequest()))

    def watch(self, namespaces: Iterable[str] = ()) -> WatchStream:
        """Follow the tenant's changes as they happen, until ``cancel()`` or ``close()``.

        Returns once the daemon has subscribed, so every change made after this call
        returns is seen. The stream is an iterator of ChangeEvent and a context manager
        that cancels it.
        """
        # No deadline: a watch lasts as long as its caller wants.
        call = self._stub.Watch(
            pb.WatchRequest(namespaces=list(namespaces)), metadata=self._metadata
        )
        stream = WatchStream(self, call)
        stream.wait_subscribed()
        return stream

    def reindex(
        self, namespaces: Iterable[str] = (), *, everything: bool = False
    ) -> Iterator[tuple[int, int]]:
        """Re-embed the tenant's cubes whose vector is stale after an embedding model or
        template change (every version with ``everything``): yields (done, total) as the
        daemon commits each batch, (0, total) first. Needs an admin token."""
        # No deadline: a large tenant takes as long as its embedding takes.
        call = self._stub.Reindex(
            pb.ReindexRequest(namespaces=list(namespaces), all=everything),
            metadata=self._metadata,
        )
        try:
            for progress in call:
                yield int(progress.done), int(progress.total)
        except grpc.RpcError as exc:
            self._raise(exc)
        finally:
            call.cancel()

    def health(self, service: str = "") -> str:
        """The grpc.health.v1 status: "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"..."""
        try:
            response = self._health.Check(
                health_pb2.HealthCheckRequest(service=service),
                metadata=self._metadata,
                timeout=self.timeout,
            )
        except grpc.RpcError as exc:
            self._raise(exc)
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return name


class WatchStream:
    """An iterator over change events that can be cancelled from any thread."""

    def __init__(self, client: MemosClient, call: Any) -> None:
        self._client = client
        self._call = call
        self._cancelled = threading.Event()

    def wait_subscribed(self) -> None:
        """Block until the daemon sends the stream's headers (it subscribes first)."""
        self._call.initial_metadata()
        if self._call.done() and self._call.code() != grpc.StatusCode.OK:
            raise self._client.error_from_rpc(self._call)

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> ChangeEvent:
        try:
            message = next(self._call)
        except grpc.RpcError as exc:
            if self._cancelled.is_set() and exc.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise self._client.error_from_rpc(exc) from exc
        return _event_from_proto(message)

    def cancel(self) -> None:
        """End the stream; an iteration in progress stops cleanly."""
        self._cancelled.set()
        self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


# ------------------------------------------------------------------ jobs and explain


class JobRunInfo(_Result):
    job: str
    started_at: datetime
    seconds: float
    ok: bool
    detail: str


class JobInfo(_Result):
    name: str
    description: str
    interval_s: float
    next_run_at: datetime | None
    runs: tuple[JobRunInfo, ...]


class AccessInfo(_Result):
    at: datetime
    op: str
    bit: int
    source: str
    hit: bool


class Explanation(_Result):
    cube: MemCube
    tier: str
    activation_ids: tuple[str, ...]
    cache: str
    policy: str
    resident: bool
    decision: str
    accesses: int
    last_access: datetime | None
    latest_bit: int | None
    bit_source: str
    size_tokens: int
    recent: tuple[AccessInfo, ...]


class JobsClient:
    """SchedulerService's jobs and explanations, on a :class:`MemosClient`'s channel."""

    def __init__(self, client: MemosClient) -> None:
        from memos.v1 import scheduler_pb2_grpc as spb_grpc

        self._client = client
        self._stub = spb_grpc.SchedulerServiceStub(client.channel)  # type: ignore[no-untyped-call]

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        return self._client.call(self._stub, method, request, timeout=timeout)

    def list_jobs(self, history: int = 10) -> builtins.list[JobInfo]:
        from memos.v1 import scheduler_pb2 as spb

        r = self._call("ListJobs", spb.ListJobsRequest(history=history))
        return [
            JobInfo(
                name=j.name,
                description=j.description,
                interval_s=j.interval_s,
                next_run_at=_when(j.next_run_at) if j.HasField("next_run_at") else None,
                runs=tuple(_job_run(x) for x in j.runs),
            )
            for j in r.jobs
        ]

    def run_job(self, name: str, *, timeout: float | None = 600.0) -> JobRunInfo:
        """Run a job now and wait for it (admin scope)."""
        from memos.v1 import scheduler_pb2 as spb

        return _job_run(self._call("RunJob", spb.RunJobRequest(name=name), timeout).run)

    def explain(self, id: str) -> Explanation:
        from memos.v1 import scheduler_pb2 as spb

        r = self._call("Explain", spb.ExplainRequest(id=id))
        return Explanation(
            cube=from_proto(r.cube),
            tier=r.tier,
            activation_ids=tuple(r.activation_ids),
            cache=r.cache,
            policy=r.policy,
            resident=r.resident,
            decision=r.decision,
            accesses=r.accesses,
            last_access=_when(r.last_access) if r.HasField("last_access") else None,
            latest_bit=None if r.latest_bit < 0 else r.latest_bit,
            bit_source=r.bit_source,
            size_tokens=r.size_tokens,
            recent=tuple(
                AccessInfo(at=_when(a.at), op=a.op, bit=a.bit, source=a.source, hit=a.hit)
                for a in r.recent
            ),
        )


def _job_run(r: Any) -> JobRunInfo:
    return JobRunInfo(
        job=r.job, started_at=_when(r.started_at), seconds=r.seconds, ok=r.ok, detail=r.detail
    )


def _when(ts: Any) -> datetime:
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)
