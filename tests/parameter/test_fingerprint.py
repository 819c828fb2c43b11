"""The base model's linear layers, from the loaded model or from its config alone."""

from __future__ import annotations

from pathlib import Path

from memos.engines.hf import HFEngine
from memos.tiers.parameter.fingerprint import BaseModelSpec


def test_spec_from_config_equals_spec_from_loaded_model(
    tiny_model_dir: Path, tiny_engine: HFEngine, lora_base_spec: BaseModelSpec
) -> None:
    from_config = BaseModelSpec.from_config_dir(tiny_model_dir, tiny_engine.layout.model_id)
    assert dict(from_config.linear) == dict(lora_base_spec.linear)
    assert from_config.shapes_digest == lora_base_spec.shapes_digest
    # 2 layers x (q, k, v, o, gate, up, down) + lm_head
    assert len(lora_base_spec.linear) == 15
    assert lora_base_spec.linear["model.layers.0.self_attn.k_proj"] == (64, 32)


def test_peft_matching_rules(lora_base_spec: BaseModelSpec) -> None:
    assert lora_base_spec.matching(["q_proj"]) == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.self_attn.q_proj",
    ]
    assert lora_base_spec.matching(r".*\.1\.mlp\.(up|down)_proj") == [
        "model.layers.1.mlp.up_proj",
        "model.layers.1.mlp.down_proj",
    ]
    assert lora_base_spec.matching(["proj"]) == []
