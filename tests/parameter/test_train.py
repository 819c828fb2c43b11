"""Plaintext -> parameter: a real peft training loop on the tiny model."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from memos.engines.hf import HFEngine
from memos.engines.lora import LoRAEngine
from memos.errors import InvalidArgument
from memos.ids import new_id
from memos.tiers.parameter.train import (
    TrainConfig,
    TrainingCancelled,
    TrainProgress,
    mean_log_likelihood,
    train_lora,
)

MEMORIES = [
    "Alice's cat is called Miso and sleeps on the piano.",
    "The staging database moved to port 6543 in March.",
    "Bob prefers green tea without sugar, never coffee.",
    "Our team offsite is in Lisbon on the 14th of June.",
]
CONFIG = TrainConfig(rank=8, alpha=16.0, steps=30, learning_rate=1e-2, max_tokens=64)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The tiny model trains faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def training_model(tiny_model_dir: Path) -> torch.nn.Module:
    return HFEngine.load(tiny_model_dir).model


def test_training_lowers_the_loss_and_raises_the_memories_likelihood(
    one_thread: None, training_model: torch.nn.Module, lora_engine: LoRAEngine
) -> None:
    tokenizer = lora_engine.engine.tokenizer
    ids = [new_id() for _ in MEMORIES]
    seen: list[TrainProgress] = []
    before = {k: v.clone() for k, v in training_model.state_dict().items()}
    flags = [p.requires_grad for p in training_model.parameters()]

    result = train_lora(training_model, tokenizer, MEMORIES, ids, CONFIG, progress=seen.append)

    losses = result.losses
    # A random tiny model's final RMSNorm and fixed lm_head cap how peaked its predictions
    # can get, so the gains are fractions of a nat (about 0.3 in loss, 0.5 in likelihood).
    assert len(losses) == CONFIG.steps and result.parents == tuple(ids)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2
    assert [p.step for p in seen] == list(range(1, CONFIG.steps + 1))
    assert [p.loss for p in seen] == list(losses)
    assert result.weights.rank == 8 and len(result.weights.modules) == 14
    assert result.tokens > 0 and float(result.describe()["train.loss_last"]) < losses[0]
    # The borrowed model comes back as it was.
    after = training_model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert [p.requires_grad for p in training_model.parameters()] == flags

    model = lora_engine.engine.model
    base_ll = mean_log_likelihood(model, tokenizer, MEMORIES)
    lora_engine.load("memories", result.weights)
    with lora_engine.use("memories"):
        tuned_ll = mean_log_likelihood(model, tokenizer, MEMORIES)
    assert tuned_ll > base_ll + 0.3


def test_cancellation_stops_between_steps(
    one_thread: None, training_model: torch.nn.Module, lora_engine: LoRAEngine
) -> None:
    cancel = threading.Event()

    def progress(p: TrainProgress) -> None:
        if p.step == 3:
            cancel.set()

    names = [n for n, _ in training_model.named_modules()]
    with pytest.raises(TrainingCancelled) as caught:
        train_lora(
            training_model,
            lora_engine.engine.tokenizer,
            MEMORIES,
            [new_id() for _ in MEMORIES],
            CONFIG,
            progress=progress,
            cancel=cancel,
        )
    assert caught.value.steps_done == 3 and len(caught.value.losses) == 3
    assert caught.value.code == "CANCELLED"
    assert [n for n, _ in training_model.named_modules()] == names  # adapter layers removed


@pytest.mark.parametrize(
    ("texts", "parents", "config", "message"),
    [
        ([], [], CONFIG, "one parent id per text"),
        (MEMORIES, ["x"] * len(MEMORIES), CONFIG, "not a cube id"),
        (MEMORIES[:1], None, TrainConfig(target_modules=("c_attn",)), "'c_attn' does not exist"),
        (MEMORIES[:1], None, TrainConfig(steps=0), "steps"),
        (MEMORIES[:1], None, TrainConfig(learning_rate=float("nan")), "learning_rate"),
    ],
)
def test_bad_training_requests_are_rejected(
    training_model: torch.nn.Module,
    lora_engine: LoRAEngine,
    texts: list[str],
    parents: list[str] | None,
    config: TrainConfig,
    message: str,
) -> None:
    ids = parents if parents is not None else [new_id() for _ in texts]
    with pytest.raises(InvalidArgument, match=message):
        train_lora(training_model, lora_engine.engine.tokenizer, texts, ids, config)
