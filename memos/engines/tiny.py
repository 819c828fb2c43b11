"""Tiny Llama-architecture models built locally: real transformer arithmetic, random weights.

Tests and benchmarks need a causal LM without a model hub. :func:`build_tiny_llama` creates one
from a ``LlamaConfig`` with a fixed seed, plus a byte-level tokenizer built with ``tokenizers``
(a BPE with no merges over the 256 byte symbols, and two special tokens), and saves both to a
directory that :class:`memos.engines.hf.HFEngine` loads like any Hugging Face model. The same
spec and seed always give the same weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

BOS = "<s>"
EOS = "</s>"
BYTE_VOCAB = 256


@dataclass(frozen=True, slots=True)
class TinyLlamaSpec:
    """A Llama's sizes. The defaults make a ~0.2M-parameter model for unit tests."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    vocab: int = 320
    max_positions: int = 4096
    tie_embeddings: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.vocab < BYTE_VOCAB + 2:
            raise ValueError(f"vocab must hold the {BYTE_VOCAB} bytes and 2 specials")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError("hidden must divide by heads, and heads by kv_heads")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def parameter_count(self) -> int:
        """Exactly what ``model.num_parameters()`` reports for this spec."""
        d, kv = self.hidden, self.kv_heads * self.head_dim
        attention = d * d * 2 + d * kv * 2  # q, o; k, v (no biases)
        mlp = 3 * d * self.intermediate
        per_layer = attention + mlp + 2 * d  # two RMSNorm weights
        embeddings = self.vocab * d * (1 if self.tie_embeddings else 2)
        return embeddings + self.layers * per_layer + d  # final norm

    def config(self) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=self.vocab,
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            max_position_embeddings=self.max_positions,
            tie_word_embeddings=self.tie_embeddings,
            bos_token_id=BYTE_VOCAB,
            eos_token_id=BYTE_VOCAB + 1,
            pad_token_id=BYTE_VOCAB + 1,
        )


#: About 52M parameters: the benchmark's model (8 layers, GQA 8/4, head dim 64, vocab 32000).
BENCH_SPEC = TinyLlamaSpec(
    hidden=512, layers=8, heads=8, kv_heads=4, intermediate=1024, vocab=32000, max_positions=16384
)


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: ids 0..255 are the bytes, then ``<s>`` and ``</s>``."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    assert len(vocab) == BYTE_VOCAB
    vocab[BOS] = BYTE_VOCAB
    vocab[EOS] = BYTE_VOCAB + 1
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=EOS
    )


def build_tiny_llama(directory: Path | str, spec: TinyLlamaSpec | None = None) -> Path:
    """Build ``spec``'s model from its seed; save it and the tokenizer to ``directory``."""
    spec = spec or TinyLlamaSpec()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(spec.seed)
        model = LlamaForCausalLM(spec.config())
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(out)
    byte_level_tokenizer().save_pretrained(out)
    (out / "memos_tiny_spec.txt").write_text(
        "".join(f"{k} = {v}\n" for k, v in asdict(spec).items())
    )
    return out
