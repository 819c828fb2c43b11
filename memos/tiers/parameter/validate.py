"""Validation of an adapter against the base model it will run on.

Nothing unvalidated reaches the store or an engine. ``validate_adapter`` checks, in order:
the config (JSON object, ``peft_type == "LORA"``, rank and alpha sane, no feature this
tier cannot apply faithfully: DoRA, LoRA biases, ``modules_to_save``, trainable tokens,
fan-in-fan-out layers), the safetensors header (see ``header.py``), the dtype, every
tensor's name (only ``lora_A`` / ``lora_B`` factors of a module), that every target module
exists in the base model and every module with weights is a linear layer of it, targeted
by the config, with factors of its in/out features and the config's rank for it (within
``max_rank``), and that every value is finite. Any failure raises InvalidArgument saying
what is wrong.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError, safe_open

from memos.errors import InvalidArgument
from memos.tiers.parameter.fingerprint import BaseModelSpec
from memos.tiers.parameter.header import read_header
from memos.tiers.parameter.weights import FACTOR_KEY, LoraWeights, module_rank_alpha

#: Config fields whose non-default value changes the arithmetic in a way this tier (and
#: vLLM's LoRA kernels) would not reproduce: refused rather than silently ignored.
_UNSUPPORTED: dict[str, tuple[object, str]] = {
    "use_dora": (False, "DoRA adapters"),
    "lora_bias": (False, "LoRA bias terms"),
    "fan_in_fan_out": (False, "fan-in-fan-out (Conv1D) layers"),
    "modules_to_save": (None, "fully trained extra modules (modules_to_save)"),
    "trainable_token_indices": (None, "trainable token embeddings"),
    "layer_replication": (None, "layer replication"),
    "target_parameters": (None, "LoRA on bare parameters (target_parameters)"),
    "alora_invocation_tokens": (None, "activated LoRA (alora_invocation_tokens)"),
    "use_qalora": (False, "QALoRA"),
    "use_bdlora": (None, "block-diagonal LoRA"),
    "arrow_config": (None, "Arrow routing"),
    "megatron_config": (None, "Megatron layers"),
}


@dataclass(frozen=True, slots=True)
class AdapterLimits:
    """What an adapter may be (settings of the parameter tier)."""

    #: The largest LoRA rank accepted (vLLM's ``--max-lora-rank`` must be at least this).
    max_rank: int = 64
    max_weights_bytes: int = 1 << 30
    max_config_bytes: int = 64 * 1024
    #: safetensors dtypes a LoRA factor may have.
    dtypes: tuple[str, ...] = ("F32", "F16", "BF16")


class _Config(BaseModel):
    """The fields of ``adapter_config.json`` this tier reads; the rest are kept as given."""

    model_config = ConfigDict(extra="allow", strict=True)

    peft_type: str
    r: int = Field(ge=1)
    lora_alpha: float | int = Field(gt=0)
    target_modules: list[str] | str
    use_rslora: bool = False
    bias: str = "none"
    rank_pattern: dict[str, int] = Field(default_factory=dict)
    alpha_pattern: dict[str, float | int] = Field(default_factory=dict)


def parse_config(raw: bytes, limits: AdapterLimits) -> dict[str, Any]:
    """``adapter_config.json``'s bytes as a checked dict."""
    if len(raw) > limits.max_config_bytes:
        raise InvalidArgument(
            f"adapter_config.json is {len(raw)} bytes, over the {limits.max_config_bytes} limit"
        )
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise InvalidArgument(f"adapter_config.json is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("adapter_config.json must hold a JSON object")
    if doc.get("peft_type") != "LORA":
        raise InvalidArgument(
            f"adapter_config.json: peft_type is {doc.get('peft_type')!r}, expected 'LORA'"
        )
    try:
        config = _Config.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidArgument(f"adapter_config.json: {where}: {first['msg']}") from None
    for name, (default, what) in _UNSUPPORTED.items():
        value = doc.get(name, default)
        if value != default and value not in (None, False, [], {}):
            raise InvalidArgument(
                f"adapter_config.json: {what} are not supported ({name}={value!r})"
            )
    if config.bias != "none":
        raise InvalidArgument(
            f"adapter_config.json: bias={config.bias!r} is not supported, use 'none'"
        )
    if not math.isfinite(float(config.lora_alpha)):
        raise InvalidArgument("adapter_config.json: lora_alpha must be finite")
    if not config.target_modules:
        raise InvalidArgument("adapter_config.json: target_modules is empty")
    for field_name in ("rank_pattern", "alpha_pattern"):
        for key, value in doc.get(field_name, {}).items():
            _check_pattern(field_name, key)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise InvalidArgument(f"adapter_config.json: {field_name}[{key!r}] must be > 0")
    if isinstance(config.target_modules, str):
        _check_pattern("target_modules", config.target_modules)
    return doc


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _check_pattern(field_name: str, pattern: str) -> None:
    if len(pattern) > 256:
        raise InvalidArgument(f"adapter_config.json: a {field_name} pattern is over 256 chars")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise InvalidArgument(
            f"adapter_config.json: {field_name} pattern {pattern!r} is not a regex: {exc}"
        ) from None


def validate_adapter(
    config_raw: bytes,
    weights_path: Path,
    spec: BaseModelSpec,
    limits: AdapterLimits | None = None,
) -> LoraWeights:
    """The adapter made of ``config_raw`` and ``weights_path``, checked against ``spec``."""
    limits = limits or AdapterLimits()
    config = parse_config(config_raw, limits)
    size = weights_path.stat().st_size
    if size > limits.max_weights_bytes:
        raise InvalidArgument(
            f"adapter_model.safetensors is {size} bytes, over the {limits.max_weights_bytes} limit"
        )
    header = read_header(weights_path)
    if not header.tensors:
        raise InvalidArgument("adapter_model.safetensors holds no tensors")
    factors = _factors(header.tensors, limits)
    targeted = _targets(config, spec)
    for module, pair in sorted(factors.items()):
        _check_module(module, pair, config, spec, targeted, limits)
    tensors = _load_finite(weights_path)
    return LoraWeights.from_tensors(config, tensors)


def _factors(
    entries: Mapping[str, Any], limits: AdapterLimits
) -> dict[str, dict[str, tuple[int, ...]]]:
    dtypes = {e.dtype for e in entries.values()}
    bad = sorted(dtypes - set(limits.dtypes))
    if bad:
        raise InvalidArgument(
            f"adapter_model.safetensors: dtype {bad[0]} is not accepted for LoRA factors "
            f"(use one of {', '.join(limits.dtypes)})"
        )
    if len(dtypes) > 1:
        raise InvalidArgument(
            f"adapter_model.safetensors mixes dtypes {sorted(dtypes)}: use one for all factors"
        )
    factors: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, entry in entries.items():
        match = FACTOR_KEY.match(key)
        if match is None:
            raise InvalidArgument(
                f"unsupported tensor {key!r}: only peft LoRA factors "
                "'base_model.model.<module>.lora_A.weight' / '...lora_B.weight' are accepted"
            )
        factors.setdefault(match["module"], {})[match["factor"]] = entry.shape
    return factors


def _targets(config: Mapping[str, Any], spec: BaseModelSpec) -> set[str]:
    target = config["target_modules"]
    if isinstance(target, str):
        matched = spec.matching(target)
        if not matched:
            raise InvalidArgument(
                f"target_modules pattern {target!r} matches no linear layer of base model "
                f"{spec.model_id!r}"
            )
        return set(matched)
    hits: set[str] = set()
    for entry in target:
        found = spec.matching([entry])
        if not found:
            raise InvalidArgument(
                f"target module {entry!r} does not exist in base model {spec.model_id!r}"
            )
        hits.update(found)
    return hits


def _check_module(
    module: str,
    pair: Mapping[str, tuple[int, ...]],
    config: Mapping[str, Any],
    spec: BaseModelSpec,
    targeted: set[str],
    limits: AdapterLimits,
) -> None:
    if module not in spec.linear:
        raise InvalidArgument(
            f"unknown module {module!r}: not a linear layer of base model {spec.model_id!r}"
        )
    if module not in targeted:
        raise InvalidArgument(f"module {module!r} has weights but is not in target_modules")
    missing = sorted({"A", "B"} - set(pair))
    if missing:
        raise InvalidArgument(f"module {module!r} lacks its lora_{missing[0]} factor")
    in_features, out_features = spec.linear[module]
    rank, _ = module_rank_alpha(config, module)
    if rank > limits.max_rank:
        raise InvalidArgument(
            f"module {module!r} has rank {rank}, over the limit of {limits.max_rank}"
        )
    a, b = pair["A"], pair["B"]
    if a != (rank, in_features):
        raise InvalidArgument(
            f"module {module!r}: lora_A has shape {list(a)}, expected [{rank}, {in_features}] "
            f"(rank {rank}, in_features {in_features})"
        )
    if b != (out_features, rank):
        raise InvalidArgument(
            f"module {module!r}: lora_B has shape {list(b)}, expected [{out_features}, {rank}] "
            f"(out_features {out_features}, rank {rank})"
        )


def _load_finite(path: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as f:  # type: ignore[no-untyped-call]
            for key in f.keys():  # noqa: SIM118  (a safe_open handle is not a mapping)
                tensor = f.get_tensor(key)
                if not bool(torch.isfinite(tensor).all()):
                    raise InvalidArgument(f"tensor {key!r} holds NaN or infinite values")
                tensors[key] = tensor
    except SafetensorError as exc:
        raise InvalidArgument(f"bad safetensors file: {exc}") from None
    return tensors
