"""The vLLM connector's load path through the daemon's shared directory, against a real daemon
(no vLLM needed): blocks read from the files equal the stored KV; a corrupt or vanished file
is fetched again as bytes (and the daemon rewrites it); an engine that mounts another
directory gets bytes only. End to end through vLLM: tests/vllm/test_shared_dir.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from memos.client_activation import LocalChunk
from memos.integrations.vllm import transfer
from memos.integrations.vllm.blocks import BlockCodec
from memos.integrations.vllm.layout import EngineLayout
from memos.integrations.vllm.transfer import LoadResult, load_blocks
from memos.tiers.activation.chunk import encode
from memos.tiers.activation.shared import ID_FILE, read_shared_id
from memos.tiers.activation.tenancy import tenant_namespace
from tests.activation._chunks import flip_byte
from tests.activation_api.conftest import StartKv
from tests.activation_api.test_connector_load import HEAD, HEADS, LAYERS, TOKENS
from tests.activation_api.test_connector_load import _codec as codec_for
from tests.activation_api.test_migrate import Connect

BLOCK_IDS = [37, 2, 19, 20, 21, 5, 0, 33]


@pytest.mark.parametrize("kind", ["cpu-vec", "staged"])
def test_blocks_load_from_the_shared_files_and_bad_files_fall_back_to_bytes(
    start_kv: StartKv, connect: Connect, tmp_path: Path, kind: str
) -> None:
    """Files read straight into the blocks (CPU) or into the staging buffer (as on a GPU)."""
    root = tmp_path / "shm"
    handle = start_kv(model=False, activation={"shared_dir": root})
    _, kv = connect(handle, "acme")
    codec = codec_for(kind)
    layout = codec.layout
    keys = [layout.fingerprint + bytes([i, 7]) * 16 for i in range(len(BLOCK_IDS))]
    blocks = torch.randn(len(keys), LAYERS, 2, HEADS, TOKENS, HEAD, generator=torch.manual_seed(5))
    kv.store([(k, encode(k, codec.model_layout, b)) for k, b in zip(keys, blocks, strict=True)])

    def load(into_dir: Path | None = root) -> tuple[LoadResult, torch.Tensor]:
        fresh = codec_for(kind)
        found = kv.lookup(keys, pin=True)
        result = load_blocks(
            kv,
            fresh,
            keys,
            BLOCK_IDS,
            lease_id=found.lease_id,
            deadline=time.monotonic() + 30,
            shared_dir=into_dir,
        )
        return result, fresh.read(BLOCK_IDS)

    result, loaded = load()
    assert (result.loaded, result.failed) == (len(keys), ())
    assert (result.from_files, result.refetched) == (len(keys), 0)
    assert torch.equal(loaded, blocks)
    (hold,) = result.holds
    assert kv.release(hold), "the files were held for the engine until it released them"
    assert kv.stats().leases == 0

    # One file corrupted, one gone: both come again as bytes, every block is right, and
    # the daemon rewrote the corrupt file (the next load reads it from the file again).
    files = sorted((root / "chunks").glob("*/*.kvc"))
    assert len(files) == len(keys)
    files[0].write_bytes(flip_byte(files[0].read_bytes(), 4000))
    files[1].unlink()
    result, loaded = load()
    assert result.loaded == len(keys) and result.refetched == 2
    assert result.from_files == len(keys) - 2
    assert torch.equal(loaded, blocks)
    for h in result.holds:
        kv.release(h)
    result, loaded = load()
    assert result.from_files == len(keys) and torch.equal(loaded, blocks)

    # An engine whose directory is another one (another host's): bytes, the same blocks.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ID_FILE).write_text("0" * 32)
    result, loaded = load(elsewhere)
    assert (result.loaded, result.from_files, result.holds) == (len(keys), 0, ())
    assert torch.equal(loaded, blocks)
    # No directory configured at all: bytes.
    result, loaded = load(None)
    assert result.from_files == 0 and torch.equal(loaded, blocks)


def test_files_named_by_the_lookup_load_with_no_fetch_in_batches(
    start_kv: StartKv, connect: Connect, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "shm"
    handle = start_kv(model=False, activation={"shared_dir": root})
    _, kv = connect(handle, "acme")
    codec = codec_for("cpu-vec")
    keys = [codec.layout.fingerprint + bytes([i, 9]) * 16 for i in range(len(BLOCK_IDS))]
    blocks = torch.randn(len(keys), LAYERS, 2, HEADS, TOKENS, HEAD, generator=torch.manual_seed(6))
    kv.store([(k, encode(k, codec.model_layout, b)) for k, b in zip(keys, blocks, strict=True)])
    # Three files per batch: the loads below cross batch boundaries.
    monkeypatch.setattr(
        transfer, "FILE_BATCH_BYTES", 3 * len(encode(keys[0], codec.model_layout, blocks[0]))
    )

    def load(files: int | None = None) -> tuple[LoadResult, torch.Tensor]:
        fresh = codec_for("cpu-vec")
        found = kv.lookup(keys, pin=True, shared_dir_id=read_shared_id(root))
        assert len(found.files) == len(keys)
        result = load_blocks(
            kv,
            fresh,
            keys,
            BLOCK_IDS,
            lease_id=found.lease_id,
            deadline=time.monotonic() + 30,
            shared_dir=root,
            files=found.files[:files],
        )
        assert found.lease_id in result.holds, "the lease holds the files: released after"
        for hold in result.holds:
            kv.release(hold)
        assert kv.stats().leases == 0
        return result, fresh.read(BLOCK_IDS)

    fetches = kv.stats().fetches
    result, loaded = load()
    assert (result.loaded, result.from_files, result.refetched) == (len(keys), len(keys), 0)
    assert not result.fetched and kv.stats().fetches == fetches, "no Fetch at all"
    assert torch.equal(loaded, blocks)

    # Fewer files than blocks (the directory lacked the rest): the rest is fetched.
    result, loaded = load(files=4)
    assert result.fetched and (result.loaded, result.from_files) == (len(keys), len(keys))
    assert torch.equal(loaded, blocks)

    # A corrupt file in the second batch: its block comes as bytes, the others from files.
    files = sorted((root / "chunks").glob("*/*.kvc"))
    bad = next(
        f for f in files if f.name.startswith(tenant_namespace("acme").hex() + keys[4].hex())
    )
    bad.write_bytes(flip_byte(bad.read_bytes(), 3000))
    result, loaded = load()
    assert (result.loaded, result.from_files, result.refetched) == (len(keys), len(keys) - 1, 1)
    assert torch.equal(loaded, blocks)


def test_files_are_read_straight_into_their_blocks_on_every_cpu_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a host buffer, a shared file goes into its block with no copy (``readv`` into the
    runs of the block): the blocks then hold the stored KV exactly, for K packed either way
    and any dtype, in one thread, two or four; a file that fails a check stops the load there,
    and no block of another file is touched."""
    generator = torch.Generator().manual_seed(8)
    for device, dtype in (("cpu-vec", torch.float32), ("cpu-amx", torch.bfloat16)):
        for parallel_from, threads in ((2, 2), (2, 4), (10**9, 2)):
            monkeypatch.setattr(transfer, "PARALLEL_READ_MIN_FILES", parallel_from)
            monkeypatch.setattr(transfer, "READING_THREADS", threads)
            monkeypatch.setattr(transfer, "READ_BYTES_PER_THREAD", 1)  # as many as allowed
            layout = EngineLayout(
                "tiny", str(dtype)[6:], TOKENS, LAYERS, HEADS, HEAD, 0, 1, "0.32", device
            )
            caches = {
                f"layer.{i}": torch.zeros(40, HEADS, TOKENS, 2 * HEAD, dtype=dtype)
                for i in range(LAYERS)
            }
            codec = BlockCodec(caches, list(caches), layout)
            assert codec.addressable
            keys = [layout.fingerprint + bytes([i, 3]) * 16 for i in range(len(BLOCK_IDS))]
            shape = (len(keys), LAYERS, 2, HEADS, TOKENS, HEAD)
            blocks = torch.randn(shape, generator=generator).to(dtype)
            root = tmp_path / f"{device}-{parallel_from}-{threads}"
            root.mkdir()
            files = []
            for i, (key, block) in enumerate(zip(keys, blocks, strict=True)):
                blob = encode(key, codec.model_layout, block)
                (root / f"{i}.kvc").write_bytes(blob)
                files.append(LocalChunk(path=f"{i}.kvc", size=len(blob), hold=""))

            def into(i: int, codec: BlockCodec = codec) -> list[memoryview]:
                return codec.targets(BLOCK_IDS[i])

            def never(first: int, blocks: torch.Tensor) -> None:
                raise AssertionError("read into the blocks: nothing to write")

            done = transfer.load_files(codec, root, files, keys, 0, never, targets=into)
            assert done == transfer.FilesLoaded(len(keys))
            assert torch.equal(codec.read(BLOCK_IDS), blocks)
            others = [b for b in range(40) if b not in BLOCK_IDS]
            assert not codec.read(others).any(), "no other block was written"

            # A damaged payload (the checksum sees it) in the second half: the load stops
            # there; the blocks before it hold their KV.
            (root / "5.kvc").write_bytes(flip_byte((root / "5.kvc").read_bytes(), 200))
            codec.write(BLOCK_IDS, torch.zeros_like(blocks))
            done = transfer.load_files(codec, root, files, keys, 0, never, targets=into)
            assert done.loaded == 5 and "checksum" in done.error
            assert torch.equal(codec.read(BLOCK_IDS[:5]), blocks[:5])
            # A file of another key (a wrong name) is refused too.
            swapped = [files[1], *files[1:]]
            done = transfer.load_files(codec, root, swapped, keys, 0, never, targets=into)
            assert done.loaded == 0 and "key" in done.error
