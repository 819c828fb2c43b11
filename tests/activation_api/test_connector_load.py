"""The vLLM connector's load path (``memos.integrations.vllm.transfer.load_blocks``) against a
real daemon, on CPU tensors laid out as vLLM's CPU attention keeps its paged KV buffer, and
as vLLM 0.33 hands a GPU's to a connector (``benchmarks.kv_codec`` builds those layouts); no
vLLM needed. End to end through vLLM: tests/vllm/test_connector.py."""

from __future__ import annotations

import time

import pytest
import torch

from benchmarks.kv_codec import LAYOUTS, check_layout, flash_attn_kv, layer_views
from memos.integrations.vllm.blocks import BlockCodec
from memos.integrations.vllm.layout import EngineLayout
from memos.integrations.vllm.transfer import SaveJob, Saver, load_blocks
from memos.tiers.activation.chunk import decode, encode
from tests.activation_api.conftest import StartKv
from tests.activation_api.test_migrate import Connect

LAYERS, HEADS, TOKENS, HEAD = 3, 2, 16, 8
BUFFER_BLOCKS = 40


class _StagingCodec(BlockCodec):
    """Loads through the staging buffer, as a GPU's codec does (over host caches here: the
    staging path's reads, checks and copies, to which a device adds the transfer that
    ``benchmarks.kv_codec`` checks on a GPU)."""

    @property
    def direct(self) -> bool:
        return False


def _codec(device: str) -> BlockCodec:
    """A codec over zeroed caches; ``device`` "staged": a GPU's block format, staged."""
    kind, codec_type = ("cuda", _StagingCodec) if device == "staged" else (device, BlockCodec)
    layout = EngineLayout("tiny", "float32", TOKENS, LAYERS, HEADS, HEAD, 0, 1, "0.32", kind)
    caches = {
        f"layer.{i}": torch.zeros(BUFFER_BLOCKS, HEADS, TOKENS, 2 * HEAD) for i in range(LAYERS)
    }
    return codec_type(caches, list(caches), layout)


def test_loaded_blocks_hold_the_stored_kv_and_a_gap_fails_the_rest(
    start_kv: StartKv, connect: Connect
) -> None:
    handle = start_kv(model=False)
    _, kv = connect(handle, "acme")
    generator = torch.Generator().manual_seed(3)
    for device in ("cpu-vec", "cpu-amx"):  # K transposed in a block, and not
        codec = _codec(device)
        assert codec.direct
        layout = codec.layout
        keys = [layout.fingerprint + bytes([i, len(device)]) * 16 for i in range(12)]
        blocks = torch.randn(len(keys), LAYERS, 2, HEADS, TOKENS, HEAD, generator=generator)
        kv.store([(k, encode(k, codec.model_layout, b)) for k, b in zip(keys, blocks, strict=True)])
        block_ids = [37, 2, 19, 20, 21, 5, 0, 33, 8, 9, 11, 30]  # scattered, as vLLM allocates
        found = kv.lookup(keys, pin=True)
        result = load_blocks(
            kv, codec, keys, block_ids, lease_id=found.lease_id, deadline=time.monotonic() + 30
        )
        assert (result.loaded, result.failed) == (len(keys), ())
        assert torch.equal(codec.read(block_ids), blocks)
        # The staged path (a device buffer's) writes the same bytes.
        staged = _codec(device)
        staged.write(block_ids, blocks)
        everything = list(range(BUFFER_BLOCKS))
        assert torch.equal(codec.read(everything), staged.read(everything))
        assert kv.stats().leases == 0, "the Fetch released the lease"

        # A chain the daemon holds only in part: the blocks after the gap are failed (and
        # recomputed by vLLM), the ones before it loaded; nothing else is written.
        fresh = _codec(device)
        missing = layout.fingerprint + b"\xee" * 32
        chain = [*keys[:4], missing, *keys[5:]]
        result = load_blocks(
            kv, fresh, chain, block_ids, lease_id="", deadline=time.monotonic() + 30
        )
        assert (result.loaded, result.failed) == (4, tuple(block_ids[4:]))
        assert torch.equal(fresh.read(block_ids[:4]), blocks[:4])
        assert not any(fresh.read(block_ids[4:]).flatten().tolist())

        # Past the deadline, nothing is loaded.
        late = _codec(device)
        result = load_blocks(kv, late, keys, block_ids, lease_id="", deadline=time.monotonic() - 1)
        assert result.loaded == 0 and result.failed == tuple(block_ids)


