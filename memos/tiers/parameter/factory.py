"""The parameter tier built from the daemon's settings.

Adapters are validated against the base model at ``engine.model_path``: its ``config.json``
gives the linear layers' shapes (built on the meta device, no weights read), and its files
give the fingerprint every adapter is tied to. Training also needs the weights: each run
loads its own copy of the model and releases it afterwards, so a daemon that only stores
and validates adapters (beside a vLLM server that holds the model) never keeps one.
Without a model path there is no parameter tier (AdapterService says how to set one).

With ``parameter.engine = "vllm"`` the slots drive the vLLM server at
``parameter.vllm_url``: AdapterService.Request loads and unloads adapters there itself.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memos.config import Settings
from memos.errors import FailedPrecondition
from memos.tiers.parameter.cubes import AdapterCubes
from memos.tiers.parameter.fingerprint import BaseModelSpec
from memos.tiers.parameter.slots import AdapterSlots, SlotDriver
from memos.tiers.parameter.store import AdapterStore
from memos.tiers.parameter.tier import ParameterTier, TrainingModel
from memos.tiers.parameter.validate import AdapterLimits

if TYPE_CHECKING:
    from torch import nn

    from memos.kernel import MemoryOS

_WEIGHT_GLOBS = ("*.safetensors", "*.bin")


def has_weights(model_dir: Path) -> bool:
    return any(next(model_dir.glob(g), None) is not None for g in _WEIGHT_GLOBS)


def base_model_id(settings: Settings, model_dir: Path) -> str:
    """The fingerprint adapters are tied to: the configured one, else the HF engine's own
    (``hf:`` + a digest of config and weights), else a digest of ``config.json`` alone."""
    if settings.parameter.base_model_id:
        return settings.parameter.base_model_id
    if has_weights(model_dir):
        from memos.engines.hf import model_digest

        return f"hf:{model_digest(model_dir)}"
    digest = hashlib.sha256((model_dir / "config.json").read_bytes()).hexdigest()
    return f"hf-config:{digest}"


def base_model_spec(settings: Settings) -> BaseModelSpec | None:
    """The spec of ``engine.model_path``, or None when none is configured."""
    model_dir = settings.engine.model_path
    if model_dir is None:
        return None
    if not (model_dir / "config.json").is_file():
        raise FailedPrecondition(
            f"engine.model_path {model_dir} holds no config.json: point it at a Hugging Face "
            "model directory"
        )
    return BaseModelSpec.from_config_dir(model_dir, base_model_id(settings, model_dir))


def training_model(settings: Settings) -> TrainingModel | None:
    """A loader of a fresh copy of the engine model for one run (None without weights)."""
    model_dir = settings.engine.model_path
    if model_dir is None or not has_weights(model_dir):
        return None
    dtype, device = settings.engine.dtype, settings.engine.device

    def load() -> tuple[nn.Module, Any]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model: nn.Module = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=getattr(torch, dtype), local_files_only=True
        )
        model.to(torch.device(device))
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        return model, tokenizer

    return load


def build_tier(settings: Settings) -> ParameterTier | None:
    """The store under ``settings.adapters_dir`` with the engine model's spec, or None."""
    spec = base_model_spec(settings)
    if spec is None:
        return None
    p = settings.parameter
    limits = AdapterLimits(
        max_rank=p.max_rank,
        max_weights_bytes=p.max_weights_bytes,
        max_config_bytes=p.max_config_bytes,
    )
    store = AdapterStore(settings.adapters_dir, spec, limits)
    return ParameterTier(store, training_model=training_model(settings))


def open_adapters(kernel: MemoryOS) -> AdapterCubes | None:
    """The kernel's parameter tier, or None when no engine model is configured."""
    settings = kernel.settings
    tier = build_tier(settings)
    if tier is None:
        return None
    p = settings.parameter
    slots = AdapterSlots(p.slots, p.policy, driver=slot_driver(settings))
    if slots.driver is not None and p.vllm_resync_s > 0:
        slots.start_resync(p.vllm_resync_s)
    return AdapterCubes(kernel, tier, slots, p)


def slot_driver(settings: Settings) -> SlotDriver | None:
    """The engine the daemon drives itself (``parameter.engine``), or None (the caller)."""
    p = settings.parameter
    if p.engine != "vllm":
        return None
    from memos.engines.vllm_lora import driver_from_settings

    assert p.vllm_url is not None  # ParameterSettings checks it
    return driver_from_settings(
        p.vllm_url,
        timeout_s=p.vllm_timeout_s,
        api_key=p.vllm_api_key.get_secret_value() if p.vllm_api_key else None,
        store_root=settings.adapters_dir,
        vllm_root=p.vllm_adapters_dir,
    )
