"""The Hugging Face engine: a causal LM from a local directory, prefilled into KV chunks and back.

``HFEngine`` loads a model and its tokenizer from a local path (never a hub), tokenizes,
prefills token ids into a ``DynamicCache``, cuts the cache into fixed-size token chunks, builds
a cache back from stored chunks and continues from it: :meth:`HFEngine.save` and
:meth:`HFEngine.restore` tie those to an :class:`~memos.tiers.activation.ActivationStore`.

It speaks transformers' current cache API (``DynamicCache``, ``Cache.update``, the model's
``cache`` argument), not the legacy tuples. Only decoder models whose every layer is full
attention are supported: a sliding-window layer keeps only its window, so its chunks would not
cover the prefix they claim.

A restored cache always leaves at least the last prompt token to compute, as vLLM does: the
first output token needs that position's logits.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import xxhash
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from memos.tiers.activation.chunk import Chunk, dtype_name, encode, torch_dtype
from memos.tiers.activation.keys import DEFAULT_NONE_HASH, Adapter, ModelLayout
from memos.tiers.activation.store import ActivationStore


@dataclass(frozen=True, slots=True)
class Step:
    """The state after feeding tokens: the cache and the logits of the last position."""

    cache: DynamicCache
    logits: torch.Tensor

    @property
    def next_token(self) -> int:
        return int(self.logits.argmax())


@dataclass(frozen=True, slots=True)
class Saved:
    keys: tuple[bytes, ...]
    already_stored: int
    written: int


@dataclass(frozen=True, slots=True)
class Restored:
    """A cache rebuilt from stored chunks, holding the first ``tokens`` prompt tokens."""

    cache: DynamicCache
    tokens: int
    chunks: int


def model_digest(path: Path) -> str:
    """A content digest of what determines a model's KV: its config and weight files.

    Two copies of one model share chunks wherever they live; a changed weight or RoPE setting
    changes every key. XXH3-128 identifies, it does not authenticate.
    """
    digest = xxhash.xxh3_128()
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not weights:
        raise FileNotFoundError(f"no weight files (*.safetensors) in {path}")
    for file in [path / "config.json", *weights]:
        digest.update(file.name.encode())
        with open(file, "rb") as f:
            while block := f.read(16 << 20):
                digest.update(block)
    return digest.hexdigest()


class HFEngine:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        layout: ModelLayout,
        *,
        none_hash: bytes = DEFAULT_NONE_HASH,
    ) -> None:
        config = model.config.get_text_config(decoder=True)
        layer_types = getattr(config, "layer_types", None) or []
        if any(t != "full_attention" for t in layer_types):
            raise ValueError(f"only full-attention models are supported, got {set(layer_types)}")
        model.train(False)
        self.model = model
        self.tokenizer = tokenizer
        self.layout = layout
        self.none_hash = none_hash
        params = inspect.signature(model.forward).parameters
        # transformers 5 renamed ``past_key_values`` to ``cache``; accept either release line.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        model_id: str | None = None,
        dtype: str = "float32",
        chunk_tokens: int = 256,
        none_hash: bytes = DEFAULT_NONE_HASH,
    ) -> HFEngine:
        """Load a model directory. ``model_id`` defaults to a digest of its config and weights."""
        path = Path(path)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype(dtype), local_files_only=True
        )
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        layout = layout_of(model, model_id or f"hf:{model_digest(path)}", chunk_tokens)
        return cls(model, tokenizer, layout, none_hash=none_hash)

    # -- tokens and keys -------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(token_ids)))

    def keys(
        self,
        token_ids: Sequence[int],
        *,
        adapter: Adapter | None = None,
        cache_salt: str | None = None,
    ) -> list[bytes]:
        return self.layout.keys(
            token_ids, adapter=adapter, cache_salt=cache_salt, root=self.none_hash
        )

    # -- forward passes ---------------------------------------------------------------------

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.model.config)

    def feed(self, token_ids: Sequence[int], cache: DynamicCache | None = None) -> Step:
        """Run the tokens of ``token_ids`` that ``cache`` does not hold yet."""
        cache = cache if cache is not None else self.new_cache()
        start = cache.get_seq_length()
        if start >= len(token_ids):
            raise ValueError(
                f"the cache holds {start} tokens: nothing of {len(token_ids)} left to compute"
            )
        ids = torch.tensor([list(token_ids[start:])], dtype=torch.long)
        kwargs = {self._cache_arg: cache}
        with torch.inference_mode():
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **kwargs)
        return Step(cache=cache, logits=out.logits[0, -1].float())

    def prefill(self, token_ids: Sequence[int]) -> Step:
        return self.feed(token_ids)

    def generate(
        self, token_ids: Sequence[int], max_new_tokens: int, cache: DynamicCache | None = None
    ) -> list[int]:
        """Greedy continuation of ``token_ids``, reusing whatever prefix ``cache`` holds."""
        step = self.feed(token_ids, cache)
        out = [step.next_token]
        sequence = [*token_ids, out[-1]]
        eos = self.model.generation_config.eos_token_id
        while len(out) < max_new_tokens and out[-1] != eos:
            step = self.feed(sequence, step.cache)
            out.append(step.next_token)
            sequence.append(out[-1])
        return out

    # -- cache <-> chunks ---------------------------------------------------------------------

    def cut(self, cache: DynamicCache, chunks: int, first: int = 0) -> list[torch.Tensor]:
        """Chunks ``first..chunks-1`` of ``cache``, each [layers, 2, KV heads, tokens, head dim]."""
        n = self.layout.chunk_tokens
        if cache.get_seq_length() < chunks * n:
            raise ValueError(f"the cache holds {cache.get_seq_length()} tokens, not {chunks * n}")
        out = []
        for index in range(first, chunks):
            s, e = index * n, (index + 1) * n
            per_layer = []
            for layer in range(len(cache.layers)):
                keys, values = layer_kv(cache, layer)
                per_layer.append(torch.stack((keys[0, :, s:e], values[0, :, s:e])))
            out.append(torch.stack(per_layer))
        return out

    def rebuild(self, chunks: Sequence[Chunk], tokens: int | None = None) -> DynamicCache:
        """A cache holding the first ``tokens`` (default: all) tokens of consecutive chunks."""
        layout = self.layout
        total = sum(chunk.header.tokens for chunk in chunks)
        tokens = total if tokens is None else tokens
        if not 0 <= tokens <= total:
            raise ValueError(f"cannot keep {tokens} tokens of {total}")
        kv = torch.empty(
            (layout.layers, 2, layout.kv_heads, total, layout.head_dim),
            dtype=torch_dtype(layout.dtype),
        )
        at = 0
        for chunk in chunks:
            if not chunk.header.matches(layout):
                raise ValueError("a chunk of another model layout cannot enter this cache")
            width = chunk.header.tokens
            chunk.copy_into(kv[:, :, :, at : at + width])
            at += width
        cache = self.new_cache()
        if tokens:
            for layer in range(layout.layers):
                _install(
                    cache,
                    layer,
                    kv[layer, 0, :, :tokens].unsqueeze(0),
                    kv[layer, 1, :, :tokens].unsqueeze(0),
                )
        if cache.get_seq_length() != tokens:
            raise RuntimeError(f"rebuilt cache holds {cache.get_seq_length()}, not {tokens}")
        return cache

    # -- with a store -------------------------------------------------------------------------

    def save(
        self,
        store: ActivationStore,
        token_ids: Sequence[int],
        *,
        adapter: Adapter | None = None,
        cache_salt: str | None = None,
        step: Step | None = None,
    ) -> Saved:
        """Store every full chunk of ``token_ids`` that the store lacks (prefilling if needed)."""
        keys = self.keys(token_ids, adapter=adapter, cache_salt=cache_salt)
        have = store.lookup(keys)
        if have == len(keys):
            return Saved(keys=tuple(keys), already_stored=have, written=0)
        if step is None or step.cache.get_seq_length() < len(keys) * self.layout.chunk_tokens:
            step = self.prefill(token_ids)
        tensors = self.cut(step.cache, len(keys), first=have)
        items = [
            (key, encode(key, self.layout, kv))
            for key, kv in zip(keys[have:], tensors, strict=True)
        ]
        accepted = store.put_many(items)
        return Saved(keys=tuple(keys), already_stored=have, written=sum(1 for n in accepted if n))

    def restore(
        self,
        store: ActivationStore,
        token_ids: Sequence[int],
        *,
        adapter: Adapter | None = None,
        cache_salt: str | None = None,
    ) -> Restored:
        """Rebuild the longest stored prefix of ``token_ids``, leaving at least one token to run."""
        keys = self.keys(token_ids, adapter=adapter, cache_salt=cache_salt)
        chunks = store.fetch(keys, layout=self.layout) if keys else []
        tokens = min(sum(c.header.tokens for c in chunks), max(len(token_ids) - 1, 0))
        return Restored(cache=self.rebuild(chunks, tokens), tokens=tokens, chunks=len(chunks))

    def first_token(
        self,
        store: ActivationStore | None,
        token_ids: Sequence[int],
        *,
        adapter: Adapter | None = None,
        cache_salt: str | None = None,
    ) -> Step:
        """Time-to-first-token path: restore what the store has, compute the rest."""
        if store is None:
            return self.prefill(token_ids)
        restored = self.restore(store, token_ids, adapter=adapter, cache_salt=cache_salt)
        return self.feed(token_ids, restored.cache)


def _install(cache: DynamicCache, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Put a layer's restored tensors into an empty ``cache`` without copying them again.

    ``Cache.update`` concatenates onto an empty tensor, a second full copy of the restored KV
    (tens of MB, mostly page faults on fresh memory). A plain ``DynamicLayer`` keeps its
    tensors as ``keys`` / ``values`` after ``lazy_initialization``, so they are handed over;
    any other layer type, or a transformers release without that shape, goes through
    ``update``.
    """
    entry = cache.layers[layer] if layer < len(cache.layers) else None
    if type(entry) is DynamicLayer and not entry.is_initialized:
        try:
            entry.lazy_initialization(keys, values)
            entry.keys, entry.values = keys, values
            return
        except (TypeError, AttributeError):
            entry.is_initialized = False
    cache.update(keys, values, layer)


def layer_kv(cache: DynamicCache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer ``layer``'s key and value tensors [batch, KV heads, tokens, head dim]."""
    entry = cache.layers[layer]
    keys, values = getattr(entry, "keys", None), getattr(entry, "values", None)
    if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
        raise ValueError(f"cache layer {layer} holds no key/value tensors")
    return keys, values


def layout_of(model: PreTrainedModel, model_id: str, chunk_tokens: int) -> ModelLayout:
    """The KV layout of an already loaded ``model``."""
    config = model.config.get_text_config(decoder=True)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return ModelLayout(
        model_id=model_id,
        dtype=dtype_name(model.dtype),
        chunk_tokens=chunk_tokens,
        layers=config.num_hidden_layers,
        kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        head_dim=head_dim,
    )
