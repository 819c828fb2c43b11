"""Each level alone: storage, byte budgets evicted through the scheduler's policy, corruption."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from memos.tiers.activation.levels import DiskLevel, Level, RamLevel, RedisLevel
from memos.tiers.activation.store import ActivationStore
from tests.activation._chunks import flip_byte, make_chunks

CHUNKS = make_chunks(6)
CHUNK_BYTES = len(CHUNKS[0][1])

MakeLevel = Callable[[int], Level]


@pytest.fixture(params=["ram", "disk", "redis"])
def make_level(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeLevel]:
    made: list[Level] = []

    def make(budget: int) -> Level:
        level: Level
        if request.param == "ram":
            level = RamLevel(budget)
        elif request.param == "disk":
            level = DiskLevel(tmp_path / "disk", budget)
        else:
            level = RedisLevel(request.getfixturevalue("redis_url"))
        made.append(level)
        return level

    yield make
    for level in made:
        level.close()


def test_put_get_contains(make_level: MakeLevel) -> None:
    level = make_level(10 * CHUNK_BYTES)
    (k0, b0), (k1, b1), (k2, _) = CHUNKS[:3]
    assert level.put(k0, b0) and level.put(k1, b1)
    assert level.get_many([k0, k2, k1]) == [b0, None, b1]
    assert level.contains_many([k2, k1]) == [False, True]
    stats = level.stats()
    assert (stats.hits, stats.misses, stats.puts) == (2, 1, 2)
    assert stats.bytes_read == 2 * CHUNK_BYTES
    assert stats.available
    assert level.delete(k0)
    assert level.get_many([k0]) == [None]


def test_corrupt_bytes_become_a_counted_miss_at_every_level(make_level: MakeLevel) -> None:
    level = make_level(10 * CHUNK_BYTES)
    store = ActivationStore([level])
    (k0, b0), (k1, b1) = CHUNKS[:2]
    store.put_many([(k0, b0), (k1, b1)])
    # Damage chunk 1 where it rests, as the medium would: RAM by the level's own API, disk in
    # the file, Redis in the server.
    damaged = flip_byte(b1, 300)
    if isinstance(level, DiskLevel):
        path = next(level.root.glob(f"chunks/*/{k1.hex()}.kvc"))
        path.write_bytes(damaged)
    elif isinstance(level, RedisLevel):
        redis.Redis.from_url(level.url).set(b"memos:kv:" + k1, damaged, px=60_000)
    else:
        level.put(k1, damaged)
    chunks = store.fetch([k0, k1])
    assert [c.key for c in chunks] == [k0]
    assert store.stats().corrupt == 1
    assert level.stats().corrupt == 1
    assert level.contains_many([k1]) == [False], "a corrupt chunk must be dropped"
    # A good copy is accepted again afterwards.
    store.put(k1, b1)
    assert [c.key for c in store.fetch([k0, k1])] == [k0, k1]


@pytest.mark.parametrize("kind", ["ram", "disk"])
def test_byte_budget_evicts_least_recently_used(kind: str, tmp_path: Path) -> None:
    budget = 3 * CHUNK_BYTES
    level: Level = RamLevel(budget) if kind == "ram" else DiskLevel(tmp_path, budget)
    (a, ba), (b, bb), (c, bc), (d, bd) = CHUNKS[:4]
    for key, blob in ((a, ba), (b, bb), (c, bc)):
        assert level.put(key, blob)
    assert level.get_many([a]) == [ba]  # a is now more recent than b
    assert level.put(d, bd)
    assert level.contains_many([a, b, c, d]) == [True, False, True, True]
    stats = level.stats()
    assert stats.evictions == 1
    assert stats.used_bytes == 3 * CHUNK_BYTES <= stats.budget_bytes
    if isinstance(level, DiskLevel):
        assert len(list(tmp_path.glob("chunks/*/*.kvc"))) == 3


@pytest.mark.parametrize("kind", ["ram", "disk"])
def test_chunk_larger_than_budget_is_refused(kind: str, tmp_path: Path) -> None:
    level: Level = RamLevel(CHUNK_BYTES - 1) if kind == "ram" else DiskLevel(tmp_path, 100)
    key, blob = CHUNKS[0]
    assert level.put(key, blob) is False
    assert level.get_many([key]) == [None]
    assert level.stats().put_failures == 1


def test_ram_pins_hold_against_eviction() -> None:
    level = RamLevel(2 * CHUNK_BYTES)
    (a, ba), (b, bb), (c, bc) = CHUNKS[:3]
    level.put(a, ba)
    level.put(b, bb)
    assert level.pin(a)
    level.put(c, bc)
    assert level.contains_many([a, b, c]) == [True, False, True]
    level.unpin(a)
    assert not level.pin(b)


def test_disk_rebuilds_its_index_on_restart(tmp_path: Path) -> None:
    first = DiskLevel(tmp_path, 10 * CHUNK_BYTES)
    for key, blob in CHUNKS[:4]:
        first.put(key, blob)
    (tmp_path / "tmp" / "crashed-mid-write.tmp").write_bytes(b"partial")
    (tmp_path / "chunks" / "zz").mkdir()
    (tmp_path / "chunks" / "zz" / "not-a-key.kvc").write_bytes(b"junk")

    second = DiskLevel(tmp_path, 10 * CHUNK_BYTES)
    assert second.stats().items == 4
    assert second.get_many([k for k, _ in CHUNKS[:4]]) == [b for _, b in CHUNKS[:4]]
    assert not list((tmp_path / "tmp").iterdir()), "leftover temp files are removed"

    # A smaller budget on restart keeps the most recently written chunks.
    smaller = DiskLevel(tmp_path, 2 * CHUNK_BYTES)
    assert smaller.stats().items == 2
    assert smaller.stats().used_bytes <= 2 * CHUNK_BYTES


def test_disk_writes_are_atomic_renames(tmp_path: Path) -> None:
    level = DiskLevel(tmp_path, 10 * CHUNK_BYTES)
    for key, blob in CHUNKS:
        level.put(key, blob)
    assert not list((tmp_path / "tmp").iterdir())
    files = list(tmp_path.glob("chunks/*/*.kvc"))
    assert sorted(f.read_bytes() for f in files) == sorted(b for _, b in CHUNKS)


def test_disk_full_degrades_to_a_refused_write(tmp_path: Path) -> None:
    """A file-size limit makes every write fail in the kernel, like a full disk."""
    (key, blob), (key2, blob2) = CHUNKS[:2]
    script = textwrap.dedent(
        f"""
        import json, resource, signal, sys
        from memos.tiers.activation.levels import DiskLevel
        from memos.tiers.activation.store import ActivationStore
        from memos.tiers.activation.levels import RamLevel
        level = DiskLevel(sys.argv[1], 1 << 20)
        ram = RamLevel(1 << 20)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({CHUNK_BYTES // 2}, {CHUNK_BYTES // 2}))
        key, blob = bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
        ok = level.put(key, blob)
        store = ActivationStore([ram, level])
        accepted = store.put(key, blob)
        got = [c.key == key for c in store.fetch([key])]
        s = level.stats()
        print(json.dumps({{"ok": ok, "accepted": accepted, "got": got, "errors": s.errors,
                          "failures": s.put_failures, "items": s.items}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), key.hex(), blob.hex()],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"] is False
    assert result["accepted"] == 1, "the RAM level still took it"
    assert result["got"] == [True], "served from RAM though the disk refused"
    assert result["errors"] == 2 and result["failures"] == 2 and result["items"] == 0
    assert not list((tmp_path / "tmp").iterdir()), "no partial file left behind"
    assert not list(tmp_path.glob("chunks/*/*.kvc"))
    # The same directory works again once space is back.
    level = DiskLevel(tmp_path, 1 << 20)
    assert level.put(key2, blob2)
