"""The tier's API: merges and training runs become new adapters with provenance."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from memos.engines.hf import HFEngine
from memos.engines.lora import LoRAEngine
from memos.errors import FailedPrecondition, NotFound
from memos.ids import new_id
from memos.tiers.parameter.store import AdapterStore
from memos.tiers.parameter.tier import MergeSource, ParameterTier
from memos.tiers.parameter.train import TrainConfig, TrainingCancelled, TrainProgress
from tests.fixtures.adapters import random_adapter

T = "acme"


@pytest.fixture
def tier(adapter_store: AdapterStore, tiny_model_dir: Path) -> Iterator[ParameterTier]:
    def training_model() -> tuple[torch.nn.Module, Any]:
        engine = HFEngine.load(tiny_model_dir)
        return engine.model, engine.tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield ParameterTier(adapter_store, training_model=training_model)
    torch.set_num_threads(threads)


def test_a_merge_is_registered_with_its_inputs_as_parents(
    tier: ParameterTier, lora_engine: LoRAEngine
) -> None:
    spec = tier.store.spec
    a = tier.store.register_weights(T, "a", random_adapter(spec, seed=1), origin="upload")
    b = tier.store.register_weights(T, "b", random_adapter(spec, seed=2), origin="upload")
    record, result = tier.merge(T, "ab", [MergeSource("a", 0.5), MergeSource("b", 0.5, version=1)])
    assert record.origin == "merge" and record.parents == (a.id, b.id)
    assert record.rank == result.rank == 8
    assert record.metadata["merge.method"] == "linear"
    assert record.metadata["merge.inputs"] == "a@v1*0.5,b@v1*0.5"
    merged = tier.store.load(record)
    prompt = lora_engine.engine.tokenize("merged")
    with lora_engine.use(None) as hf:
        base = hf.prefill(prompt).logits.clone()
    lora_engine.load(record.ref, merged, path=record.path)
    with lora_engine.use(record.ref) as hf:
        assert not torch.allclose(hf.prefill(prompt).logits, base, atol=1e-3)
    with pytest.raises(NotFound):
        tier.merge(T, "x", [MergeSource("missing", 1.0)])


def test_training_registers_an_adapter_whose_parents_are_the_memories(
    tier: ParameterTier,
) -> None:
    ids = [new_id(), new_id()]
    texts = ["The printer on floor 3 jams on A3 paper.", "Standup moved to 9:45 on Mondays."]
    steps: list[int] = []
    record, result = tier.train(
        T,
        "memories",
        texts,
        ids,
        TrainConfig(steps=8, max_tokens=48),
        progress=lambda p: steps.append(p.step),
    )
    assert record.origin == "train" and record.parents == tuple(ids)
    assert steps == list(range(1, 9)) and len(result.losses) == 8
    assert record.metadata["train.steps"] == "8" and record.rank == 8
    assert tier.get(T, "memories") == record


def test_a_cancelled_training_run_registers_nothing(tier: ParameterTier) -> None:
    cancel = threading.Event()

    def stop(p: TrainProgress) -> None:
        cancel.set()

    with pytest.raises(TrainingCancelled):
        tier.train(T, "never", ["text"], [new_id()], progress=stop, cancel=cancel)
    assert tier.list_adapters(T) == [] and tier.store.blobs() == []


def test_training_needs_a_model(adapter_store: AdapterStore) -> None:
    with pytest.raises(FailedPrecondition, match="no model to train"):
        ParameterTier(adapter_store).train(T, "x", ["t"], [new_id()])