def test_batched_writes_place_every_block_whatever_the_ids() -> None:
    """write_direct copies per run of consecutive ids, or indexed when the ids scatter; a
    strided source (blocks read back to back with a header between them) is fine."""
    generator = torch.Generator().manual_seed(4)
    for device, dtype in (("cpu-vec", torch.float32), ("cpu-amx", torch.bfloat16)):
        for block_ids in ([3, 4, 5, 6, 7, 8, 20, 21, 22, 23], [9, 2, 30, 31, 0, 17, 5, 38, 1, 12]):
            layout = EngineLayout(
                "tiny", str(dtype)[6:], TOKENS, LAYERS, HEADS, HEAD, 0, 1, "0.32", device
            )
            caches = {
                f"layer.{i}": torch.zeros(BUFFER_BLOCKS, HEADS, TOKENS, 2 * HEAD, dtype=dtype)
                for i in range(LAYERS)
            }
            codec = BlockCodec(caches, list(caches), layout)
            shape = (len(block_ids), LAYERS, 2, HEADS, TOKENS, HEAD)
            blocks = torch.randn(shape, generator=generator).to(dtype)
            padded = torch.zeros(len(block_ids), blocks[0].numel() + 32, dtype=dtype)
            padded[:, 32:] = blocks.reshape(len(block_ids), -1)
            strided = padded[:, 32:].view(blocks.shape)
            assert not strided.is_contiguous()
            codec.write_direct(block_ids, strided)
            assert torch.equal(codec.read(block_ids), blocks)
            others = [b for b in range(BUFFER_BLOCKS) if b not in block_ids]
            assert not codec.read(others).any(), "no other block was written"


