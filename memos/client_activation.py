"""Python client of ActivationService (KV chunks) and SchedulerService (Migrate).

    from memos.client import MemosClient
    from memos.client_activation import ActivationClient

    with MemosClient("127.0.0.1:50051", token="...") as memos:
        kv = ActivationClient(memos)
        migrated = kv.migrate(cube_id, to="activation")     # prefill and store its chunks
        keys = [bytes.fromhex(k) for k in migrated.cube.activation.chunk_keys]
        found = kv.lookup(keys, pin=True)                    # one round trip, pinned
        chunks = kv.fetch(keys[: found.pinned], lease_id=found.lease_id)

It rides on a :class:`~memos.client.MemosClient`'s channel, token and error mapping: failures
raise the same typed ``memos.errors`` classes. Chunks travel as raw bytes cut into pieces
below the message limit on both sides, and are reassembled here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict

from memos import local_wire
from memos.client import MemosClient
from memos.client_local import LocalChannel, NoLocalSocket, Sent
from memos.cube import Kind, MemCube, from_proto, kind_to_proto
from memos.errors import InvalidArgument, MemosError
from memos.v1 import activation_pb2 as pb
from memos.v1 import activation_pb2_grpc as pb_grpc
from memos.v1 import memcube_pb2 as mpb
from memos.v1 import scheduler_pb2 as spb
from memos.v1 import scheduler_pb2_grpc as spb_grpc

__all__ = [
    "ActivationClient",
    "KvLevel",
    "KvStats",
    "LocalChunk",
    "Lookup",
    "Migrated",
    "Stored",
]

M = TypeVar("M", bound=Message)

#: Bytes of a piece message that are not chunk data; the daemon uses the same margin.
PIECE_OVERHEAD = 1024
#: How long a Migrate may take by default: a prefill on CPU takes seconds to minutes.
MIGRATE_TIMEOUT_S = 600.0


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True, slots=True)
class LocalChunk:
    """A fetched chunk that is a file in the daemon's shared directory: read it yourself.

    A dataclass, not a model like the other results: a Lookup or Fetch answers with one per
    block (64 for a 2,048-token prompt), on a vLLM step's path, and the daemon's reply is
    already typed (validating each cost 1.7 us, 0.1 ms a Lookup, measured)."""

    path: str  # relative to the shared directory (join it to your mount of it)
    size: int  # the file's length: the chunk's whole encoding
    hold: str  # Release it once read; the daemon keeps the file until then, or expiry


class Lookup(_Result):
    matched: int  # leading keys stored
    pinned: int  # leading keys pinned under the lease: what a load may count on
    lease_id: str  # "" when nothing was pinned
    lease_ms: int
    # With a shared_dir_id: the files of the leading pinned keys, held under the lease
    # (``hold`` is the lease): read them, then Release the lease (a Fetch leaves them held).
    files: tuple[LocalChunk, ...] = ()


class Stored(_Result):
    received: int
    stored: int
    refused: int  # chunks no level accepted (full or unreachable): not an error
    levels: tuple[int, ...]  # per chunk: how many levels accepted it


class KvLevel(_Result):
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


class KvStats(_Result):
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
    levels: tuple[KvLevel, ...]
    chunk_tokens: int
    none_hash_seed: str
    cache_salt: str
    model_id: str
    model_fingerprint: str
    max_message_bytes: int


class Migrated(_Result):
    cube: MemCube  # the activation cube (to activation) or the plaintext (to plaintext)
    created: bool
    prefilled_chunks: int
    reused_chunks: int
    dropped_chunks: int
    archived: tuple[MemCube, ...]


class ActivationClient:
    """``local_socket``: the daemon's same-host Lookup socket (``memos-lookup.sock`` in its
    shared directory, see ``memos.local_wire``), for ``lookup`` and ``release``: the same
    calls, about half of gRPC's round trip; while nothing answers there, they go over gRPC."""

    def __init__(self, client: MemosClient, *, local_socket: Path | str | None = None) -> None:
        self._client = client
        # The client's channel and metadata: one connection, one identity for every service.
        channel = client.channel
        self._metadata = client.metadata
        self._kv = pb_grpc.ActivationServiceStub(channel)  # type: ignore[no-untyped-call]
        self._scheduler = spb_grpc.SchedulerServiceStub(channel)  # type: ignore[no-untyped-call]
        self._daemon_limit: int | None = None
        self._local = (
            None
            if local_socket is None
            else LocalChannel(local_socket, client.metadata, client.timeout)
        )

    @property
    def local_calls(self) -> int:
        """Calls answered over the same-host socket."""
        return 0 if self._local is None else self._local.calls

    def _unary(self, kind: int, request: Message, reply_type: type[M]) -> M:
        """Lookup or Release: over the local socket where one answers, else gRPC."""
        if self._local is not None:
            with contextlib.suppress(NoLocalSocket):
                return self._local.call(kind, request, reply_type)
        try:
            reply: M = getattr(self._kv, local_wire.METHODS[kind])(
                request, metadata=self._metadata, timeout=self._client.timeout
            )
        except grpc.RpcError as exc:
            raise self._fail(exc) from exc
        return reply

    def close(self) -> None:
        """Close the local socket's connections (the gRPC channel is the MemosClient's)."""
        if self._local is not None:
            self._local.close()

    def _fail(self, exc: grpc.RpcError) -> MemosError:
        return self._client.error_from_rpc(exc)

    # ------------------------------------------------------------------ chunks

    def lookup(
        self,
        keys: Sequence[bytes],
        *,
        pin: bool = False,
        lease_ms: int = 0,
        cube_ids: Sequence[str] = (),
        hint: str | None = None,
        shared_dir_id: str = "",
    ) -> Lookup:
        """How many leading ``keys`` the daemon holds; ``pin`` pins them under a lease.

        ``cube_ids`` (the memories the keyed prompt holds) count as reads of those cubes for
        the tier manager, with ``hint`` ("reuse", "done" or None) as the client's bit.
        ``shared_dir_id`` (see :meth:`iter_fetch_shared`), with ``pin``: the answer's ``files``
        name the leading pinned chunks that are files in the shared directory.
        """
        request = _lookup_request(keys, pin, lease_ms, cube_ids, hint, shared_dir_id)
        return _lookup_answer(self._unary(local_wire.LOOKUP, request, pb.KvLookupResponse))

    def send_lookup(
        self,
        keys: Sequence[bytes],
        *,
        pin: bool = False,
        lease_ms: int = 0,
        cube_ids: Sequence[str] = (),
        hint: str | None = None,
        shared_dir_id: str = "",
    ) -> SentLookup:
        """:meth:`lookup` over the same-host socket, answer read later (``SentLookup.result``)
        on any thread; NoLocalSocket when nothing answers there (then use :meth:`lookup`)."""
        if self._local is None:
            raise NoLocalSocket("this client has no same-host socket")
        request = _lookup_request(keys, pin, lease_ms, cube_ids, hint, shared_dir_id)
        return SentLookup(self._local.send(local_wire.LOOKUP, request, pb.KvLookupResponse))

    def send_release(self, lease_id: str) -> Sent[pb.KvReleaseResponse]:
        """:meth:`release` over the same-host socket, its reply read later (or abandoned: the
        release is done either way once the daemon has read it); NoLocalSocket as above."""
        if self._local is None:
            raise NoLocalSocket("this client has no same-host socket")
        request = pb.KvReleaseRequest(lease_id=lease_id)
        return self._local.send(local_wire.RELEASE, request, pb.KvReleaseResponse)

    def iter_fetch(
        self, keys: Sequence[bytes], *, lease_id: str = "", max_piece_bytes: int = 0
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, chunk bytes) of the longest stored prefix of ``keys``, as each completes."""
        request = pb.KvFetchRequest(
            keys=list(keys), lease_id=lease_id, max_piece_bytes=max_piece_bytes
        )
        pieces = self._fetch(request, keys)
        try:
            for key, item in pieces:
                if isinstance(item, LocalChunk):  # never without a shared_dir_id
                    raise InvalidArgument("the daemon named a file where bytes were asked for")
                yield key, item
        finally:
            pieces.close()  # ends the call at once when the caller stops early

    def iter_fetch_shared(
        self,
        keys: Sequence[bytes],
        *,
        shared_dir_id: str,
        lease_id: str = "",
        recheck: bool = False,
        max_piece_bytes: int = 0,
    ) -> Iterator[tuple[bytes, bytes | LocalChunk]]:
        """:meth:`iter_fetch` from a daemon on this host: chunks the daemon can put in its
        shared directory come as :class:`LocalChunk` (the file's name, relative to it), the
        rest as bytes. ``shared_dir_id`` is what this host's mount of the directory holds
        (``memos.tiers.activation.shared.read_shared_id``); another id gets bytes only.
        ``recheck`` tells the daemon the files of ``keys`` were unusable (it verifies them).
        Release every hold the chunks name once their files are read."""
        request = pb.KvFetchRequest(
            keys=list(keys),
            lease_id=lease_id,
            max_piece_bytes=max_piece_bytes,
            shared_dir_id=shared_dir_id,
            shared_recheck=recheck,
        )
        yield from self._fetch(request, keys)

    def _fetch(
        self, request: pb.KvFetchRequest, keys: Sequence[bytes]
    ) -> Generator[tuple[bytes, bytes | LocalChunk], None, None]:
        call = self._kv.Fetch(request, metadata=self._metadata, timeout=self._client.timeout)
        expected_index = 0
        key = b""
        size = received = 0
        parts: list[bytes] = []
        try:
            for piece in call:
                if piece.key:
                    if expected_index >= len(keys):
                        raise InvalidArgument("the daemon sent more chunks than were asked for")
                    if key:
                        yield _complete(key, parts, received, size)
                    if piece.index != expected_index or piece.key != keys[expected_index]:
                        raise InvalidArgument("the daemon sent a chunk out of order")
                    expected_index += 1
                    if piece.local_path:
                        key = b""
                        yield (
                            bytes(piece.key),
                            LocalChunk(
                                path=piece.local_path, size=piece.chunk_bytes, hold=piece.local_hold
                            ),
                        )
                        continue
                    key, size, received, parts = bytes(piece.key), piece.chunk_bytes, 0, []
                if piece.offset != received:
                    raise InvalidArgument("the daemon sent a piece out of order")
                parts.append(piece.data)
                received += len(piece.data)
        except grpc.RpcError as exc:
            raise self._fail(exc) from exc
        if key:
            yield _complete(key, parts, received, size)

    def fetch(
        self, keys: Sequence[bytes], *, lease_id: str = "", max_piece_bytes: int = 0
    ) -> list[bytes]:
        """The encoded chunks of the longest stored prefix of ``keys``, in order."""
        return [
            blob
            for _, blob in self.iter_fetch(keys, lease_id=lease_id, max_piece_bytes=max_piece_bytes)
        ]

    def store(
        self, chunks: Iterable[tuple[bytes, bytes]], *, piece_bytes: int | None = None
    ) -> Stored:
        """Send (key, encoded chunk) pairs in one call: all stored, or none (a corrupt one
        raises InvalidArgument). ``piece_bytes`` defaults to what both sides' limits allow."""
        size = piece_bytes or self._piece_bytes()
        try:
            r = self._kv.Store(
                _pieces(chunks, size), metadata=self._metadata, timeout=self._client.timeout
            )
        except grpc.RpcError as exc:
            raise self._fail(exc) from exc
        return Stored(
            received=r.received, stored=r.stored, refused=r.refused, levels=tuple(r.levels)
        )

    def release(self, lease_id: str) -> bool:
        """Unpin a lease's chunks (a Fetch naming the lease does it by itself)."""
        r = self._unary(
            local_wire.RELEASE, pb.KvReleaseRequest(lease_id=lease_id), pb.KvReleaseResponse
        )
        return bool(r.released)

    def stats(self) -> KvStats:
        try:
            r = self._kv.Stats(
                pb.KvStatsRequest(), metadata=self._metadata, timeout=self._client.timeout
            )
        except grpc.RpcError as exc:
            raise self._fail(exc) from exc
        self._daemon_limit = r.max_message_bytes or None
        return _stats(r)

    def _piece_bytes(self) -> int:
        limit = self._client.max_message_bytes
        if self._daemon_limit is None:
            # A token without the read scope gets no stats: the client's own limit must do.
            with contextlib.suppress(MemosError):
                self.stats()
        if self._daemon_limit is not None:
            limit = min(limit, self._daemon_limit)
        return max(1, limit - PIECE_OVERHEAD)

    # ------------------------------------------------------------------ migration

    def migrate(
        self,
        id: str,
        *,
        to: Kind | str = Kind.ACTIVATION,
        engine: str = "",
        engine_url: str = "",
        timeout: float | None = MIGRATE_TIMEOUT_S,
    ) -> Migrated:
        """Promote a plaintext cube to a stored KV cache (``to="activation"``) or demote it
        (``to="plaintext"``). Promotion is idempotent while the chunks stay stored."""
        try:
            target = Kind(to)
        except ValueError:
            raise InvalidArgument(
                f"cannot migrate to {to!r}: use activation or plaintext"
            ) from None
        request = spb.MigrateRequest(
            id=id, to=kind_to_proto(target), engine=engine, engine_url=engine_url
        )
        try:
            r = self._scheduler.Migrate(request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise self._fail(exc) from exc
        return Migrated(
            cube=from_proto(r.cube),
            created=r.created,
            prefilled_chunks=r.prefilled_chunks,
            reused_chunks=r.reused_chunks,
            dropped_chunks=r.dropped_chunks,
            archived=tuple(from_proto(c) for c in r.archived),
        )


def _lookup_hint(value: str | None) -> mpb.Hint:
    hints = {None: mpb.HINT_UNSPECIFIED, "reuse": mpb.HINT_REUSE, "done": mpb.HINT_DONE}
    if value not in hints:
        raise InvalidArgument(f"hint must be 'reuse', 'done' or None, not {value!r}")
    return hints[value]


def _complete(key: bytes, parts: list[bytes], received: int, size: int) -> tuple[bytes, bytes]:
    if received != size:
        raise InvalidArgument(f"a chunk arrived with {received} of its {size} bytes")
    # One piece: its bytes are the chunk, no copy.
    return key, parts[0] if len(parts) == 1 else b"".join(parts)


def _pieces(chunks: Iterable[tuple[bytes, bytes]], size: int) -> Iterator[pb.KvChunkPiece]:
    for index, (key, blob) in enumerate(chunks):
        view = memoryview(blob)
        total = view.nbytes
        for offset in range(0, max(total, 1), size):
            fits = offset == 0 and size >= total and isinstance(blob, bytes)
            data = blob if fits else bytes(view[offset : offset + size])
            if offset == 0:
                yield pb.KvChunkPiece(index=index, key=key, chunk_bytes=total, offset=0, data=data)
            else:
                yield pb.KvChunkPiece(index=index, offset=offset, data=data)


def _stats(r: Any) -> KvStats:
    return KvStats(
        lookups=r.lookups,
        lookup_keys=r.lookup_keys,
        lookup_hits=r.lookup_hits,
        fetches=r.fetches,
        fetched_chunks=r.fetched_chunks,
        fetched_bytes=r.fetched_bytes,
        promotions=r.promotions,
        corrupt=r.corrupt,
        stored_chunks=r.stored_chunks,
        rejected_puts=r.rejected_puts,
        leases=r.leases,
        pinned_chunks=r.pinned_chunks,
        levels=tuple(
            KvLevel(
                name=lv.name,
                kind=lv.kind,
                hits=lv.hits,
                misses=lv.misses,
                puts=lv.puts,
                put_failures=lv.put_failures,
                evictions=lv.evictions,
                errors=lv.errors,
                corrupt=lv.corrupt,
                bytes_read=lv.bytes_read,
                bytes_written=lv.bytes_written,
                items=lv.items,
                used_bytes=lv.used_bytes,
                budget_bytes=lv.budget_bytes,
                available=lv.available,
            )
            for lv in r.levels
        ),
        chunk_tokens=r.chunk_tokens,
        none_hash_seed=r.none_hash_seed,
        cache_salt=r.cache_salt,
        model_id=r.model_id,
        model_fingerprint=r.model_fingerprint,
        max_message_bytes=r.max_message_bytes,
    )


class SentLookup:
    """A Lookup sent on the same-host socket (:meth:`ActivationClient.send_lookup`)."""

    def __init__(self, sent: Sent[pb.KvLookupResponse]) -> None:
        self._sent = sent

    def ready(self) -> bool:
        return self._sent.ready()

    def result(self, timeout: float | None) -> Lookup:
        """The answer, waiting up to ``timeout`` seconds (TimeoutError: still pending)."""
        return _lookup_answer(self._sent.result(timeout))

    def abandon(self) -> None:
        self._sent.abandon()


def _lookup_request(
    keys: Sequence[bytes],
    pin: bool,
    lease_ms: int,
    cube_ids: Sequence[str],
    hint: str | None,
    shared_dir_id: str,
) -> pb.KvLookupRequest:
    return pb.KvLookupRequest(
        keys=list(keys),
        pin=pin,
        lease_ms=lease_ms,
        cube_ids=list(cube_ids),
        hint=_lookup_hint(hint) if cube_ids else mpb.HINT_UNSPECIFIED,
        shared_dir_id=shared_dir_id,
    )


def _lookup_answer(r: pb.KvLookupResponse) -> Lookup:
    if len(r.local_paths) != len(r.local_sizes) or len(r.local_paths) > r.pinned:
        raise InvalidArgument("the daemon named files that do not match its pinned keys")
    files = tuple(
        LocalChunk(path=path, size=size, hold=r.lease_id)
        for path, size in zip(r.local_paths, r.local_sizes, strict=True)
    )
    return Lookup(
        matched=r.matched,
        pinned=r.pinned,
        lease_id=r.lease_id,
        lease_ms=r.lease_ms,
        files=files,
    )
