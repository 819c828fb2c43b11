"""Chunk keys: vLLM's sha256_cbor block hashes, and the isolation the key prefix gives."""

from __future__ import annotations

import hashlib

import cbor2
import pytest

from memos.tiers.activation.keys import (
    DEFAULT_NONE_HASH,
    KEY_BYTES,
    Adapter,
    ModelLayout,
    chain_hashes,
    extra_keys,
    none_hash,
    split_key,
)

# Produced by vLLM 0.33.0's own code (``init_none_hash``, ``generate_block_hash_extra_keys``,
# ``hash_block_tokens`` from vllm/v1/core/kv_cache_utils.py with ``sha256_cbor`` from
# vllm/utils/hashing.py, PYTHONHASHSEED unset) for tokens 1000..1039 and block size 16.
VLLM_NONE_HASH = "9bd96a485ad84efdafb72ee48a1d7a69bcead0f8f0433173941b276b9581eef0"
VLLM_TOKENS = list(range(1000, 1040))
VLLM_ADAPTER = Adapter("sql-adapter", "/adapters/sql/v1")
VLLM_SALT = "tenant-a"
VLLM_CHAINS = {
    "plain": [
        "15528b726efb88cb4d9efc583657a821bceb1f67307c6e813417567050a24fdc",
        "b057b31190789434ae1b5f233801e9a318f5a49e9baf90762102e4d3c29c9005",
    ],
    "lora": [
        "533f9f38db663f7de4119213845370559b4c433a7507409befc605702dbdde46",
        "d7343511cacbf75f3c1804bb2c5dc7d562285e38aa218b50b123f2782197bf1b",
    ],
    "salt": [
        "cfba8387178753959571c517c1189716ba950c07f59532f9fbd84604dacc778d",
        "5a6df34c39017b0c9e12d5d064c4bf760b402dadd4240f9a2109235aa3b7f740",
    ],
    "lora_salt": [
        "6a295970de7e0986e5f545d3e9e52daf44300267f6e68b89de01ebee90d804f2",
        "7fd20e25657af38c2f7cf40b9149581bec6ea28eec46ac9fa6b9f1c26233f787",
    ],
}

LAYOUT = ModelLayout("model-a", "float32", chunk_tokens=16, layers=2, kv_heads=2, head_dim=8)


def test_none_hash_is_vllms() -> None:
    assert DEFAULT_NONE_HASH.hex() == VLLM_NONE_HASH
    assert none_hash("vllm-none-hash") == DEFAULT_NONE_HASH
    # A PYTHONHASHSEED shared with the engine gives another, equally reproducible root.
    assert none_hash("42") == hashlib.sha256(cbor2.dumps("42", canonical=True)).digest()


@pytest.mark.parametrize(
    ("case", "adapter", "salt"),
    [
        ("plain", None, None),
        ("lora", VLLM_ADAPTER, None),
        ("salt", None, VLLM_SALT),
        ("lora_salt", VLLM_ADAPTER, VLLM_SALT),
    ],
)
def test_chain_matches_vllm_golden_vectors(
    case: str, adapter: Adapter | None, salt: str | None
) -> None:
    got = chain_hashes(VLLM_TOKENS, 16, adapter=adapter, cache_salt=salt)
    assert [h.hex() for h in got] == VLLM_CHAINS[case]


def test_first_block_by_hand() -> None:
    """The first hash spelled out from the CBOR encoding, independent of the module."""
    encoded = cbor2.dumps((DEFAULT_NONE_HASH, tuple(range(4)), None), canonical=True)
    # array(3), bytes(32) root, array(4) of 0..3, null
    assert encoded == b"\x83\x58\x20" + DEFAULT_NONE_HASH + b"\x84\x00\x01\x02\x03\xf6"
    assert chain_hashes([0, 1, 2, 3], 4) == [hashlib.sha256(encoded).digest()]


def test_extra_keys_follow_vllm_order() -> None:
    adapter = Adapter("a", "/p")
    assert extra_keys(0) is None
    assert extra_keys(0, adapter, "s") == (("lora", "a", "/p"), ("cache_salt", "s"))
    assert extra_keys(1, adapter, "s") == (("lora", "a", "/p"),)
    assert extra_keys(1, None, "s") is None
    assert extra_keys(0, None, "") is None


def test_only_full_chunks_and_prefix_property() -> None:
    tokens = list(range(100))
    keys = LAYOUT.keys(tokens)
    assert len(keys) == 100 // 16
    assert all(len(k) == KEY_BYTES for k in keys)
    assert LAYOUT.keys(tokens[:50]) == keys[:3]
    changed = [*tokens[:40], 999, *tokens[41:]]
    other = LAYOUT.keys(changed)
    # Chunk 2 holds token 40: it and everything after it differ, the rest is shared.
    assert other[:2] == keys[:2]
    assert not set(other[2:]) & set(keys)


def test_adapter_salt_and_model_never_share_keys() -> None:
    tokens = list(range(64))
    variants = {
        "base": LAYOUT.keys(tokens),
        "adapter": LAYOUT.keys(tokens, adapter=Adapter("a", "/a/v1")),
        "adapter-new-path": LAYOUT.keys(tokens, adapter=Adapter("a", "/a/v2")),
        "salt": LAYOUT.keys(tokens, cache_salt="tenant-1"),
        "other-salt": LAYOUT.keys(tokens, cache_salt="tenant-2"),
        "other-model": ModelLayout("model-b", "float32", 16, 2, 2, 8).keys(tokens),
        "other-dtype": ModelLayout("model-a", "float16", 16, 2, 2, 8).keys(tokens),
        "other-heads": ModelLayout("model-a", "float32", 16, 2, 4, 8).keys(tokens),
    }
    seen: set[bytes] = set()
    for name, keys in variants.items():
        assert len(keys) == 4, name
        assert not seen & set(keys), f"{name} shares a key with another variant"
        seen |= set(keys)


def test_fingerprint_and_split() -> None:
    key = LAYOUT.keys(list(range(16)))[0]
    fingerprint, chain = split_key(key)
    assert fingerprint == LAYOUT.fingerprint
    assert chain == chain_hashes(list(range(16)), 16)[0]
    with pytest.raises(ValueError):
        split_key(key[:-1])


def test_layout_validation() -> None:
    with pytest.raises(ValueError, match="dtype"):
        ModelLayout("m", "int8", 16, 2, 2, 8)
    with pytest.raises(ValueError, match="layers"):
        ModelLayout("m", "float32", 16, 0, 2, 8)
    with pytest.raises(ValueError):
        Adapter("", "/p")
    assert LAYOUT.chunk_bytes == 2 * 2 * 2 * 16 * 8 * 4
