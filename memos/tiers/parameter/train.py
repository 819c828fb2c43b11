"""Plaintext -> parameter: fine-tune a LoRA adapter on the texts of a set of memories.

``train_lora`` runs a real peft training loop (causal-LM loss, AdamW on the LoRA factors
only) over the given texts and returns the adapter, the loss of every step and the ids of
the memories it learned from (the new cube's parents). On the tiny local model a few dozen
steps take seconds on a CPU; on a real model it is a long job, so it reports progress
through a callback after every step and stops between steps when ``cancel`` is set.

The model is borrowed: adapter layers are injected into it for the run and removed at the
end (its modules, ``requires_grad`` flags and train/eval mode restored), so pass a model
that is not serving requests meanwhile (e.g. a second copy loaded for training).
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from memos.errors import InvalidArgument, MemosError
from memos.ids import is_valid_id
from memos.tiers.parameter.fingerprint import BaseModelSpec
from memos.tiers.parameter.weights import LoraModule, LoraWeights, lora_config, scale_of

_SLOT = "memos_train"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainingCancelled(MemosError):
    """The job's cancel event was set; ``losses`` holds the steps that ran."""

    code = "CANCELLED"

    def __init__(self, steps_done: int, losses: Sequence[float]) -> None:
        super().__init__(f"training cancelled after {steps_done} steps")
        self.steps_done = steps_done
        self.losses = tuple(losses)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    steps: int = 40
    learning_rate: float = 5e-3
    batch_size: int = 4
    #: Tokens per memory (longer texts are cut), BOS and EOS included.
    max_tokens: int = 256
    seed: int = 0

    def check(self) -> None:
        if self.rank < 1 or self.steps < 1 or self.batch_size < 1 or self.max_tokens < 3:
            raise InvalidArgument("rank, steps and batch_size must be >= 1, max_tokens >= 3")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InvalidArgument(f"learning_rate must be > 0, got {self.learning_rate}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise InvalidArgument(f"alpha must be > 0, got {self.alpha}")
        if not self.target_modules:
            raise InvalidArgument("target_modules is empty")


@dataclass(frozen=True, slots=True)
class TrainProgress:
    step: int
    steps: int
    loss: float
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class TrainResult:
    weights: LoraWeights
    #: The training loss of every step, in order.
    losses: tuple[float, ...]
    #: The memories the adapter was trained on (the new cube's parents).
    parents: tuple[str, ...]
    tokens: int
    seconds: float
    config: TrainConfig = field(default_factory=TrainConfig)

    def describe(self) -> dict[str, str]:
        """Provenance metadata for the trained adapter's record."""
        return {
            "train.steps": str(len(self.losses)),
            "train.loss_first": f"{self.losses[0]:.4f}",
            "train.loss_last": f"{self.losses[-1]:.4f}",
            "train.memories": str(len(self.parents)),
            "train.tokens": str(self.tokens),
        }


def encode_texts(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Each text as ``[BOS] + tokens + [EOS]``, cut to ``max_tokens``."""
    out = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        seq = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
        out.append(seq[:max_tokens])
    return out


def _batch(seqs: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def train_lora(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    parents: Sequence[str],
    config: TrainConfig | None = None,
    *,
    spec: BaseModelSpec | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Fine-tune a LoRA adapter of ``model`` on ``texts`` (the memories ``parents``)."""
    # peft (the `hf` extra) loads with a run, not with the tier: a daemon that only stores
    # adapters and drives a vLLM server runs without it.
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel

    config = config or TrainConfig()
    config.check()
    if not texts or len(texts) != len(parents):
        raise InvalidArgument(
            f"training needs one parent id per text, got {len(texts)} texts, {len(parents)} ids"
        )
    for parent in parents:
        if not is_valid_id(parent):
            raise InvalidArgument(f"parent {parent!r} is not a cube id")
    spec = spec or BaseModelSpec.from_model(model, "training")
    targets = spec.matching(config.target_modules)
    missing = [t for t in config.target_modules if not spec.matching([t])]
    if missing:
        raise InvalidArgument(f"target module {missing[0]!r} does not exist in the model")
    seqs = encode_texts(tokenizer, texts, config.max_tokens)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tuner = LoraModel(
                model,
                LoraConfig(
                    r=config.rank,
                    lora_alpha=config.alpha,  # type: ignore[arg-type]  # peft annotates int
                    target_modules=targets,
                    lora_dropout=0.0,
                    bias="none",
                ),
                _SLOT,
            )
    try:
        losses, tokens, seconds = _loop(model, seqs, pad, config, progress, cancel)
        weights = _weights(model, config, targets, spec.model_id)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tuner.unload()
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, p.requires_grad))
        model.train(was_training)
    return TrainResult(weights, tuple(losses), tuple(parents), tokens, seconds, config)


def _loop(
    model: nn.Module,
    seqs: list[list[int]],
    pad: int,
    config: TrainConfig,
    progress: Callable[[TrainProgress], None] | None,
    cancel: threading.Event | None,
) -> tuple[list[float], int, float]:
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    order: list[int] = []
    losses: list[float] = []
    tokens = 0
    start = time.perf_counter()
    model.train(True)
    for step in range(config.steps):
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled(step, losses)
        batch: list[list[int]] = []
        while len(batch) < min(config.batch_size, len(seqs)):
            if not order:
                order = torch.randperm(len(seqs), generator=generator).tolist()
            batch.append(seqs[order.pop()])
        ids, mask, labels = (t.to(device) for t in _batch(batch, pad))
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
        tokens += int(mask.sum())
        if progress is not None:
            progress(TrainProgress(step + 1, config.steps, losses[-1], time.perf_counter() - start))
    return losses, tokens, time.perf_counter() - start


def _weights(
    model: nn.Module, config: TrainConfig, targets: Sequence[str], base_model: str
) -> LoraWeights:
    from memos.engines.lora import extract_factors

    factors = extract_factors(model, _SLOT)
    scale = scale_of(config.rank, config.alpha, False)
    modules = {
        name: LoraModule(a.float().contiguous(), b.float().contiguous(), scale)
        for name, (a, b) in sorted(factors.items())
    }
    cfg = lora_config(
        rank=config.rank,
        alpha=config.alpha,
        target_modules=(t.rsplit(".", 1)[-1] for t in targets),
        base_model=base_model,
    )
    return LoraWeights(cfg, modules)


def mean_log_likelihood(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], max_tokens: int = 256
) -> float:
    """The mean per-token log-likelihood of ``texts`` (each after BOS, EOS included)."""
    total = 0.0
    count = 0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for seq in encode_texts(tokenizer, texts, max_tokens):
            ids = torch.tensor([seq], device=device)
            logits = model(input_ids=ids).logits[0, :-1].float()
            logp = torch.log_softmax(logits, dim=-1)
            total += float(logp.gather(1, ids[0, 1:, None]).sum())
            count += len(seq) - 1
    return total / count
