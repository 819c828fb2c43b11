"""A LoRA adapter in memory: its config and, per linear module, the factors A, B and scale.

peft's convention, which vLLM reads too: module ``m``'s factors are stored as
``base_model.model.<m>.lora_A.weight`` ([r, in_features]) and ``...lora_B.weight``
([out_features, r]); the module's weight delta is ``scale * B @ A`` with
``scale = alpha / r`` (``alpha / sqrt(r)`` with rsLoRA), r and alpha per module from
``rank_pattern`` / ``alpha_pattern`` when those name it.

The bytes of an adapter are safetensors (weights) and canonical JSON (config): no pickle.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import save

PEFT_PREFIX = "base_model.model."
FACTOR_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$")


def factor_key(module: str, factor: str) -> str:
    return f"{PEFT_PREFIX}{module}.lora_{factor}.weight"


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, no NaN."""
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def pattern_key(patterns: Iterable[str], module: str) -> str | None:
    """The ``rank_pattern`` / ``alpha_pattern`` key peft applies to ``module``, if any."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return None


def module_rank_alpha(config: Mapping[str, Any], module: str) -> tuple[int, float]:
    """The rank and alpha peft gives ``module`` under ``config``."""
    rank_pattern: Mapping[str, int] = config.get("rank_pattern") or {}
    alpha_pattern: Mapping[str, float] = config.get("alpha_pattern") or {}
    rk = pattern_key(rank_pattern, module)
    ak = pattern_key(alpha_pattern, module)
    rank = int(rank_pattern[rk]) if rk is not None else int(config["r"])
    alpha = float(alpha_pattern[ak]) if ak is not None else float(config["lora_alpha"])
    return rank, alpha


def scale_of(rank: int, alpha: float, rslora: bool) -> float:
    return alpha / math.sqrt(rank) if rslora else alpha / rank


@dataclass(frozen=True, slots=True)
class LoraModule:
    a: torch.Tensor
    b: torch.Tensor
    scale: float

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense weight update ``scale * B @ A`` [out_features, in_features]."""
        return (self.b.to(dtype) @ self.a.to(dtype)) * self.scale


@dataclass(frozen=True, slots=True)
class LoraWeights:
    """An adapter: its ``adapter_config.json`` content and its modules' factors."""

    config: Mapping[str, Any]
    modules: Mapping[str, LoraModule]

    @classmethod
    def from_tensors(
        cls, config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
    ) -> LoraWeights:
        """Group peft-named factor tensors by module (keys must already be validated)."""
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in tensors.items():
            match = FACTOR_KEY.match(key)
            if match is None:
                raise ValueError(f"not a LoRA factor: {key!r}")
            pairs.setdefault(match["module"], {})[match["factor"]] = tensor
        rslora = bool(config.get("use_rslora", False))
        modules = {}
        for name in sorted(pairs):
            rank, alpha = module_rank_alpha(config, name)
            modules[name] = LoraModule(
                pairs[name]["A"], pairs[name]["B"], scale_of(rank, alpha, rslora)
            )
        return cls(dict(config), modules)

    @property
    def rank(self) -> int:
        """The largest module rank (what vLLM's ``--max-lora-rank`` must allow)."""
        return max((m.rank for m in self.modules.values()), default=0)

    @property
    def target_modules(self) -> tuple[str, ...]:
        """The distinct last name components of the modules (``q_proj``, ``v_proj``, ...)."""
        return tuple(sorted({name.rsplit(".", 1)[-1] for name in self.modules}))

    @property
    def dtype(self) -> torch.dtype:
        for module in self.modules.values():
            return module.a.dtype
        return torch.float32

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, module in self.modules.items():
            out[factor_key(name, "A")] = module.a.contiguous()
            out[factor_key(name, "B")] = module.b.contiguous()
        return out

    def config_bytes(self) -> bytes:
        return canonical_json(self.config)

    def weights_bytes(self) -> bytes:
        # Copies: safetensors refuses tensors sharing storage (two modules may share factors).
        tensors = {k: v.detach().clone() for k, v in self.tensors().items()}
        return save(tensors, metadata={"format": "pt"})

    def deltas(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        return {name: module.delta(dtype) for name, module in self.modules.items()}


def lora_config(
    *,
    rank: int,
    alpha: float,
    target_modules: Iterable[str],
    base_model: str = "",
    use_rslora: bool = False,
) -> dict[str, Any]:
    """A minimal ``adapter_config.json`` that peft and vLLM both load."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": sorted(set(target_modules)),
        "use_rslora": use_rslora,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_dora": False,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": True,
        "base_model_name_or_path": base_model,
    }
