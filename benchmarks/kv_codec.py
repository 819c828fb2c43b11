"""The vLLM connector's block copies on this machine's device, in vLLM 0.33's KV cache layouts.

``python -m benchmarks.kv_codec [--quick] [--json] [--device cuda]``

vLLM 0.33 hands a KV connector one tensor per attention layer, always the logical
``[blocks, heads, tokens, 2 * head]`` (each token's ``[K | V]``), whose strides follow the
engine's resolved physical layout (``vllm/v1/kv_cache_layout.py``: a permutation of
``[L, B, H, N, C]``; ``LBNHC``, the "NHD" of earlier releases, unless a backend or
``VLLM_KV_CACHE_LAYOUT`` picks another). FlashAttention reads it as
``kv_cache.transpose(1, 2).split(head, dim=-1)``. For every layout, this module

1. checks :class:`~memos.integrations.vllm.blocks.BlockCodec` against that reading: blocks
   written into scattered block ids hold, per layer, K and V as FlashAttention takes them
   apart, nothing else is written, and reading them back gives the same bytes;
2. times the copies a load and a save make for a 2,048-token prefix (``write``: host chunks,
   staged in pinned memory, into the device's blocks; ``read_for_save``: the blocks back to
   host, the part the forward pass's thread waits for and the whole), and on a GPU a whole
   load from shared files as the connector makes it, for the benchmark's tiny Llama and for
   Llama-3-8B's shape.

No vLLM needed: the layouts are built here as vLLM 0.33 builds them (``layer_views``), so it
runs where vLLM's GPU build cannot be installed. The end-to-end check on a GPU is
``benchmarks/gpu/vllm_kv.sh``. No targets are named for these copies: it reports figures,
and exits non-zero if a layout check fails.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import base_parser, emit_json, machine, print_table
from memos.client import MemosClient
from memos.client_activation import ActivationClient, LocalChunk
from memos.integrations.vllm import transfer
from memos.integrations.vllm.blocks import BlockCodec
from memos.integrations.vllm.layout import EngineLayout
from memos.integrations.vllm.transfer import load_blocks
from memos.tiers.activation.chunk import encode

#: vLLM 0.33's KVCacheLayout members: the physical order of the logical [L, B, H, N, C] axes.
LAYOUTS: dict[str, tuple[int, ...]] = {
    "LBNHC": (0, 1, 3, 2, 4),  # the default ("NHD")
    "LBHNC": (0, 1, 2, 3, 4),  # "HND"
    "LHBNC": (0, 2, 1, 3, 4),
    "BLHNC": (1, 0, 2, 3, 4),  # block-outermost: a block of every layer together
    "BLNHC": (1, 0, 3, 2, 4),
    "BHLNC": (1, 2, 0, 3, 4),
}


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    kv_heads: int
    head: int
    block: int
    dtype: torch.dtype


SHAPES = (
    Shape("llama-52m (bench)", 8, 4, 64, 16, torch.bfloat16),
    Shape("Llama-3-8B", 32, 8, 128, 16, torch.bfloat16),
)


def layer_views(
    layout: str,
    layers: int,
    blocks: int,
    heads: int,
    tokens: int,
    head: int,
    dtype: torch.dtype,
    device: str | torch.device,
) -> list[torch.Tensor]:
    """Zeroed per-layer KV caches as vLLM 0.33 hands them to a connector: one allocation in
    the physical order ``layout`` names, each layer's logical ``[B, H, N, 2 * head]`` a view
    of it (strided unless the layout keeps a layer's blocks contiguous)."""
    order = LAYOUTS[layout]
    logical = (layers, blocks, heads, tokens, 2 * head)
    raw = torch.zeros([logical[axis] for axis in order], dtype=dtype, device=device)
    # raw's dimension i is logical axis order[i]: permute back to the logical order.
    view = raw.permute([order.index(axis) for axis in range(5)])
    return [view[layer] for layer in range(layers)]


def flash_attn_kv(cache: torch.Tensor, head: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V as vLLM 0.33's FlashAttention reads a layer's cache: ``[B, N, H, head]`` each."""
    key, value = torch.split(cache.transpose(1, 2), head, dim=-1)
    return key, value


def check_layout(layout: str, device: str, *, seed: int = 0) -> None:
    """Write random blocks into scattered ids of ``layout`` caches through the codec and
    check them the way FlashAttention reads them; AssertionError on any difference. Both
    ways in: ``write`` (staged, a device's path) and, where the codec copies straight into
    host caches, ``write_direct``."""
    layers, blocks, heads, tokens, head = 3, 24, 2, 16, 8
    lay = EngineLayout("check", "float32", tokens, layers, heads, head, 0, 1, "0.33", "cuda")
    ids = [17, 3, 4, 5, 22, 0, 9]
    chunks = torch.randn(
        len(ids), layers, 2, heads, tokens, head, generator=torch.Generator().manual_seed(seed)
    )
    for way in ("write", "write_direct"):
        caches = layer_views(layout, layers, blocks, heads, tokens, head, torch.float32, device)
        names = [str(i) for i in range(layers)]
        codec = BlockCodec(dict(zip(names, caches, strict=True)), names, lay)
        if way == "write":
            codec.write(ids, chunks)
        elif codec.direct:
            codec.write_direct(ids, chunks)
        else:
            continue
        for layer, cache in enumerate(caches):
            key, value = flash_attn_kv(cache, head)
            for i, block in enumerate(ids):
                # The chunk's [H, N, head] against FlashAttention's [N, H, head].
                assert torch.equal(key[block].transpose(0, 1).cpu(), chunks[i, layer, 0]), (
                    f"{layout}, {way}: K of layer {layer}, block {block}"
                )
                assert torch.equal(value[block].transpose(0, 1).cpu(), chunks[i, layer, 1]), (
                    f"{layout}, {way}: V of layer {layer}, block {block}"
                )
            others = [b for b in range(blocks) if b not in ids]
            assert not cache[others].any(), f"{layout}, {way}: a block outside the ids was written"
        assert torch.equal(codec.read(ids), chunks), f"{layout}, {way}: read gives other bytes"


def _timed(fn: Callable[[], object], device: str, reps: int) -> float:
    """Median seconds of ``fn``, the device synchronised around each run."""
    cuda = device.startswith("cuda")
    fn()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _prefix_codec(
    shape: Shape, layout: str, device: str, tokens: int
) -> tuple[BlockCodec, list[int]]:
    """A codec over ``shape``'s caches in ``layout``, and the block ids of a ``tokens`` prefix,
    scattered over a buffer four times larger, as vLLM allocates."""
    n = tokens // shape.block
    caches = layer_views(
        layout, shape.layers, 4 * n, shape.kv_heads, shape.block, shape.head, shape.dtype, device
    )
    dtype = str(shape.dtype).removeprefix("torch.")
    lay = EngineLayout(
        "bench", dtype, shape.block, shape.layers, shape.kv_heads, shape.head, 0, 1, "0.33", "cuda"
    )
    names = [str(i) for i in range(shape.layers)]
    codec = BlockCodec(dict(zip(names, caches, strict=True)), names, lay)
    return codec, list(range(1, 4 * n, 4))


def time_copies(shape: Shape, layout: str, device: str, tokens: int, reps: int) -> dict[str, float]:
    """A load's and a save's copies for a ``tokens`` prefix: ms and GB/s each."""
    codec, ids = _prefix_codec(shape, layout, device, tokens)
    n = len(ids)
    staged = codec.staging(n)
    staged.copy_(torch.randn(staged.shape).to(shape.dtype))
    nbytes = staged.numel() * staged.element_size()
    write = _timed(lambda: codec.write(ids, staged), device, reps)

    def save() -> None:
        _, ready = codec.read_for_save(ids)
        ready()

    saved = _timed(save, device, reps)
    queued = []
    for _ in range(reps):
        start = time.perf_counter()
        _, ready = codec.read_for_save(ids)
        queued.append(time.perf_counter() - start)
        ready()
    return {
        "mib": nbytes / 2**20,
        "write_ms": write * 1e3,
        "write_gbps": nbytes / write / 1e9,
        "save_queued_ms": statistics.median(queued) * 1e3,
        "save_ms": saved * 1e3,
        "save_gbps": nbytes / saved / 1e9,
    }


def time_file_load(shape: Shape, device: str, tokens: int, reps: int) -> dict[str, float]:
    """A load of a ``tokens`` prefix from shared files, as the connector makes it on a
    device (``load_blocks`` with every file named, so no daemon call): the files read into
    the staging buffer, checked, then copied into the blocks. Milliseconds, with the files
    read straight into the staging buffer and, for comparison, through a read buffer
    (``transfer.READ_INTO_BLOCKS`` off)."""
    codec, ids = _prefix_codec(shape, "LBNHC", device, tokens)
    n = len(ids)
    keys = [codec.layout.fingerprint + i.to_bytes(4, "big") * 8 for i in range(n)]
    generator = torch.Generator().manual_seed(1)
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    client = ActivationClient(MemosClient("127.0.0.1:1"))  # never called: every file is named
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="memos-kv-codec-", dir=shm) as tmp:
        root = Path(tmp)
        files = []
        for i, key in enumerate(keys):
            block = torch.randn(
                shape.layers, 2, shape.kv_heads, shape.block, shape.head, generator=generator
            ).to(shape.dtype)
            blob = encode(key, codec.model_layout, block)
            (root / f"{i}.kvc").write_bytes(blob)
            files.append(LocalChunk(f"{i}.kvc", len(blob), ""))

        def load() -> None:
            result = load_blocks(
                client,
                codec,
                keys,
                ids,
                lease_id="",
                deadline=time.monotonic() + 60,
                shared_dir=root,
                files=files,
            )
            if result.loaded != n or result.from_files != n:
                raise RuntimeError(f"loaded {result.loaded} of {n} blocks from files")

        for name, into in (("into_staging", True), ("through_buffer", False)):
            transfer.READ_INTO_BLOCKS = into
            try:
                results[f"load_files_{name}_ms"] = _timed(load, device, reps) * 1e3
            finally:
                transfer.READ_INTO_BLOCKS = True
    client.close()
    return results


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "CPU"


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("kv_codec", __doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where the KV caches live (default: cuda where torch sees a GPU)",
    )
    parser.add_argument("--tokens", type=int, default=2048, help="the prefix to load and save")
    args = parser.parse_args(argv)
    device: str = args.device
    checked: dict[str, str] = {}
    for layout in LAYOUTS:
        try:
            check_layout(layout, device)
            checked[layout] = "exact"
        except AssertionError as exc:
            checked[layout] = f"FAILED: {exc}"
    print_table(
        f"layouts: the codec's blocks read as FlashAttention reads them ({_device_name(device)})",
        ["layout", "result"],
        list(checked.items()),
    )
    reps = 5 if args.quick else 20
    shapes = SHAPES[:1] if args.quick and not device.startswith("cuda") else SHAPES
    layouts = ("LBNHC",) if args.quick else ("LBNHC", "LBHNC", "BLNHC")
    timings: dict[str, dict[str, Any]] = {}
    rows = []
    for shape in shapes:
        for layout in layouts:
            found = time_copies(shape, layout, device, args.tokens, reps)
            timings[f"{shape.name}/{layout}"] = found
            rows.append(
                [
                    shape.name,
                    layout,
                    found["mib"],
                    found["write_ms"],
                    found["write_gbps"],
                    found["save_queued_ms"],
                    found["save_ms"],
                    found["save_gbps"],
                ]
            )
    print_table(
        f"copies for a {args.tokens}-token prefix ({_device_name(device)}; medians of {reps}): "
        "write = a load's (pinned host chunks into the blocks); save = the blocks to host "
        "(queued: the forward pass's thread's part, on host: until the bytes are there)",
        [
            "model",
            "layout",
            "MiB",
            "write ms",
            "write GB/s",
            "save queued ms",
            "save on host ms",
            "save GB/s",
        ],
        rows,
    )
    loads: dict[str, dict[str, float]] = {}
    if device.startswith("cuda"):
        for shape in shapes:
            loads[shape.name] = time_file_load(shape, device, args.tokens, reps)
        print_table(
            f"a load of a {args.tokens}-token prefix from shared files "
            f"({_device_name(device)}; medians of {reps}): read, checked, copied into the blocks",
            ["model", "files read into the staging buffer ms", "through a read buffer ms"],
            [
                [name, found["load_files_into_staging_ms"], found["load_files_through_buffer_ms"]]
                for name, found in loads.items()
            ],
        )
    else:  # host caches take the direct path: nothing is staged, both ways are one
        print("\nloads from shared files: timed on a GPU only (host caches are not staged)")
    failed = [name for name, result in checked.items() if result != "exact"]
    if args.json:
        results = {
            "device": _device_name(device),
            "host": machine(),
            "layouts": checked,
            "copies": timings,
            "file_loads": loads,
        }
        emit_json("kv_codec", results, {})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
