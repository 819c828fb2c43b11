"""Copy whole blocks between vLLM's paged KV buffer and the chunk layout.

vLLM hands the connector one tensor per attention layer, a ``[num_blocks, H, N, C]`` view
(blocks first, ``C = 2 * head_size`` elements). A chunk holds one block of every layer as
``[layers, 2 (K, V), H, N, head_size]``, the activation tier's layout. How K and V sit inside
a block depends on the attention backend:

- ``cpu``: the CPU backend (``CPU_ATTN``) views a block as ``[H, 2 * N, head]`` and splits it
  at ``N``: the block's K rows, then its V rows. Checked against the model's own K and V in
  ``tests/vllm/test_layout.py``.
- anything else: each token's ``C`` elements are read as ``[K | V]``. Whatever a backend's
  real order, the copy out and the copy back in are exact inverses, and the device kind is
  part of the layout fingerprint, so blocks are only ever read back by the same layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from memos.integrations.vllm.layout import EngineLayout, UnsupportedLayout


class BlockCodec:
    def __init__(
        self, kv_caches: Mapping[str, torch.Tensor], layer_names: Sequence[str], layout: EngineLayout
    ) -> None:
        missing = [name for name in layer_names if name not in kv_caches]
        if missing:
            raise UnsupportedLayout(f"no KV cache registered for layers {missing}")
        self.layout = layout
        self._views = [self._view(kv_caches[name]) for name in layer_names]
        self.device = self._views[0].device

    def _view(self, cache: torch.Tensor) -> torch.Tensor:
        """``cache`` as ``[num_blocks, 2, H, N, head]`` (a view: writes reach the buffer)."""
        lay = self.layout
        if cache.dim() != 4:
            raise UnsupportedLayout(f"a KV cache of shape {tuple(cache.shape)}: expected 4 dims")
        blocks, heads, tokens, width = cache.shape
        if (heads, tokens, width) != (lay.kv_heads, lay.block_size, 2 * lay.head_size):
            raise UnsupportedLayout(
                f"a KV cache of shape {tuple(cache.shape)} does not hold blocks of "
                f"{lay.kv_heads} heads x {lay.block_size} tokens x 2 x {lay.head_size}"
            )
        if lay.device == "cpu":
            # [B, H, N, 2*head] -> [B, H, 2*N, head] -> [B, H, 2, N, head]: what CPU_ATTN reads.
            five = cache.view(blocks, heads, 2 * tokens, lay.head_size).unflatten(2, (2, tokens))
            return five.permute(0, 2, 1, 3, 4)
        # [B, H, N, 2, head] -> [B, 2, H, N, head]
        return cache.unflatten(3, (2, lay.head_size)).permute(0, 3, 1, 2, 4)

    def read(self, block_ids: Sequence[int]) -> torch.Tensor:
        """A host copy of ``block_ids`` as ``[n, layers, 2, H, N, head]``, contiguous."""
        index = torch.tensor(list(block_ids), dtype=torch.long, device=self.device)
        lay = self.layout
        out = torch.empty(
            (len(block_ids), lay.layers, 2, lay.kv_heads, lay.block_size, lay.head_size),
            dtype=self._views[0].dtype,
            device="cpu",
            pin_memory=False,
        )
        for layer, view in enumerate(self._views):
            out[:, layer].copy_(view.index_select(0, index))
        return out

    def write(self, block_ids: Sequence[int], blocks: torch.Tensor) -> None:
        """Copy ``blocks`` ``[n, layers, 2, H, N, head]`` into ``block_ids``."""
        if blocks.shape[0] != len(block_ids):
            raise ValueError(f"{blocks.shape[0]} blocks for {len(block_ids)} block ids")
        index = torch.tensor(list(block_ids), dtype=torch.long, device=self.device)
        source = blocks.to(self.device, non_blocking=True)
        for layer, view in enumerate(self._views):
            view.index_copy_(0, index, source[:, layer])
