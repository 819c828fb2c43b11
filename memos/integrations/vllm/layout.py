"""The model-layout fingerprint of a vLLM engine's KV blocks, and their store keys.

A block's store key is a 16-byte fingerprint of what its bytes mean, then vLLM's own block
hash (``request.block_hashes``, ``sha256_cbor``), which already covers the tokens, the LoRA
adapter (name and path), the cache salt and multimodal inputs. The fingerprint covers what
the hash does not: the model, the KV dtype, the block size, the layers, KV heads and head size
of this rank's shard, the tensor-parallel rank and size, the vLLM version, the device kind and
the attention backend's byte layout, how a block's bytes sit in a chunk (``block_format``),
and the hash algorithm. Two engines share blocks exactly when all of these agree.

The daemon derives the same keys from token ids alone (:meth:`EngineLayout.keys`, with
``memos.tiers.activation.keys``): nothing here imports vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from memos.tiers.activation.keys import (
    DEFAULT_NONE_HASH,
    SUPPORTED_DTYPES,
    Adapter,
    ModelLayout,
)


def block_bytes_format(device: str) -> bool:
    """Whether a chunk's layer is a block's own bytes (the CPU backend's blocks), rather than
    K of every head, then V (``blocks.py``)."""
    return device.startswith("cpu")


def block_format(device: str) -> str:
    """How a block's bytes sit in a chunk, a term of the fingerprint (``blocks.py``). A change
    to how blocks are copied changes it, so that chunks stored the old way are misses, never
    misread: "packed" (each half, K and V, as the kernel packs it, K of every head first)
    was the CPU backend's format too before "block-bytes"."""
    return "block-bytes" if block_bytes_format(device) else "packed"


#: Hash algorithms whose block hashes are the same in every process (``sha256_cbor`` is
#: also the one the daemon reproduces; ``sha256`` hashes a pickle and is vLLM-only).
REPRODUCIBLE_HASH_ALGOS = ("sha256_cbor", "sha256")


class UnsupportedLayout(ValueError):
    """The engine's KV cache is not one the connector can move (it then stays idle)."""


@dataclass(frozen=True, slots=True)
class EngineLayout:
    model_id: str
    dtype: str  # float32 | float16 | bfloat16
    block_size: int
    layers: int  # attention layers on this rank
    kv_heads: int  # KV heads on this rank
    head_size: int
    tp_rank: int
    tp_size: int
    vllm_version: str
    device: str  # "cpu", "cuda", ...: the attention backend family, hence the byte layout
    hash_algo: str = "sha256_cbor"

    def __post_init__(self) -> None:
        if not 0 <= self.tp_rank < self.tp_size:
            raise ValueError(f"tp_rank {self.tp_rank} is outside tp_size {self.tp_size}")
        if self.dtype not in SUPPORTED_DTYPES:
            raise UnsupportedLayout(f"KV dtype {self.dtype} is not one of {SUPPORTED_DTYPES}")

    @property
    def engine_id(self) -> str:
        """The model id the fingerprint hashes: the model plus every engine-side term."""
        return (
            f"vllm-{self.vllm_version}/{self.device}/{block_format(self.device)}/{self.hash_algo}"
            f"/tp{self.tp_rank}of{self.tp_size}/{self.model_id}"
        )

    def model_layout(self) -> ModelLayout:
        """The activation tier's layout of these blocks (chunk tokens = block size)."""
        return ModelLayout(
            model_id=self.engine_id,
            dtype=self.dtype,
            chunk_tokens=self.block_size,
            layers=self.layers,
            kv_heads=self.kv_heads,
            head_dim=self.head_size,
        )

    @property
    def fingerprint(self) -> bytes:
        return self.model_layout().fingerprint

    def for_rank(self, tp_rank: int) -> EngineLayout:
        return EngineLayout(
            model_id=self.model_id,
            dtype=self.dtype,
            block_size=self.block_size,
            layers=self.layers,
            kv_heads=self.kv_heads,
            head_size=self.head_size,
            tp_rank=tp_rank,
            tp_size=self.tp_size,
            vllm_version=self.vllm_version,
            device=self.device,
            hash_algo=self.hash_algo,
        )

    def key_of(self, block_hash: bytes) -> bytes:
        """The store key of one of vLLM's block hashes."""
        return self.fingerprint + bytes(block_hash)

    def keys_of(self, block_hashes: Sequence[bytes]) -> list[bytes]:
        fingerprint = self.fingerprint
        return [fingerprint + bytes(h) for h in block_hashes]

    def keys(
        self,
        token_ids: Sequence[int],
        *,
        adapter: Adapter | None = None,
        cache_salt: str | None = None,
        root: bytes = DEFAULT_NONE_HASH,
    ) -> list[bytes]:
        """The keys vLLM's blocks of ``token_ids`` get, computed without vLLM.

        Holds for ``sha256_cbor`` only; ``root`` is ``none_hash(PYTHONHASHSEED)`` when the
        engine sets that variable.
        """
        if self.hash_algo != "sha256_cbor":
            raise ValueError(f"keys of a {self.hash_algo} engine cannot be computed outside vLLM")
        return self.model_layout().keys(
            token_ids, adapter=adapter, cache_salt=cache_salt, root=root
        )


def dtype_name(dtype: Any) -> str:
    """``torch.float16`` -> ``"float16"`` (any object whose str ends with the name)."""
    return str(dtype).rsplit(".", 1)[-1]


def layout_from_vllm(
    vllm_config: Any,
    kv_cache_config: Any,
    *,
    tp_rank: int,
    vllm_version: str,
    device: str,
    model_id: str | None = None,
) -> tuple[EngineLayout, list[str]]:
    """The layout of an engine, and its attention layers in model order.

    Reads only attributes of vLLM's config objects (``VllmConfig``, ``KVCacheConfig``), so
    it runs without importing vLLM. Raises :class:`UnsupportedLayout` for what the connector
    cannot move: several KV-cache groups (hybrid models), MLA, sliding windows, quantized
    (fp8) caches, pipeline parallelism.
    """
    parallel = vllm_config.parallel_config
    if getattr(parallel, "pipeline_parallel_size", 1) != 1:
        raise UnsupportedLayout("pipeline parallelism is not supported")
    groups = list(getattr(kv_cache_config, "kv_cache_groups", []) or [])
    if len(groups) != 1:
        raise UnsupportedLayout(f"{len(groups)} KV-cache groups: only one is supported")
    group = groups[0]
    spec = group.kv_cache_spec
    if type(spec).__name__ != "FullAttentionSpec":
        raise UnsupportedLayout(f"{type(spec).__name__} layers are not supported")
    head_size = int(spec.head_size)
    head_size_v = getattr(spec, "head_size_v", None)
    if head_size_v not in (None, head_size):
        raise UnsupportedLayout("K and V head sizes differ")
    quant = getattr(spec, "kv_quant_mode", None)
    if quant is not None and int(quant) != 0:
        raise UnsupportedLayout(f"quantized KV cache ({quant}) is not supported")
    cache_dtype = str(getattr(vllm_config.cache_config, "cache_dtype", "auto"))
    if cache_dtype != "auto":
        raise UnsupportedLayout(f"cache_dtype {cache_dtype} is not supported")
    algo = str(getattr(vllm_config.cache_config, "prefix_caching_hash_algo", "sha256"))
    if algo not in REPRODUCIBLE_HASH_ALGOS:
        raise UnsupportedLayout(
            f"prefix_caching_hash_algo {algo} seeds every process differently: use sha256_cbor"
        )
    layers = sorted(group.layer_names, key=_layer_order)
    model = vllm_config.model_config
    name = model_id or str(model.model)
    revision = getattr(model, "revision", None)
    if revision and not model_id:
        name = f"{name}@{revision}"
    layout = EngineLayout(
        model_id=name,
        dtype=dtype_name(spec.dtype),
        block_size=int(spec.block_size),
        layers=len(layers),
        kv_heads=int(spec.num_kv_heads),
        head_size=head_size,
        tp_rank=tp_rank,
        tp_size=int(parallel.tensor_parallel_size),
        vllm_version=vllm_version,
        device=device,
        hash_algo=algo,
    )
    return layout, layers


def _layer_order(name: str) -> tuple[int, str]:
    """Sort ``model.layers.10.self_attn.attn`` after ``model.layers.9...``."""
    for part in name.split("."):
        if part.isdigit():
            return int(part), name
    return -1, name
