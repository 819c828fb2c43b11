"""ActivationService: KV chunks over gRPC, translated onto the activation tier's calls.

Chunks travel as raw bytes, cut into pieces so that every message stays under the daemon's
message limit (``limits.max_message_bytes``) whatever the chunk's size; Store reassembles the
pieces and hands complete chunks to the tier, which validates them all before storing any.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import grpc

from memos.api.auth import Authenticator
from memos.api.status import streaming, unary
from memos.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from memos.kernel import MemoryOS, Principal
from memos.manager import Hint
from memos.tiers.activation.keys import KEY_BYTES
from memos.tiers.activation.tier import ActivationTier, SharedChunk, count_kv_reads
from memos.v1 import activation_pb2 as pb
from memos.v1 import activation_pb2_grpc as pb_grpc
from memos.v1 import memcube_pb2 as mpb

#: Bytes of a message that are not chunk data (index, key, sizes, offset, field tags): far
#: less than this, which keeps every piece under the limit with room to spare.
PIECE_OVERHEAD = 1024


def piece_bytes(max_message_bytes: int, asked: int = 0) -> int:
    """The chunk bytes one message carries under ``max_message_bytes``."""
    room = max(1, max_message_bytes - PIECE_OVERHEAD)
    return min(room, asked) if asked > 0 else room


def pieces(index: int, key: bytes, raw: memoryview | bytes, size: int) -> Iterator[pb.KvChunkPiece]:
    """One chunk's pieces, in order; the first carries its key and size."""
    view = memoryview(raw)
    total = view.nbytes
    whole = view.obj if isinstance(view.obj, bytes) and len(view.obj) == total else None
    for offset in range(0, total, size):
        # A chunk that fits one message goes out as the stored bytes object, uncopied.
        data = whole if whole is not None and size >= total else bytes(view[offset : offset + size])
        if offset == 0:
            yield pb.KvChunkPiece(index=index, key=key, chunk_bytes=total, offset=0, data=data)
        else:
            yield pb.KvChunkPiece(index=index, offset=offset, data=data)


def reassemble(
    messages: Iterable[pb.KvChunkPiece], max_total_bytes: int
) -> list[tuple[bytes, bytes]]:
    """Whole chunks (key, bytes) from a stream of pieces; INVALID_ARGUMENT on a gap or an
    incomplete chunk, RESOURCE_EXHAUSTED over ``max_total_bytes`` (checked before buffering)."""
    chunks: list[tuple[bytes, bytes]] = []
    key: bytes | None = None
    expected = total = 0
    buffer = bytearray()

    def finish() -> None:
        if key is not None:
            if len(buffer) != expected:
                raise InvalidArgument(
                    f"chunk {len(chunks)} is incomplete: {len(buffer)} of {expected} bytes "
                    "arrived; nothing of this call was stored"
                )
            chunks.append((key, bytes(buffer)))

    for message in messages:
        if message.key:
            finish()
            if len(message.key) != KEY_BYTES:
                raise InvalidArgument(
                    f"chunk {len(chunks)}: a key has {KEY_BYTES} bytes, got {len(message.key)}"
                )
            if message.offset != 0 or message.chunk_bytes == 0:
                raise InvalidArgument(
                    f"chunk {len(chunks)}: its first piece must carry offset 0 and chunk_bytes"
                )
            total += message.chunk_bytes
            if total > max_total_bytes:
                raise ResourceExhausted(
                    f"this Store call sends over {max_total_bytes} bytes "
                    "(activation.max_store_call_bytes): split it into several calls"
                )
            key, expected, buffer = bytes(message.key), message.chunk_bytes, bytearray()
        elif key is None:
            raise InvalidArgument("the first piece of a Store call must carry its chunk's key")
        if message.offset != len(buffer):
            raise InvalidArgument(
                f"chunk {len(chunks)}: a piece at offset {message.offset}, expected "
                f"{len(buffer)}: pieces must arrive in order"
            )
        if len(buffer) + len(message.data) > expected:
            raise InvalidArgument(
                f"chunk {len(chunks)}: pieces hold more than its {expected} bytes"
            )
        buffer += message.data
    finish()
    return chunks


_HINTS: dict[int, Hint | None] = {
    mpb.HINT_UNSPECIFIED: None,
    mpb.HINT_REUSE: Hint.REUSE,
    mpb.HINT_DONE: Hint.DONE,
}


def _hint(value: int) -> Hint | None:
    if value not in _HINTS:
        raise InvalidArgument(f"unknown hint value {value}: use REUSE or DONE, or leave it unset")
    return _HINTS[value]


