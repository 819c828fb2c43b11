"""The shared directory over real gRPC: a same-host engine gets chunk files instead of bytes.

Only a client that sends the directory's id gets names, only of its own tenant's chunks,
only with the read scope; named files are held against eviction until released; unusable
files are verified and written anew; a demoted chunk is never named.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from memos.client import MemosClient
from memos.client_activation import ActivationClient, LocalChunk
from memos.errors import PermissionDenied
from memos.kernel import Principal
from memos.tiers.activation.chunk import decode
from memos.tiers.activation.levels import DiskLevel
from memos.tiers.activation.shared import ID_FILE, SharedDir, SharedIdReader, read_shared_id
from memos.tiers.activation.tenancy import tenant_namespace
from tests.activation._chunks import flip_byte, make_chunks
from tests.activation_api.conftest import StartKv
from tests.fixtures.daemon import ServerHandle

Connect = Callable[[ServerHandle, str], tuple[MemosClient, ActivationClient]]

CHUNKS = make_chunks(6, seed=3)
KEYS = [k for k, _ in CHUNKS]
CHUNK_BYTES = len(CHUNKS[0][1])


def shared_server(
    start_kv: StartKv, root: Path, chunks: int = 64, **activation: object
) -> ServerHandle:
    return start_kv(
        model=False,
        activation={
            "shared_dir": root,
            "shared_budget_bytes": chunks * CHUNK_BYTES,
            **activation,
        },
    )


def fetch_local(
    kv: ActivationClient, root: Path, keys: list[bytes], **kw: object
) -> list[tuple[bytes, bytes | LocalChunk]]:
    return list(kv.iter_fetch_shared(keys, shared_dir_id=read_shared_id(root), **kw))  # type: ignore[arg-type]


def test_a_client_that_sees_the_directory_gets_files_with_the_same_bytes(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    root = tmp_path / "shm"
    handle = shared_server(start_kv, root)
    _, kv = connect(handle, "acme")
    assert kv.store(CHUNKS[:4]).stored == 4
    assert len(read_shared_id(root)) == 32

    got = fetch_local(kv, root, KEYS)
    assert [key for key, _ in got] == KEYS[:4], "the stored prefix, as a stream gives it"
    holds = set()
    for (key, item), (_, blob) in zip(got, CHUNKS, strict=False):
        assert isinstance(item, LocalChunk)
        path = root / item.path
        assert not Path(item.path).is_absolute() and ".." not in Path(item.path).parts
        assert path.read_bytes() == blob and item.size == len(blob)
        decode(path.read_bytes(), key)
        holds.add(item.hold)
    assert len(holds) == 1 and "" not in holds
    assert kv.release(holds.pop())
    stats = {lv.name: lv for lv in kv.stats().levels}
    assert stats["shared"].items == 4, "Store wrote through to the shared level"

    # A plain Fetch, and a Fetch with another directory's id (an engine elsewhere), get bytes.
    assert kv.fetch(KEYS) == [blob for _, blob in CHUNKS[:4]]
    other = list(kv.iter_fetch_shared(KEYS, shared_dir_id="0" * 32))
    assert [item for _, item in other] == [blob for _, blob in CHUNKS[:4]]


def test_files_are_named_only_to_their_tenant_with_the_read_scope(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    root = tmp_path / "shm"
    handle = shared_server(start_kv, root)
    _, acme = connect(handle, "acme")
    _, globex = connect(handle, "globex")
    _, admin = connect(handle, "admin")
    acme.store(CHUNKS[:3])
    assert fetch_local(globex, root, KEYS) == [], "another tenant's chunks are not its own"
    assert fetch_local(admin, root, KEYS) == [], "admin of another tenant: not its chunks"
    tier = handle.server.kernel().activation
    assert tier is not None
    writer = Principal(tenant="acme", scopes=frozenset({"write"}))
    with pytest.raises(PermissionDenied, match="read"):
        tier.fetch_shared(writer, KEYS, shared_id=read_shared_id(root))
    _, reader = connect(handle, "reader")  # acme, read only: it could Fetch them anyway
    assert all(isinstance(item, LocalChunk) for _, item in fetch_local(reader, root, KEYS))
    # Another tenant can neither release acme's hold.
    (_, item), *_ = fetch_local(acme, root, KEYS[:1])
    assert isinstance(item, LocalChunk)
    assert not globex.release(item.hold)
    assert acme.release(item.hold)


def test_held_files_survive_eviction_until_released(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    root = tmp_path / "shm"
    handle = shared_server(start_kv, root, chunks=3)
    _, kv = connect(handle, "acme")
    kv.store(CHUNKS[:3])
    held = fetch_local(kv, root, KEYS[:3])
    files = [root / item.path for _, item in held if isinstance(item, LocalChunk)]
    assert len(files) == 3

    # The shared level is full of held files: new chunks go to the other levels only.
    stored = kv.store(CHUNKS[3:6])
    assert stored.stored == 3
    assert all(f.read_bytes() == blob for f, (_, blob) in zip(files, CHUNKS, strict=False))
    shared = {lv.name: lv for lv in kv.stats().levels}["shared"]
    assert shared.put_failures == 3 and shared.evictions == 0

    # Not in the shared directory yet, still in RAM: a fetch writes the files (no room:
    # bytes, then), once the hold is gone it evicts the old ones.
    streamed = fetch_local(kv, root, KEYS[3:6])
    assert [item for _, item in streamed] == [blob for _, blob in CHUNKS[3:6]]
    assert kv.release(held[0][1].hold)  # type: ignore[union-attr]
    again = fetch_local(kv, root, KEYS[3:6])
    assert all(isinstance(item, LocalChunk) for _, item in again)
    assert not any(f.exists() for f in files), "evicted once released"


def test_an_unusable_file_is_verified_and_written_anew(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    root = tmp_path / "shm"
    handle = shared_server(start_kv, root)
    _, kv = connect(handle, "acme")
    kv.store(CHUNKS[:2])
    (_, first), (_, second) = fetch_local(kv, root, KEYS[:2])
    assert isinstance(first, LocalChunk) and isinstance(second, LocalChunk)
    kv.release(first.hold)
    bad = root / first.path
    bad.write_bytes(flip_byte(bad.read_bytes(), 200))
    (root / second.path).unlink()  # vanished (someone cleaned the tmpfs)

    # The engine says the files were unusable: the daemon checks them and rewrites them
    # from RAM (a request without the id gets the bytes, still verified by the daemon).
    streamed = list(kv.iter_fetch_shared(KEYS[:2], shared_dir_id="", recheck=True))
    assert [item for _, item in streamed] == [blob for _, blob in CHUNKS[:2]]
    shared = {lv.name: lv for lv in kv.stats().levels}["shared"]
    assert shared.corrupt == 1 and shared.errors == 1
    fresh = fetch_local(kv, root, KEYS[:2])
    for (key, item), (_, blob) in zip(fresh, CHUNKS[:2], strict=True):
        assert isinstance(item, LocalChunk)
        assert (root / item.path).read_bytes() == blob
        decode((root / item.path).read_bytes(), key)


def test_a_demoted_chunk_is_never_named(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    root = tmp_path / "shm"
    handle = shared_server(start_kv, root)
    _, kv = connect(handle, "acme")
    kv.store(CHUNKS[:3])
    tier = handle.server.kernel().activation
    assert tier is not None
    tier.store.drop(KEYS[1:2], namespace=tenant_namespace("acme"))
    assert [key for key, _ in fetch_local(kv, root, KEYS)] == KEYS[:1]


def test_the_directory_keeps_its_id_and_files_across_a_restart(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    root = tmp_path / "shm"
    first = shared_server(start_kv, root, ram_budget_bytes=0, disk_budget_bytes=0)
    _, kv = connect(first, "acme")
    kv.store(CHUNKS[:2])
    shared_id = read_shared_id(root)
    first.server.stop(grace_s=1)
    assert (root / ID_FILE).exists()

    second = shared_server(start_kv, root, ram_budget_bytes=0, disk_budget_bytes=0)
    _, kv2 = connect(second, "acme")
    assert read_shared_id(root) == shared_id
    assert kv2.lookup(KEYS).matched == 2
    got = fetch_local(kv2, root, KEYS)
    assert all(isinstance(item, LocalChunk) for _, item in got) and len(got) == 2


def test_a_hold_that_is_never_released_expires(tmp_path: Path) -> None:
    now = [0.0]
    level = DiskLevel(tmp_path / "shm", 2 * CHUNK_BYTES, name="shared")
    shared = SharedDir(level, clock=lambda: now[0])
    assert not shared.matches("") and shared.matches(read_shared_id(tmp_path / "shm"))
    first, second, third = CHUNKS[:3]
    assert level.put(*first) and level.put(*second)
    assert shared.hold("acme", "h1", first[0], 30.0) == CHUNK_BYTES
    assert shared.hold("acme", "h1", second[0], 30.0) == CHUNK_BYTES
    assert shared.hold("globex", "h1", first[0], 30.0) is None, "a hold is its tenant's"
    assert not level.put(*third), "both files held: no room"
    now[0] = 31.0
    assert shared.holds() == 0
    assert level.put(*third), "expired: the held files may go"
    assert not shared.release("acme", "h1")


def test_a_pinned_lookup_names_the_files_already_there_held_under_its_lease(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    root = tmp_path / "shm"
    handle = shared_server(start_kv, root, chunks=4)
    _, kv = connect(handle, "acme")
    kv.store(CHUNKS[:4])
    shared_id = read_shared_id(root)

    found = kv.lookup(KEYS[:4], pin=True, shared_dir_id=shared_id)
    assert found.pinned == 4 and len(found.files) == 4
    for (_, blob), item in zip(CHUNKS, found.files, strict=False):
        assert (root / item.path).read_bytes() == blob and item.size == len(blob)
        assert item.hold == found.lease_id
    # Held: the level is full of them, so new chunks cannot evict them.
    assert kv.store(CHUNKS[4:6]).stored == 2
    assert all((root / item.path).is_file() for item in found.files)
    # A Fetch of other keys naming the lease ends the pins, not the files' hold.
    assert len(list(kv.iter_fetch(KEYS[:1], lease_id=found.lease_id))) == 1
    assert len(fetch_local(kv, root, KEYS[4:6])) == 2
    assert all((root / item.path).is_file() for item in found.files)
    assert kv.release(found.lease_id), "the release ends the files' hold"
    fetch_local(kv, root, KEYS[4:6])
    assert not all((root / item.path).is_file() for item in found.files), "evictable again"

    # Another directory's id, no id, or no pin: no names.
    assert kv.lookup(KEYS[:2], pin=True, shared_dir_id="0" * 32).files == ()
    assert kv.lookup(KEYS[:2], pin=True).files == ()
    assert kv.lookup(KEYS[:2], shared_dir_id=shared_id).files == ()


def test_a_lookup_names_the_leading_files_only(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    root = tmp_path / "shm"
    handle = shared_server(start_kv, root)
    _, kv = connect(handle, "acme")
    kv.store(CHUNKS[:4])
    tier = handle.server.kernel().activation
    assert tier is not None and tier.shared is not None
    # Out of the directory, still in RAM (as when the directory's budget evicted it).
    assert tier.shared.level.delete(tenant_namespace("acme") + KEYS[2])
    found = kv.lookup(KEYS[:4], pin=True, shared_dir_id=read_shared_id(root))
    assert found.pinned == 4, "still in RAM"
    assert len(found.files) == 2, "up to the gap in the directory; the rest is fetched"
    assert kv.release(found.lease_id)
    assert kv.stats().leases == 0


def test_an_engine_reads_the_directory_id_again_once_its_ttl_passes(tmp_path: Path) -> None:
    """The id is read once per ``ttl_s``, not per Lookup; a directory created, or made anew,
    later is seen once the ttl has passed."""
    root = tmp_path / "shm"
    root.mkdir()
    reader = SharedIdReader(root, ttl_s=3600)
    assert reader() == "", "no directory id yet"
    (root / ID_FILE).write_text("a" * 32 + "\n")
    assert reader() == "", "read again only once the ttl has passed"
    fresh = SharedIdReader(root, ttl_s=0)
    assert fresh() == "a" * 32 == read_shared_id(root)
    (root / ID_FILE).write_text("b" * 32 + "\n")
    assert fresh() == "b" * 32
