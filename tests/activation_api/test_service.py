"""ActivationService over real gRPC: exact round trips, message limits, validation, tenancy,
pins, and a Redis outage that never becomes an error."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from memos.client import MemosClient
from memos.client_activation import ActivationClient
from memos.errors import InvalidArgument, PermissionDenied, ResourceExhausted
from memos.tiers.activation.chunk import HEADER_BYTES
from memos.tiers.activation.keys import ModelLayout
from memos.v1 import activation_pb2 as pb
from memos.v1 import activation_pb2_grpc as pb_grpc
from tests.activation._chunks import flip_byte, make_chunks
from tests.activation_api.conftest import StartKv
from tests.fixtures.daemon import ServerHandle
from tests.fixtures.redis_server import RedisServer

Connect = Callable[[ServerHandle, str], tuple[MemosClient, ActivationClient]]

CHUNKS = make_chunks(5)
KEYS = [k for k, _ in CHUNKS]
#: 256 KiB chunks: several pieces each under a 64 KiB message limit.
BIG = ModelLayout("toy-big", "float32", chunk_tokens=64, layers=4, kv_heads=4, head_dim=32)
SMALL_LIMIT = 64 * 1024


def metadata(handle: ServerHandle, who: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {handle.tokens[who]}")]


def test_store_lookup_fetch_round_trip_bytes_exactly(
    kv_server: ServerHandle, connect: Connect
) -> None:
    _, kv = connect(kv_server, "acme")
    stored = kv.store(CHUNKS[:3])
    assert (stored.received, stored.stored, stored.refused) == (3, 3, 0)
    assert all(n >= 2 for n in stored.levels), "written through RAM and disk"
    assert kv.lookup(KEYS).matched == 3
    assert kv.fetch(KEYS) == [blob for _, blob in CHUNKS[:3]]
    assert kv.fetch(KEYS[3:]) == []
    assert kv.fetch([]) == []
    stats = kv.stats()
    assert stats.stored_chunks == 3 and stats.fetched_chunks == 3
    assert {lv.kind for lv in stats.levels} == {"ram", "disk"}
    assert stats.chunk_tokens == 16 and stats.cache_salt == "memos-tenant:acme"


def test_chunks_larger_than_the_message_limit_travel_in_pieces(
    start_kv: StartKv, connect: Connect
) -> None:
    handle = start_kv(limits={"max_message_bytes": SMALL_LIMIT})
    chunks = make_chunks(3, layout=BIG, seed=7)
    assert all(len(blob) > 4 * SMALL_LIMIT for _, blob in chunks)
    _, kv = connect(handle, "acme")
    assert kv.store(chunks).stored == 3  # the client learns the daemon's limit from Stats
    keys = [k for k, _ in chunks]
    assert kv.fetch(keys) == [blob for _, blob in chunks]

    with grpc.insecure_channel(handle.addr) as channel:
        stub = pb_grpc.ActivationServiceStub(channel)  # type: ignore[no-untyped-call]
        messages = list(stub.Fetch(pb.KvFetchRequest(keys=keys), metadata=metadata(handle, "acme")))
        assert len(messages) >= 3 * 5
        assert max(m.ByteSize() for m in messages) <= SMALL_LIMIT
        # The limit is real: one chunk in one message is refused.
        key, blob = chunks[0]
        whole = pb.KvChunkPiece(key=key, chunk_bytes=len(blob), data=blob)
        with pytest.raises(grpc.RpcError) as info:
            stub.Store(iter([whole]), metadata=metadata(handle, "acme"))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A client asking for smaller pieces gets them, and the same bytes.
    assert kv.fetch(keys, max_piece_bytes=10_000) == [blob for _, blob in chunks]


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: flip_byte(blob, HEADER_BYTES + 5),  # payload: checksum mismatch
        lambda blob: flip_byte(blob, 0),  # magic
        lambda blob: blob[:-4],  # truncated
    ],
    ids=["payload", "magic", "truncated"],
)
def test_a_corrupt_chunk_fails_the_store_and_stores_nothing(
    kv_server: ServerHandle, connect: Connect, damage: Callable[[bytes], bytes]
) -> None:
    _, kv = connect(kv_server, "acme")
    bad = [CHUNKS[0], CHUNKS[1], (KEYS[2], damage(CHUNKS[2][1])), CHUNKS[3]]
    with pytest.raises(InvalidArgument, match=r"chunk 2 .*corrupt.*nothing of this call"):
        kv.store(bad)
    assert kv.lookup(KEYS).matched == 0
    assert kv.stats().stored_chunks == 0


def test_a_chunk_under_another_key_is_corrupt(kv_server: ServerHandle, connect: Connect) -> None:
    _, kv = connect(kv_server, "acme")
    with pytest.raises(InvalidArgument, match="different key"):
        kv.store([(KEYS[1], CHUNKS[0][1])])
    assert kv.lookup(KEYS[1:]).matched == 0


def test_malformed_streams_and_keys_are_invalid(kv_server: ServerHandle, connect: Connect) -> None:
    key, blob = CHUNKS[0]
    streams = {
        "gap": [
            pb.KvChunkPiece(key=key, chunk_bytes=len(blob), data=blob[:100]),
            pb.KvChunkPiece(offset=200, data=blob[200:]),
        ],
        "incomplete": [pb.KvChunkPiece(key=key, chunk_bytes=len(blob), data=blob[:100])],
        "headless": [pb.KvChunkPiece(offset=0, data=blob)],
        "short key": [pb.KvChunkPiece(key=key[:40], chunk_bytes=len(blob), data=blob)],
    }
    with grpc.insecure_channel(kv_server.addr) as channel:
        stub = pb_grpc.ActivationServiceStub(channel)  # type: ignore[no-untyped-call]
        for name, stream in streams.items():
            with pytest.raises(grpc.RpcError) as info:
                stub.Store(iter(stream), metadata=metadata(kv_server, "acme"))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
    _, kv = connect(kv_server, "acme")
    assert kv.lookup([key]).matched == 0
    with pytest.raises(InvalidArgument, match="48 bytes"):
        kv.lookup([key, b"short"])


def test_tenants_never_share_chunks(kv_server: ServerHandle, connect: Connect) -> None:
    _, acme = connect(kv_server, "acme")
    _, globex = connect(kv_server, "globex")
    acme.store(CHUNKS[:3])
    assert globex.lookup(KEYS).matched == 0
    assert globex.lookup(KEYS, pin=True).lease_id == ""
    assert globex.fetch(KEYS) == []
    # The same keys with other bytes in globex's namespace leave acme's chunks alone.
    other = make_chunks(5, seed=99)
    forged = [(key, blob) for (key, _), (_, blob) in zip(CHUNKS[:1], other[:1], strict=True)]
    with pytest.raises(InvalidArgument):
        globex.store(forged)  # another key in the header: rejected
    assert globex.store(CHUNKS[:1]).stored == 1
    assert globex.lookup(KEYS).matched == 1
    assert acme.fetch(KEYS) == [blob for _, blob in CHUNKS[:3]]
    assert globex.stats().cache_salt != acme.stats().cache_salt


def test_scopes(kv_server: ServerHandle, connect: Connect) -> None:
    _, writer = connect(kv_server, "acme")
    _, reader = connect(kv_server, "reader")  # acme, read only
    writer.store(CHUNKS[:2])
    assert reader.lookup(KEYS).matched == 2
    assert reader.fetch(KEYS) == [blob for _, blob in CHUNKS[:2]]
    with pytest.raises(PermissionDenied, match="write"):
        reader.store(CHUNKS[2:3])
    with grpc.insecure_channel(kv_server.addr) as channel:
        stub = pb_grpc.ActivationServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as info:
            stub.Lookup(pb.KvLookupRequest(keys=KEYS))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_pinned_lookup_holds_chunks_in_ram_until_fetched(
    start_kv: StartKv, connect: Connect
) -> None:
    chunk_bytes = len(CHUNKS[0][1])
    handle = start_kv(activation={"ram_budget_bytes": 3 * chunk_bytes})
    _, acme = connect(handle, "acme")
    _, globex = connect(handle, "globex")
    acme.store(CHUNKS[:3])
    found = acme.lookup(KEYS, pin=True)
    assert (found.matched, found.pinned) == (3, 3) and found.lease_id and found.lease_ms == 30_000
    assert acme.stats().pinned_chunks == 3
    # RAM is full of pinned chunks: later writes go to disk, nothing pinned is evicted.
    later = make_chunks(3, seed=5)
    assert all(n == 1 for n in acme.store(later).levels)
    ram = next(lv for lv in acme.stats().levels if lv.kind == "ram")
    assert ram.evictions == 0 and ram.put_failures == 3
    assert not globex.release(found.lease_id), "another tenant's lease"
    assert acme.fetch(KEYS, lease_id=found.lease_id) == [blob for _, blob in CHUNKS[:3]]
    assert acme.stats().leases == 0, "the fetch released the lease"
    assert not acme.release(found.lease_id)
    # Unpinned, the old chunks make room for new ones again.
    acme.store(later)
    assert next(lv for lv in acme.stats().levels if lv.kind == "ram").evictions >= 1


def test_a_lease_expires_by_itself(kv_server: ServerHandle, connect: Connect) -> None:
    _, kv = connect(kv_server, "acme")
    kv.store(CHUNKS[:2])
    lease = kv.lookup(KEYS, pin=True, lease_ms=50)
    assert lease.pinned == 2 and lease.lease_ms == 50
    time.sleep(0.2)
    assert kv.stats().leases == 0
    with pytest.raises(InvalidArgument, match="max_pin_lease_s"):
        kv.lookup(KEYS, pin=True, lease_ms=3_600_000)


def test_a_store_call_over_its_byte_cap_is_refused_before_buffering(
    start_kv: StartKv, connect: Connect
) -> None:
    handle = start_kv(activation={"max_store_call_bytes": 2 * len(CHUNKS[0][1])})
    _, kv = connect(handle, "acme")
    with pytest.raises(ResourceExhausted, match="split it"):
        kv.store(CHUNKS[:3])
    assert kv.lookup(KEYS).matched == 0


def test_redis_down_is_a_miss_and_a_refused_write_never_an_error(
    start_kv: StartKv, connect: Connect, fresh_redis_server: RedisServer
) -> None:
    handle = start_kv(
        redis_url=fresh_redis_server.url,
        activation={
            "ram_budget_bytes": 0,
            "disk_budget_bytes": 0,
            "redis_retry_after_s": 0.05,
            "redis_connect_timeout_s": 0.2,
        },
    )
    _, kv = connect(handle, "acme")
    assert kv.store(CHUNKS[:2]).stored == 2
    fresh_redis_server.stop()
    assert kv.lookup(KEYS).matched == 0
    assert kv.lookup(KEYS, pin=True).pinned == 0
    assert kv.fetch(KEYS) == []
    refused = kv.store(CHUNKS[2:4])
    assert (refused.received, refused.stored, refused.refused) == (2, 0, 2)
    redis_level = kv.stats().levels[0]
    assert redis_level.kind == "redis" and not redis_level.available
    fresh_redis_server.start()
    time.sleep(0.1)  # past the level's back-off
    assert kv.store(CHUNKS[:2]).stored == 2
    assert kv.fetch(KEYS) == [blob for _, blob in CHUNKS[:2]]


def test_a_fetch_cancelled_mid_stream_releases_its_lease(
    start_kv: StartKv, connect: Connect
) -> None:
    handle = start_kv(limits={"max_message_bytes": SMALL_LIMIT})
    # 6 MiB: more than gRPC's flow-control windows, so the stream is cut mid-way.
    chunks = make_chunks(24, layout=BIG, seed=3)
    keys = [k for k, _ in chunks]
    _, kv = connect(handle, "acme")
    kv.store(chunks)
    lease = kv.lookup(keys, pin=True)
    assert lease.pinned == 24
    with grpc.insecure_channel(handle.addr) as channel:
        stub = pb_grpc.ActivationServiceStub(channel)  # type: ignore[no-untyped-call]
        call = stub.Fetch(
            pb.KvFetchRequest(keys=keys, lease_id=lease.lease_id),
            metadata=metadata(handle, "acme"),
        )
        assert next(call).key == keys[0]
        call.cancel()
    deadline = time.monotonic() + 10
    while kv.stats().leases and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = kv.stats()
    assert stats.leases == 0
    assert stats.fetched_chunks < 24, "the stream was cut before its end"