def test_a_cpu_chunk_layer_is_the_blocks_own_bytes_and_other_layouts_put_k_first() -> None:
    """On CPU a chunk's layer is its block's bytes as the attention kernel holds them (so a
    file reads straight into the block, one run per layer); elsewhere, K of every head, then
    V, each token's ``[K | V]`` split apart."""
    generator = torch.Generator().manual_seed(5)
    for device in ("cpu-vec", "cpu-amx", "cuda"):
        layout = EngineLayout("tiny", "float32", TOKENS, LAYERS, HEADS, HEAD, 0, 1, "0.32", device)
        shape = (BUFFER_BLOCKS, HEADS, TOKENS, 2 * HEAD)
        caches = [torch.randn(shape, generator=generator) for _ in range(LAYERS)]
        codec = BlockCodec({str(i): c for i, c in enumerate(caches)}, ["0", "1", "2"], layout)
        (chunk,) = codec.read([7])
        for layer, cache in enumerate(caches):
            block = cache[7]  # [H, N, 2 * head]
            if device.startswith("cpu"):
                assert chunk[layer].numpy().tobytes() == block.numpy().tobytes()
            else:
                assert torch.equal(chunk[layer, 0], block[..., :HEAD])
                assert torch.equal(chunk[layer, 1], block[..., HEAD:])
        assert codec.addressable == device.startswith("cpu")
        if codec.addressable:
            runs = codec.targets(7)
            assert len(runs) == LAYERS
            assert b"".join(bytes(r) for r in runs) == chunk.numpy().tobytes()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_blocks_read_as_vllm_033s_flash_attention_reads_them(layout: str, device: str) -> None:
    """vLLM 0.33 hands a connector each layer as a logical [B, H, N, 2 * head] view whose
    strides follow the engine's physical layout; FlashAttention splits each token's
    [K | V]. Blocks the codec writes hold exactly that, in every layout (on CPU tensors here:
    the codec's arithmetic is the device's; ``python -m benchmarks.kv_codec`` runs the same
    check on a GPU, where one is lent)."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU here: python -m benchmarks.kv_codec --device cuda runs it on one")
    check_layout(layout, device)


def test_a_load_from_the_daemon_fills_strided_vllm_033_blocks(
    start_kv: StartKv, connect: Connect
) -> None:
    """vLLM 0.33's default layout (LBNHC) gives strided layer views: the load copies the
    chunks in (into host views directly; on a device through ``write``, checked by
    ``check_layout``), and FlashAttention reads back what was stored."""
    handle = start_kv(model=False)
    _, kv = connect(handle, "acme")
    layout = EngineLayout("tiny", "float32", TOKENS, LAYERS, HEADS, HEAD, 0, 1, "0.33", "cuda")
    caches = layer_views("LBNHC", LAYERS, BUFFER_BLOCKS, HEADS, TOKENS, HEAD, torch.float32, "cpu")
    codec = BlockCodec({str(i): c for i, c in enumerate(caches)}, ["0", "1", "2"], layout)
    assert not codec.addressable, "a GPU's block format: a chunk is not the block's bytes"
    keys = [layout.fingerprint + bytes([i, 33]) * 16 for i in range(6)]
    blocks = torch.randn(len(keys), LAYERS, 2, HEADS, TOKENS, HEAD, generator=torch.manual_seed(6))
    kv.store([(k, encode(k, codec.model_layout, b)) for k, b in zip(keys, blocks, strict=True)])
    block_ids = [30, 2, 3, 4, 11, 39]
    found = kv.lookup(keys, pin=True)
    result = load_blocks(
        kv, codec, keys, block_ids, lease_id=found.lease_id, deadline=time.monotonic() + 30
    )
    assert (result.loaded, result.failed) == (len(keys), ())
    for layer, cache in enumerate(caches):
        key, value = flash_attn_kv(cache, HEAD)
        for i, block in enumerate(block_ids):
            assert torch.equal(key[block].transpose(0, 1), blocks[i, layer, 0])
            assert torch.equal(value[block].transpose(0, 1), blocks[i, layer, 1])
    assert kv.stats().leases == 0


def test_a_save_is_encoded_once_its_copy_to_host_is_done(
    start_kv: StartKv, connect: Connect
) -> None:
    """A GPU's save queues its copy to host and returns (``BlockCodec.read_for_save``): the
    saver waits for the copy before it encodes, so what it stores is the blocks' bytes; a
    copy that fails stores nothing."""
    handle = start_kv(model=False)
    _, kv = connect(handle, "acme")
    codec = _codec("cpu-vec")
    layout = codec.model_layout
    keys = tuple(codec.layout.fingerprint + bytes([i, 44]) * 16 for i in range(3))
    source = torch.randn(len(keys), LAYERS, 2, HEADS, TOKENS, HEAD, generator=torch.manual_seed(7))
    host = torch.zeros_like(source)  # as the pinned buffer before the device's copy lands
    saver = Saver(lambda: kv, layout, max_pending_bytes=1 << 30)

    def copy_lands() -> None:
        host.copy_(source)

    try:
        assert saver.submit(SaveJob(keys, host, copy_lands))
        assert saver.wait_idle(30) and saver.stored == len(keys)
        stored = [decode(blob, key) for key, blob in zip(keys, kv.fetch(list(keys)), strict=True)]
        for chunk, block in zip(stored, source, strict=True):
            assert chunk.payload.tobytes() == block.numpy().tobytes()

        def copy_failed() -> None:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        others = tuple(codec.layout.fingerprint + bytes([i, 45]) * 16 for i in range(2))
        assert saver.submit(SaveJob(others, torch.zeros_like(source[:2]), copy_failed))
        assert saver.wait_idle(30) and saver.failed == len(others)
        assert kv.lookup(list(others)).matched == 0
    finally:
        saver.close()
