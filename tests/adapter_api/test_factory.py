"""The parameter tier built from settings: which base model, which fingerprint, training."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from memos.config import Settings
from memos.engines.hf import HFEngine
from memos.errors import FailedPrecondition
from memos.tiers.parameter.factory import build_tier


def test_no_model_means_no_tier(tmp_path: Path) -> None:
    assert build_tier(Settings(data_dir=tmp_path)) is None


def test_the_fingerprint_is_the_hf_engines_and_the_store_lives_under_the_data_dir(
    tmp_path: Path, tiny_model_dir: Path, tiny_engine: HFEngine
) -> None:
    tier = build_tier(Settings(data_dir=tmp_path, engine={"model_path": tiny_model_dir}))
    assert tier is not None and tier.training_model is not None
    # Adapters and KV chunks of one model name it the same way.
    assert tier.store.spec.model_id == tiny_engine.layout.model_id
    assert tier.store.root == (tmp_path / "adapters").resolve()
    assert len(tier.store.spec.linear) == 15  # 2 layers x 7 projections, and lm_head
    named = build_tier(
        Settings(
            data_dir=tmp_path,
            engine={"model_path": tiny_model_dir},
            parameter={"base_model_id": "llama-tiny", "dir": tmp_path / "elsewhere"},
        )
    )
    assert named is not None and named.store.spec.model_id == "llama-tiny"
    assert named.store.root == (tmp_path / "elsewhere").resolve()


def test_a_config_only_model_validates_but_cannot_train(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(tiny_model_dir / "config.json", config_only / "config.json")
    tier = build_tier(Settings(data_dir=tmp_path, engine={"model_path": config_only}))
    assert tier is not None and tier.training_model is None
    assert tier.store.spec.model_id.startswith("hf-config:")
    assert len(tier.store.spec.linear) == 15
    with pytest.raises(FailedPrecondition, match=r"no config\.json"):
        build_tier(Settings(data_dir=tmp_path, engine={"model_path": tmp_path / "empty"}))
