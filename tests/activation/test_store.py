"""The multi-level store: prefix lookups, promotion, write-through, validation at the door."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import xxhash

from memos.tiers.activation.chunk import HEADER_BYTES
from memos.tiers.activation.errors import CorruptChunk
from memos.tiers.activation.keys import ModelLayout
from memos.tiers.activation.levels import DiskLevel, RamLevel, RedisLevel
from memos.tiers.activation.store import ActivationStore
from tests.activation._chunks import LAYOUT, flip_byte, make_chunks

CHUNKS = make_chunks(5)
KEYS = [k for k, _ in CHUNKS]


def three_levels(tmp_path: Path, redis_url: str) -> ActivationStore:
    return ActivationStore(
        [RamLevel(1 << 20), DiskLevel(tmp_path / "disk", 1 << 20), RedisLevel(redis_url)]
    )


def test_lookup_counts_the_leading_run_across_levels(tmp_path: Path, redis_url: str) -> None:
    store = three_levels(tmp_path, redis_url)
    ram, disk, redis_level = store.levels
    redis_level.put(*CHUNKS[0])
    ram.put(*CHUNKS[1])
    disk.put(*CHUNKS[2])
    ram.put(*CHUNKS[4])  # after the hole at 3: useless for a prefix
    assert store.lookup(KEYS) == 3
    assert store.lookup(KEYS[3:]) == 0
    assert store.lookup([]) == 0
    chunks = store.fetch(KEYS)
    assert [c.key for c in chunks] == KEYS[:3]
    stats = store.stats()
    assert (stats.lookups, stats.lookup_keys, stats.lookup_hits) == (3, 7, 3)
    assert stats.fetched_chunks == 3


def test_lower_level_hits_are_promoted(tmp_path: Path, redis_url: str) -> None:
    store = three_levels(tmp_path, redis_url)
    ram, disk, redis_level = store.levels
    disk.put(*CHUNKS[0])
    redis_level.put(*CHUNKS[1])
    assert [c.key for c in store.fetch(KEYS[:2])] == KEYS[:2]
    assert ram.contains_many(KEYS[:2]) == [True, True]
    assert disk.contains_many(KEYS[1:2]) == [True], "Redis hit promoted to disk too"
    assert store.stats().promotions == 3
    before = disk.stats().hits, redis_level.stats().hits
    store.fetch(KEYS[:2])
    assert (disk.stats().hits, redis_level.stats().hits) == before, "served from RAM now"
    assert ram.stats().hits == 2


def test_no_promotion_when_disabled(tmp_path: Path) -> None:
    ram, disk = RamLevel(1 << 20), DiskLevel(tmp_path, 1 << 20)
    store = ActivationStore([ram, disk], promote=False)
    disk.put(*CHUNKS[0])
    assert len(store.fetch(KEYS[:1])) == 1
    assert ram.contains_many(KEYS[:1]) == [False]


def test_writes_go_through_to_the_chosen_levels(tmp_path: Path, redis_url: str) -> None:
    store = three_levels(tmp_path, redis_url)
    assert store.put_many(CHUNKS[:2]) == [3, 3]
    for level in store.levels:
        assert level.contains_many(KEYS[:2]) == [True, True], level.name
    only_shared = ActivationStore(
        [RamLevel(1 << 20), RedisLevel(redis_url)], write_levels=["redis"]
    )
    assert only_shared.put(*CHUNKS[2]) == 1
    assert only_shared.levels[0].contains_many(KEYS[2:3]) == [False]
    with pytest.raises(ValueError, match="unknown"):
        ActivationStore([RamLevel(1)], write_levels=["nope"])


def test_put_rejects_bad_bytes_before_any_level_sees_them(tmp_path: Path) -> None:
    ram = RamLevel(1 << 20)
    store = ActivationStore([ram])
    key, blob = CHUNKS[0]
    with pytest.raises(CorruptChunk):
        store.put(key, flip_byte(blob, 200))
    with pytest.raises(CorruptChunk):
        store.put(KEYS[1], blob)
    with pytest.raises(CorruptChunk):
        store.put(key[:10], blob)
    assert ram.stats().items == 0


def test_a_header_that_disagrees_with_the_layout_is_never_injected() -> None:
    ram = RamLevel(1 << 20)
    store = ActivationStore([ram])
    key, blob = CHUNKS[0]
    # A well-formed chunk whose header claims another chunk size, checksum made consistent.
    forged = bytearray(blob)
    struct.pack_into("<I", forged, 24, LAYOUT.chunk_tokens + 1)
    digest = xxhash.xxh3_64(bytes(forged[:112]))
    digest.update(bytes(forged[HEADER_BYTES:]))
    struct.pack_into("<Q", forged, 112, digest.intdigest())
    store.put(key, bytes(forged))  # valid on its own terms
    assert store.fetch([key], layout=LAYOUT) == []
    assert store.stats().corrupt == 1
    assert ram.contains_many([key]) == [False]


def test_keys_of_another_layout_are_a_caller_error() -> None:
    store = ActivationStore([RamLevel(1 << 20)])
    store.put_many(CHUNKS[:2])
    other = ModelLayout(LAYOUT.model_id, LAYOUT.dtype, 8, LAYOUT.layers, 4, LAYOUT.head_dim)
    with pytest.raises(ValueError, match="layout"):
        store.fetch(KEYS[:2], layout=other)
    assert len(store.fetch(KEYS[:2], layout=LAYOUT)) == 2, "nothing was dropped"


def test_drop_removes_from_every_level(tmp_path: Path, redis_url: str) -> None:
    store = three_levels(tmp_path, redis_url)
    store.put_many(CHUNKS)
    assert store.drop(KEYS[:2]) == 6
    assert store.lookup(KEYS) == 0
    assert store.lookup(KEYS[2:]) == 3


def test_fetch_raw_gives_wire_bytes() -> None:
    store = ActivationStore([RamLevel(1 << 20)])
    store.put_many(CHUNKS[:3])
    assert store.fetch_raw(KEYS) == [b for _, b in CHUNKS[:3]]


def test_store_needs_distinct_levels() -> None:
    with pytest.raises(ValueError):
        ActivationStore([])
    with pytest.raises(ValueError, match="unique"):
        ActivationStore([RamLevel(10), RamLevel(10)])
