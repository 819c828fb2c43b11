"""Small real chunks for level and store tests: random KV of a toy layout, encoded."""

from __future__ import annotations

import torch

from memos.tiers.activation.chunk import encode
from memos.tiers.activation.keys import ModelLayout

LAYOUT = ModelLayout("toy-model", "float32", chunk_tokens=8, layers=2, kv_heads=2, head_dim=4)


def make_chunks(
    n: int, *, seed: int = 0, layout: ModelLayout = LAYOUT
) -> list[tuple[bytes, bytes]]:
    """``n`` consecutive chunks of one token sequence: (key, encoded bytes)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 1000, (n * layout.chunk_tokens,), generator=gen).tolist()
    keys = layout.keys(tokens)
    shape = (layout.layers, 2, layout.kv_heads, layout.chunk_tokens, layout.head_dim)
    return [(key, encode(key, layout, torch.randn(shape, generator=gen))) for key in keys]


def flip_byte(blob: bytes, offset: int) -> bytes:
    damaged = bytearray(blob)
    damaged[offset] ^= 0x5A
    return bytes(damaged)
