"""Copy whole blocks between vLLM's paged KV buffer and the chunk layout.

vLLM hands the connector one tensor per attention layer, a ``[num_blocks, H, N, C]`` view
(blocks first, ``C = 2 * head_size`` elements). A chunk holds one block of every layer, with
the activation tier's dimensions ``[layers, 2, H, N, head_size]``; how a block's bytes sit in
a chunk's layer depends on the attention backend (``layout.block_format``):

- ``cpu-*``: a chunk's layer is the block's own bytes. The CPU backend (``CPU_ATTN``) views a
  block as ``[H, 2 * N, head]`` and splits it at ``N``: per head, its K half, then its V half,
  each as the kernel packs it (the ``vec`` kernels, float32 and float16 with 32-token blocks on
  x86, store K transposed, ``[head, N]``, and V as ``[N, head]``; ``amx`` for bfloat16 packs
  them its way), checked against the model's own K and V in ``tests/vllm/test_connector.py``.
  Read as the chunk's dimensions, ``[2, H, N, head]`` is that ``[H, 2, N * head]`` regrouped:
  nothing reorders it. A chunk's layer is then one run of a block's bytes, so a load reads a
  file straight into its block with one buffer per layer: a run per half and head instead
  (the previous format) made a load's Python-side work (64 slices and 64 checksum updates per
  block of 8 layers and 4 heads) cost more than its copies (3.8 against 2.3 ms for 64 blocks
  of 512 KiB, measured on 2 cores); transposing K on every load cost a third of a load before
  that.
- anything else: each token's ``C`` elements are read as ``[K | V]`` and a chunk's layer holds
  K of every head, then V. That is how vLLM 0.33 hands a GPU's caches to a connector (a
  logical ``[B, H, N, 2 * head]`` per layer, strided as the engine's physical layout, one of
  six, says) and how FlashAttention splits them; ``benchmarks.kv_codec`` checks every layout
  on CPU tensors in the tests and ran on an H100 (exact; not yet end to end through vLLM on a
  GPU: ``benchmarks/gpu/vllm_kv.sh``).

Whatever a layout's real order, the copy out and the copy back in are exact inverses, and the
device kind (with the CPU kernel) and the block format are part of the layout fingerprint, so
blocks are only ever read back by an engine with the same layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import torch

from memos.integrations.vllm.layout import EngineLayout, UnsupportedLayout, block_bytes_format


class BlockCodec:
    def __init__(
        self,
        kv_caches: Mapping[str, torch.Tensor],
        layer_names: Sequence[str],
        layout: EngineLayout,
    ) -> None:
        missing = [name for name in layer_names if name not in kv_caches]
        if missing:
            raise UnsupportedLayout(f"no KV cache registered for layers {missing}")
        self.layout = layout
        self.model_layout = layout.model_layout()
        self._caches = [kv_caches[name] for name in layer_names]
        for cache in self._caches:
            self._check(cache)
        self.device = self._caches[0].device
        self.dtype = self._caches[0].dtype
        self._staging: torch.Tensor | None = None
        # Per layer, every block as the chunk's [2, H, N, head] (a view of the buffer).
        self._chunk_views: list[torch.Tensor] | None = None
        self._np_views: list[npt.NDArray[np.integer]] | None = None
        self._bytes: list[memoryview] | None = None  # per layer, the whole buffer's bytes

    def _check(self, cache: torch.Tensor) -> None:
        lay = self.layout
        expected = (lay.kv_heads, lay.block_size, 2 * lay.head_size)
        if cache.dim() != 4 or tuple(cache.shape[1:]) != expected:
            raise UnsupportedLayout(
                f"a KV cache of shape {tuple(cache.shape)} does not hold blocks of "
                f"{lay.kv_heads} heads x {lay.block_size} tokens x 2 x {lay.head_size}"
            )

    def _chunk_view(self, raw: torch.Tensor) -> torch.Tensor:
        """Contiguous blocks ``raw`` ``[n, H, N, C]`` as the chunk's ``[n, 2, H, N, head]``
        (a view: writing it writes ``raw``)."""
        n = raw.shape[0]
        lay = self.layout
        heads, tokens, head = lay.kv_heads, lay.block_size, lay.head_size
        if block_bytes_format(lay.device):
            # The block's own bytes, [H, 2, N * head], read with the chunk's dimensions.
            return raw.view(n, 2, heads, tokens, head)
        # [n, H, N, 2, head]: each token's K, then its V.
        return raw.view(n, heads, tokens, 2, head).permute(0, 3, 1, 2, 4)

    def read(self, block_ids: Sequence[int]) -> torch.Tensor:
        """A host copy of ``block_ids`` as ``[n, layers, 2, H, N, head]``, contiguous."""
        return self._gather(block_ids).cpu()

    def read_for_save(self, block_ids: Sequence[int]) -> tuple[torch.Tensor, Callable[[], None]]:
        """:meth:`read`'s blocks without waiting for them: (a host tensor, a call that returns
        once it holds them). On a GPU the blocks are gathered there and copied to pinned host
        memory on the current stream, after the forward pass's kernels, so the forward pass's
        thread only queues the copies. 2,048 tokens of Llama-3-8B's KV (256 MiB) on an H100:
        a synchronous copy to pageable memory took 167-185 ms; this, 1.6-2.6 ms in the
        calling thread and 6.6-7.0 ms until the bytes are on the host."""
        gathered = self._gather(block_ids)
        if self.device.type != "cuda":
            return gathered.cpu(), _no_wait
        host = torch.empty(gathered.shape, dtype=self.dtype, pin_memory=True)
        host.copy_(gathered, non_blocking=True)
        copied = torch.cuda.Event()  # type: ignore[no-untyped-call]
        copied.record()
        return host, copied.synchronize

    def _gather(self, block_ids: Sequence[int]) -> torch.Tensor:
        """``block_ids`` as ``[n, layers, 2, H, N, head]``, contiguous, on the buffer's device."""
        index = torch.tensor(list(block_ids), dtype=torch.long, device=self.device)
        lay = self.layout
        out = torch.empty(
            (len(block_ids), lay.layers, 2, lay.kv_heads, lay.block_size, lay.head_size),
            dtype=self.dtype,
            device=self.device,
        )
        for layer, cache in enumerate(self._caches):
            # Whole blocks first (contiguous copies), then rearranged, in the small copy.
            out[:, layer].copy_(self._chunk_view(cache.index_select(0, index)))
        return out

    @property
    def direct(self) -> bool:
        """Whether chunks are copied straight into the buffer (:meth:`write_one` one by one,
        :meth:`write_direct` a batch at a time), rather than staged and written in one go
        (:meth:`write`).

        Direct when the buffer is in host memory (there is no device transfer to batch) and
        viewable in the chunk's dimensions without a copy.
        """
        if self.device.type != "cpu":
            return False
        if self._chunk_views is None:
            try:
                # Every block, per layer, as views of the whole buffer: made once.
                self._chunk_views = [self._chunk_view(cache) for cache in self._caches]
            except RuntimeError:  # a buffer that is not one contiguous tensor
                self._chunk_views = []
        return bool(self._chunk_views)

    def write_one(self, block_id: int, kv: torch.Tensor) -> None:
        """Copy one block ``kv`` ``[layers, 2, H, N, head]`` (host) into ``block_id``, when
        :attr:`direct`.

        One copy per layer, from the chunk's bytes into the buffer: a load touches its bytes
        once after they arrive, while the next chunks are still arriving.
        """
        if not self.direct or self._chunk_views is None:
            raise RuntimeError("write_one needs a direct codec: stage and write() instead")
        for layer, view in enumerate(self._chunk_views):
            view[block_id].copy_(kv[layer])

    def write_direct(self, block_ids: Sequence[int], blocks: torch.Tensor) -> None:
        """Copy host ``blocks`` ``[n, layers, 2, H, N, head]`` (any strides: a view of files
        read back to back) into ``block_ids``, when :attr:`direct`.

        One copy per layer for all the blocks (per run of consecutive ids when there are few
        runs, else indexed by the ids), made by numpy on this thread. Measured on 2 loaded
        cores, 64 blocks of 8 layers (32 MiB) in batches of 7, one copy per layer and half:
        1024 per-block torch copies 7-10 ms; batched torch copies 4.2 ms (2 OpenMP threads),
        3.1 ms (1 thread), 5.8 ms indexed (``index_put_``); numpy 2.7 ms, 2.5 ms indexed.
        torch splits a copy of over 32768 elements across its OpenMP threads: with OpenMP's
        default ``OMP_WAIT_POLICY=ACTIVE`` on busy cores each split waited for a spinning
        thread to get a core (120-180 ms instead of 5 ms: the "batched copies 10x slower"
        seen before), and vLLM's CPU worker forbids changing torch's thread count. numpy
        never splits.
        """
        views = self._numpy_views()
        if blocks.shape[0] != len(block_ids):
            raise ValueError(f"{blocks.shape[0]} blocks for {len(block_ids)} block ids")
        source = blocks.view(_bits(blocks.dtype)).numpy()
        runs = list(_runs(block_ids))
        if len(runs) > 4:
            index = np.asarray(block_ids, dtype=np.intp)
            for layer, view in enumerate(views):
                view[index] = source[:, layer]
            return
        for first, start, count in runs:
            part = source[first : first + count]
            for layer, view in enumerate(views):
                np.copyto(view[start : start + count], part[:, layer])

    @property
    def addressable(self) -> bool:
        """Whether a chunk's payload can be read straight into a block (:meth:`targets`):
        host memory, one contiguous tensor per layer, a chunk's layer the block's own bytes
        (``layout.block_format``), as on CPU."""
        if self._bytes is None:
            self._bytes = []
            if self.device.type == "cpu" and block_bytes_format(self.layout.device):
                try:
                    self._bytes = [
                        cache.view(torch.uint8).numpy().data.cast("B") for cache in self._caches
                    ]
                except (RuntimeError, TypeError, ValueError):  # not contiguous
                    self._bytes = []
        return bool(self._bytes)

    def targets(self, block_id: int) -> list[memoryview]:
        """The bytes of ``block_id`` that a chunk's payload fills, in the payload's order (one
        run per layer), for ``os.readv``; needs :attr:`addressable`."""
        if not self.addressable or self._bytes is None:
            raise RuntimeError("this KV buffer cannot be addressed as runs of bytes")
        blocks = self._caches[0].shape[0]
        if not 0 <= block_id < blocks:
            raise ValueError(f"block {block_id} is outside the KV buffer's {blocks} blocks")
        lay = self.layout
        size = 2 * lay.kv_heads * lay.block_size * lay.head_size * self.dtype.itemsize
        base = block_id * size
        return [layer[base : base + size] for layer in self._bytes]

    def _numpy_views(self) -> list[npt.NDArray[np.integer]]:
        """:attr:`direct`'s views as same-width integer arrays (numpy has no bfloat16; a
        bit-exact copy needs no float type), made once."""
        if not self.direct or self._chunk_views is None:
            raise RuntimeError("write_direct needs a direct codec: use write() instead")
        if self._np_views is None:
            bits = _bits(self.dtype)
            self._np_views = [view.view(bits).numpy() for view in self._chunk_views]
        return self._np_views

    def staging(self, n: int) -> torch.Tensor:
        """A host buffer for ``n`` blocks in the chunk layout, to decode chunks into.

        Reused from load to load (loads run one at a time, in the forward pass's thread):
        touching fresh pages for every load costs more than the copies themselves.
        """
        lay = self.layout
        if self._staging is None or self._staging.shape[0] < n:
            self._staging = torch.empty(
                (n, lay.layers, 2, lay.kv_heads, lay.block_size, lay.head_size),
                dtype=self.dtype,
                pin_memory=self.device.type == "cuda",
            )
        return self._staging[:n]

    def write(self, block_ids: Sequence[int], blocks: torch.Tensor) -> None:
        """Copy ``blocks`` ``[n, layers, 2, H, N, head]`` into ``block_ids``."""
        if blocks.shape[0] != len(block_ids):
            raise ValueError(f"{blocks.shape[0]} blocks for {len(block_ids)} block ids")
        index = torch.tensor(list(block_ids), dtype=torch.long, device=self.device)
        source = blocks.to(self.device, non_blocking=True)
        lay = self.layout
        raw = torch.empty(
            (len(block_ids), lay.kv_heads, lay.block_size, 2 * lay.head_size),
            dtype=self.dtype,
            device=self.device,
        )
        view = self._chunk_view(raw)
        for layer, cache in enumerate(self._caches):
            view.copy_(source[:, layer])
            cache.index_copy_(0, index, raw)


def _no_wait() -> None:
    return


def _runs(block_ids: Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """(position in ``block_ids``, first block id, length) of each run of consecutive ids."""
    first = 0
    for i in range(1, len(block_ids) + 1):
        if i == len(block_ids) or block_ids[i] != block_ids[i - 1] + 1:
            yield first, block_ids[first], i - first
            first = i


def _bits(dtype: torch.dtype) -> torch.dtype:
    """The integer type of ``dtype``'s width."""
    return {2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]
