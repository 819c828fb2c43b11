"""Chunk keys: vLLM's ``sha256_cbor`` prefix-cache block hashes, behind a model-layout fingerprint.

A chunk's chain hash is computed exactly as vLLM 0.33 computes ``request.block_hashes`` with
``--prefix-caching-hash-algo sha256_cbor`` (``vllm/v1/core/kv_cache_utils.py``)::

    h_i = sha256(cbor2.dumps((h_{i-1} or NONE_HASH, tuple(chunk_token_ids), extra_keys_i),
                             canonical=True))
    NONE_HASH = sha256(cbor2.dumps("vllm-none-hash", canonical=True))

``extra_keys_i`` is ``None`` when empty, else a tuple in vLLM's order: the adapter as
``("lora", name, path)`` on every chunk, then ``("cache_salt", salt)`` on chunk 0 only (the chain
carries the salt into every later hash). So the daemon and a vLLM engine started with
``sha256_cbor``, an unset (or shared) ``PYTHONHASHSEED`` and ``block_size == chunk_tokens``
derive the same hashes for the same tokens. Older vLLM releases (before the domain-tagged
extra keys and the fixed seed) hashed a bare LoRA name and salt and seeded with random bytes:
those hashes are not reproducible and are not supported.

Only full chunks are hashed: a trailing partial chunk has no key, as in vLLM.

The store's key prefixes the chain hash with a fingerprint of the model and its KV layout
(model id, dtype, chunk tokens, layers, KV heads, head dim), so two models, or one model at two
dtypes or chunk sizes, never share a key even for identical tokens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2

#: vLLM's ``DEFAULT_NONE_HASH_SEED``: the chain's root when ``PYTHONHASHSEED`` is unset.
NONE_HASH_SEED = "vllm-none-hash"

FINGERPRINT_BYTES = 16
CHAIN_HASH_BYTES = 32
KEY_BYTES = FINGERPRINT_BYTES + CHAIN_HASH_BYTES

# Bumped whenever the fingerprint's inputs change, so old keys can never alias new ones.
_LAYOUT_SCHEMA = "memos-kv-layout/1"

SUPPORTED_DTYPES = ("float32", "float16", "bfloat16")


def sha256_cbor(obj: Any) -> bytes:
    """vLLM's ``sha256_cbor``: SHA-256 of the canonical CBOR encoding of ``obj``."""
    return hashlib.sha256(cbor2.dumps(obj, canonical=True)).digest()


def none_hash(seed: str = NONE_HASH_SEED) -> bytes:
    """The chain's root. Pass vLLM's ``PYTHONHASHSEED`` as ``seed`` when the engine sets one."""
    return sha256_cbor(seed)


DEFAULT_NONE_HASH = none_hash()


@dataclass(frozen=True, slots=True)
class Adapter:
    """A LoRA adapter's identity as vLLM hashes it: its name and the path it was loaded from.

    The path is part of the identity: re-pointing a name at new weights changes every key.
    """

    name: str
    path: str

    def __post_init__(self) -> None:
        if not self.name or not self.path:
            raise ValueError("an adapter needs a non-empty name and path")


def extra_keys(
    chunk_index: int, adapter: Adapter | None = None, cache_salt: str | None = None
) -> tuple[Any, ...] | None:
    """The ``extra_keys`` vLLM 0.33 folds into chunk ``chunk_index``'s hash (no multimodal)."""
    keys: list[tuple[str, ...]] = []
    if adapter is not None:
        keys.append(("lora", adapter.name, adapter.path))
    if chunk_index == 0 and cache_salt:
        keys.append(("cache_salt", cache_salt))
    return tuple(keys) if keys else None


def chain_hashes(
    token_ids: Sequence[int],
    chunk_tokens: int,
    *,
    adapter: Adapter | None = None,
    cache_salt: str | None = None,
    root: bytes = DEFAULT_NONE_HASH,
) -> list[bytes]:
    """The chain hash of every full chunk of ``token_ids``, in order."""
    if chunk_tokens <= 0:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    hashes: list[bytes] = []
    parent = root
    tokens = list(token_ids)
    for index in range(len(tokens) // chunk_tokens):
        start = index * chunk_tokens
        block = tuple(tokens[start : start + chunk_tokens])
        parent = sha256_cbor((parent, block, extra_keys(index, adapter, cache_salt)))
        hashes.append(parent)
    return hashes


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """What a chunk's bytes mean: whose model, and how its KV cache is laid out."""

    model_id: str
    dtype: str
    chunk_tokens: int
    layers: int
    kv_heads: int
    head_dim: int
    fingerprint: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.model_id:
            raise ValueError("model_id must not be empty")
        if self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {SUPPORTED_DTYPES}")
        for name in ("chunk_tokens", "layers", "kv_heads", "head_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        digest = sha256_cbor(
            [
                _LAYOUT_SCHEMA,
                self.model_id,
                self.dtype,
                self.chunk_tokens,
                self.layers,
                self.kv_heads,
                self.head_dim,
            ]
        )
        object.__setattr__(self, "fingerprint", digest[:FINGERPRINT_BYTES])

    @property
    def element_bytes(self) -> int:
        return 4 if self.dtype == "float32" else 2

    @property
    def chunk_bytes(self) -> int:
        """Payload bytes of one full chunk: K and V of every layer."""
        return (
            2 * self.layers * self.kv_heads * self.chunk_tokens * self.head_dim * self.element_bytes
        )

    def keys(
        self,
        token_ids: Sequence[int],
        *,
        adapter: Adapter | None = None,
        cache_salt: str | None = None,
        root: bytes = DEFAULT_NONE_HASH,
    ) -> list[bytes]:
        """The store keys (fingerprint + chain hash) of every full chunk of ``token_ids``."""
        return [
            self.fingerprint + h
            for h in chain_hashes(
                token_ids, self.chunk_tokens, adapter=adapter, cache_salt=cache_salt, root=root
            )
        ]


def split_key(key: bytes) -> tuple[bytes, bytes]:
    """A store key's (fingerprint, chain hash)."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"a chunk key has {KEY_BYTES} bytes, got {len(key)}")
    return key[:FINGERPRINT_BYTES], key[FINGERPRINT_BYTES:]
