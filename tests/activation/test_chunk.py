"""The chunk format: exact round trips, and every kind of damage detected."""

from __future__ import annotations

import struct

import pytest
import torch

from memos.tiers.activation.chunk import HEADER_BYTES, decode, encode
from memos.tiers.activation.errors import CorruptChunk
from memos.tiers.activation.keys import ModelLayout
from tests.activation._chunks import LAYOUT, flip_byte, make_chunks


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip_is_bit_exact(dtype: torch.dtype) -> None:
    name = str(dtype).removeprefix("torch.")
    layout = ModelLayout("m", name, chunk_tokens=8, layers=3, kv_heads=2, head_dim=4)
    key = layout.keys(list(range(8)))[0]
    kv = torch.randn(3, 2, 2, 8, 4).to(dtype)
    blob = encode(key, layout, kv)
    assert len(blob) == HEADER_BYTES + layout.chunk_bytes
    chunk = decode(blob, key)
    assert chunk.header.shape == (3, 2, 2, 8, 4)
    assert chunk.header.matches(layout)
    assert chunk.key == key
    out = chunk.tensor()
    assert out.dtype == dtype
    assert torch.equal(out.view(torch.uint8), kv.view(torch.uint8))


def test_copy_into_a_strided_destination() -> None:
    key, blob = make_chunks(1)[0]
    chunk = decode(blob, key)
    big = torch.zeros(LAYOUT.layers, 2, LAYOUT.kv_heads, 3 * LAYOUT.chunk_tokens, LAYOUT.head_dim)
    chunk.copy_into(big[:, :, :, 8:16])
    assert torch.equal(big[:, :, :, 8:16], chunk.tensor())
    assert big[:, :, :, :8].abs().sum() == 0
    with pytest.raises(ValueError):
        chunk.copy_into(big)


def test_encode_refuses_a_foreign_key_or_shape() -> None:
    other = ModelLayout("other", "float32", 8, 2, 2, 4)
    key = other.keys(list(range(8)))[0]
    kv = torch.zeros(2, 2, 2, 8, 4)
    with pytest.raises(ValueError, match="layout"):
        encode(key, LAYOUT, kv)
    with pytest.raises(ValueError, match="shape"):
        encode(LAYOUT.keys(list(range(8)))[0], LAYOUT, torch.zeros(2, 2, 2, 8, 5))
    with pytest.raises(ValueError, match="dtype"):
        encode(LAYOUT.keys(list(range(8)))[0], LAYOUT, kv.half())


def _damaged() -> dict[str, tuple[bytes, bytes]]:
    (key, blob), (other_key, _) = make_chunks(2)
    header_tokens = bytearray(blob)
    struct.pack_into("<I", header_tokens, 28, 4)  # tokens 8 -> 4, shape field left at 8
    resized = bytearray(blob)
    struct.pack_into("<I", resized, 28, 4)
    struct.pack_into("<5I", resized, 32, 2, 2, 2, 4, 4)
    return {
        "payload bit": (key, flip_byte(blob, HEADER_BYTES + 17)),
        "last byte": (key, flip_byte(blob, len(blob) - 1)),
        "checksum field": (key, flip_byte(blob, 113)),
        "fingerprint field": (key, flip_byte(blob, 70)),
        "magic": (key, b"XKVC" + blob[4:]),
        "version": (key, blob[:4] + struct.pack("<H", 9) + blob[6:]),
        "dtype code": (key, blob[:8] + b"\x07" + blob[9:]),
        "tokens vs shape": (key, bytes(header_tokens)),
        "consistent but wrong length": (key, bytes(resized)),
        "truncated": (key, blob[:-5]),
        "header only": (key, blob[:HEADER_BYTES]),
        "too short": (key, blob[:40]),
        "extra bytes": (key, blob + b"\0"),
        "empty": (key, b""),
        "stored under another key": (other_key, blob),
    }


@pytest.mark.parametrize("case", list(_damaged()))
def test_damage_is_detected(case: str) -> None:
    key, blob = _damaged()[case]
    with pytest.raises(CorruptChunk):
        decode(blob, key)


def test_checksum_covers_the_header() -> None:
    key, blob = make_chunks(1)[0]
    # Changing the chunk_tokens field keeps every structural check valid (tokens 8 <= 9)...
    tampered = bytearray(blob)
    struct.pack_into("<I", tampered, 24, 9)
    with pytest.raises(CorruptChunk, match="checksum"):
        decode(bytes(tampered), key)