class ActivationServicer(pb_grpc.ActivationServiceServicer):
    def __init__(
        self, kernel: Callable[[], MemoryOS], auth: Authenticator, *, max_message_bytes: int
    ) -> None:
        # ``kernel`` is a getter: the server answers (UNAVAILABLE) while the stores open.
        self._kernel = kernel
        self._auth = auth
        self._max_message_bytes = max_message_bytes

    def _enter(self, context: grpc.ServicerContext) -> tuple[ActivationTier, Principal]:
        principal = self._auth.authenticate(context.invocation_metadata())
        try:
            kernel = self._kernel()
        except LookupError:
            raise Unavailable("the daemon is starting: its stores are not open yet") from None
        if kernel.activation is None:
            raise FailedPrecondition("this daemon has no activation tier open")
        return kernel.activation, principal

    @unary
    def Lookup(
        self, request: pb.KvLookupRequest, context: grpc.ServicerContext
    ) -> pb.KvLookupResponse:
        tier, who = self._enter(context)
        if request.cube_ids:
            # Before the lookup: a malformed id must not leave a lease behind.
            kernel = self._kernel()
            if kernel.manager is not None:
                count_kv_reads(
                    kernel.manager,
                    kernel.plaintext,
                    who,
                    list(request.cube_ids),
                    _hint(request.hint),
                )
        result = tier.lookup(
            who,
            list(request.keys),
            pin=request.pin,
            lease_seconds=request.lease_ms / 1000 if request.lease_ms else None,
            shared_id=request.shared_dir_id,
        )
        return pb.KvLookupResponse(
            matched=result.matched,
            pinned=result.pinned,
            lease_id=result.lease_id,
            lease_ms=round(result.lease_seconds * 1000),
            local_paths=[f.path for f in result.files],
            local_sizes=[f.size for f in result.files],
        )

    @streaming
    def Fetch(
        self, request: pb.KvFetchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.KvChunkPiece]:
        tier, who = self._enter(context)
        keys = list(request.keys)
        size = piece_bytes(self._max_message_bytes, request.max_piece_bytes)
        if not (request.shared_dir_id or request.shared_recheck):
            chunks = tier.fetch(who, keys, lease_id=request.lease_id)
            try:
                for index, chunk in enumerate(chunks):
                    yield from pieces(index, keys[index], chunk.raw, size)
            finally:
                chunks.close()  # releases the lease even when the client goes away mid-stream
            return
        items, hold = tier.fetch_shared(
            who,
            keys,
            shared_id=request.shared_dir_id,
            lease_id=request.lease_id,
            recheck=request.shared_recheck,
        )
        try:
            for index, item in enumerate(items):
                if isinstance(item, SharedChunk):
                    yield pb.KvChunkPiece(
                        index=index,
                        key=item.key,
                        chunk_bytes=item.size,
                        local_path=item.path,
                        local_hold=hold,
                    )
                else:
                    yield from pieces(index, keys[index], item.raw, size)
        finally:
            items.close()

    @unary
    def Store(
        self, request_iterator: Iterator[pb.KvChunkPiece], context: grpc.ServicerContext
    ) -> pb.KvStoreResponse:
        tier, who = self._enter(context)
        # The scope is checked before a byte is buffered.
        who.require("write")
        items = reassemble(request_iterator, tier.settings.max_store_call_bytes)
        result = tier.put(who, items)
        return pb.KvStoreResponse(
            received=len(items),
            stored=result.stored,
            refused=result.refused,
            levels=list(result.levels),
        )

    @unary
    def Release(
        self, request: pb.KvReleaseRequest, context: grpc.ServicerContext
    ) -> pb.KvReleaseResponse:
        tier, who = self._enter(context)
        return pb.KvReleaseResponse(released=tier.release(who, request.lease_id))

    @unary
    def Stats(
        self, request: pb.KvStatsRequest, context: grpc.ServicerContext
    ) -> pb.KvStatsResponse:
        tier, who = self._enter(context)
        s = tier.stats(who)
        return pb.KvStatsResponse(
            lookups=s.lookups,
            lookup_keys=s.lookup_keys,
            lookup_hits=s.lookup_hits,
            fetches=s.fetches,
            fetched_chunks=s.fetched_chunks,
            fetched_bytes=s.fetched_bytes,
            promotions=s.promotions,
            corrupt=s.corrupt,
            stored_chunks=s.stored_chunks,
            rejected_puts=s.rejected_puts,
            leases=s.leases,
            pinned_chunks=s.pinned_chunks,
            levels=[
                pb.KvLevelStats(
                    name=level.name,
                    kind=level.kind,
                    hits=level.hits,
                    misses=level.misses,
                    puts=level.puts,
                    put_failures=level.put_failures,
                    evictions=level.evictions,
                    errors=level.errors,
                    corrupt=level.corrupt,
                    bytes_read=level.bytes_read,
                    bytes_written=level.bytes_written,
                    items=level.items,
                    used_bytes=level.used_bytes,
                    budget_bytes=level.budget_bytes,
                    available=level.available,
                )
                for level in s.levels
            ],
            chunk_tokens=s.chunk_tokens,
            none_hash_seed=s.none_hash_seed,
            cache_salt=s.cache_salt,
            model_id=s.model_id,
            model_fingerprint=s.model_fingerprint,
            max_message_bytes=self._max_message_bytes,
        )
