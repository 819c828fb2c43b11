"""peft on the HF engine: an adapter changes the output, unloading restores it bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel

from memos.engines.hf import HFEngine
from memos.engines.lora import LoRAEngine
from memos.errors import FailedPrecondition, NotFound
from memos.tiers.parameter.store import AdapterStore
from memos.tiers.parameter.weights import LoraModule, LoraWeights, factor_key, scale_of
from tests.fixtures.adapters import random_adapter, write_adapter

TEXT = "The parameter tier keeps adapters; the engine applies them with peft."


@pytest.fixture
def prompt(lora_engine: LoRAEngine) -> list[int]:
    return lora_engine.engine.tokenize(TEXT)


def _logits(engine: LoRAEngine, prompt: list[int], adapter: str | None) -> torch.Tensor:
    with engine.use(adapter) as hf:
        return hf.prefill(prompt).logits.clone()


def test_an_adapter_changes_the_output_and_unloading_restores_the_base_exactly(
    lora_engine: LoRAEngine, prompt: list[int]
) -> None:
    model = lora_engine.engine.model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    base = _logits(lora_engine, prompt, None)
    lora_engine.load("a", random_adapter(lora_engine.spec, seed=1))
    assert torch.equal(_logits(lora_engine, prompt, None), base)  # loaded, not active
    with_a = _logits(lora_engine, prompt, "a")
    assert not torch.allclose(with_a, base, atol=1e-3)
    lora_engine.unload("a")
    assert lora_engine.loaded == () and lora_engine.active is None
    assert torch.equal(_logits(lora_engine, prompt, None), base)
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)


def test_switching_between_two_adapters_gives_each_its_own_output(
    lora_engine: LoRAEngine, prompt: list[int]
) -> None:
    a = random_adapter(lora_engine.spec, ("q_proj", "v_proj"), seed=1)
    b = random_adapter(lora_engine.spec, ("k_proj", "down_proj"), rank=2, seed=2)
    base = _logits(lora_engine, prompt, None)
    lora_engine.load("a", a)
    alone_a = _logits(lora_engine, prompt, "a")
    lora_engine.unload("a")
    lora_engine.load("b", b)
    alone_b = _logits(lora_engine, prompt, "b")
    lora_engine.load("a", a)
    assert set(lora_engine.loaded) == {"a", "b"}
    for _ in range(2):
        assert torch.equal(_logits(lora_engine, prompt, "a"), alone_a)
        assert torch.equal(_logits(lora_engine, prompt, "b"), alone_b)
        assert torch.equal(_logits(lora_engine, prompt, None), base)
    assert not torch.allclose(alone_a, alone_b, atol=1e-3)
    lora_engine.unload("b")
    assert torch.equal(_logits(lora_engine, prompt, "a"), alone_a)
    lora_engine.unload("a")
    assert torch.equal(_logits(lora_engine, prompt, None), base)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_outputs_match_peft_loading_the_same_files(
    tmp_path: Path, tiny_model_dir: Path, lora_engine: LoRAEngine, prompt: list[int]
) -> None:
    """Per-module ranks and alphas and rsLoRA give the scale peft itself computes."""
    spec = lora_engine.spec
    adapter = random_adapter(spec, ("q_proj", "v_proj", "up_proj"), rank=4, alpha=8.0, seed=3)
    config = dict(adapter.config)
    config["use_rslora"] = True
    config["rank_pattern"] = {"layers.1.mlp.up_proj": 2}
    config["alpha_pattern"] = {"v_proj": 3.0}
    modules = {}
    for name, m in adapter.modules.items():
        rank = 2 if name.endswith("1.mlp.up_proj") else 4
        alpha = 3.0 if name.endswith("v_proj") else 8.0
        modules[name] = LoraModule(m.a[:rank], m.b[:, :rank], scale_of(rank, alpha, True))
    weights = LoraWeights(config, modules)
    directory = write_adapter(tmp_path / "adapter", weights)

    lora_engine.load("x", weights)
    ours = _logits(lora_engine, prompt, "x")
    reference_model = HFEngine.load(tiny_model_dir).model
    peft_model = PeftModel.from_pretrained(reference_model, directory)
    peft_model.eval()
    with torch.inference_mode():
        theirs = peft_model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
    assert torch.allclose(ours, theirs, atol=1e-5)
    key = factor_key("model.layers.1.mlp.up_proj", "A")
    assert weights.tensors()[key].shape == (2, 64)


def test_an_adapter_from_the_store_runs_and_has_a_kv_identity(
    adapter_store: AdapterStore, lora_engine: LoRAEngine, prompt: list[int]
) -> None:
    record = adapter_store.register_weights(
        "acme", "bot", random_adapter(lora_engine.spec, seed=4), origin="upload"
    )
    lora_engine.load(record.ref, adapter_store.load(record), path=record.path)
    with lora_engine.use(record.ref):
        identity = lora_engine.kv_adapter()
    assert identity is not None and (identity.name, identity.path) == (record.ref, record.path)
    assert lora_engine.kv_adapter() is None


def test_engine_errors(lora_engine: LoRAEngine) -> None:
    lora_engine.load("a", random_adapter(lora_engine.spec))
    with pytest.raises(FailedPrecondition, match="already loaded"):
        lora_engine.load("a", random_adapter(lora_engine.spec))
    with pytest.raises(NotFound, match="not loaded"):
        lora_engine.activate("nope")
    with pytest.raises(NotFound, match="not loaded"):
        lora_engine.unload("nope")
    lora_engine.unload("a")
