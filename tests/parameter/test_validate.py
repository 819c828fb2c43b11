"""Validation against the base model: every defect is an InvalidArgument naming it."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save

from memos.errors import InvalidArgument
from memos.tiers.parameter.fingerprint import BaseModelSpec
from memos.tiers.parameter.validate import AdapterLimits, validate_adapter
from memos.tiers.parameter.weights import LoraWeights, canonical_json, factor_key
from tests.fixtures.adapters import random_adapter

Q0 = "model.layers.0.self_attn.q_proj"


def _check(
    tmp_path: Path,
    spec: BaseModelSpec,
    config: dict[str, Any],
    weights: bytes,
    limits: AdapterLimits | None = None,
) -> LoraWeights:
    path = tmp_path / "adapter_model.safetensors"
    path.write_bytes(weights)
    return validate_adapter(canonical_json(config), path, spec, limits)


def _raw_safetensors(header: dict[str, Any], data: bytes) -> bytes:
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + data


def test_a_valid_adapter_passes_with_its_factors(
    tmp_path: Path, lora_base_spec: BaseModelSpec
) -> None:
    adapter = random_adapter(lora_base_spec, rank=4)
    out = _check(tmp_path, lora_base_spec, dict(adapter.config), adapter.weights_bytes())
    assert set(out.modules) == set(adapter.modules) and len(out.modules) == 4
    assert out.rank == 4 and out.target_modules == ("q_proj", "v_proj")
    for name, module in adapter.modules.items():
        assert torch.equal(out.modules[name].a, module.a)
        assert torch.equal(out.modules[name].b, module.b)
        assert out.modules[name].scale == pytest.approx(2.0)


def _tensors(spec: BaseModelSpec) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    adapter = random_adapter(spec, rank=4)
    return dict(adapter.config), adapter.tensors()


Case = Callable[[BaseModelSpec], tuple[dict[str, Any], bytes]]


def _wrong_a_shape(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    config, tensors = _tensors(spec)
    tensors[factor_key(Q0, "A")] = torch.zeros(4, 65)
    return config, save(tensors)


def _wrong_b_shape(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    config, tensors = _tensors(spec)
    tensors[factor_key(Q0, "B")] = torch.zeros(32, 4)
    return config, save(tensors)


def _rank_not_the_configs(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    config, tensors = _tensors(spec)
    config["r"] = 8
    return config, save(tensors)


def _unknown_module(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    config, tensors = _tensors(spec)
    tensors[factor_key("model.layers.7.self_attn.q_proj", "A")] = torch.zeros(4, 64)
    tensors[factor_key("model.layers.7.self_attn.q_proj", "B")] = torch.zeros(64, 4)
    return config, save(tensors)


def _unknown_target(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    config, tensors = _tensors(spec)
    config["target_modules"] = ["q_proj", "v_proj", "c_attn"]
    return config, save(tensors)


def _untargeted_module(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    config, tensors = _tensors(spec)
    config["target_modules"] = ["q_proj"]
    return config, save(tensors)


def _missing_b(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    config, tensors = _tensors(spec)
    del tensors[factor_key(Q0, "B")]
    return config, save(tensors)


def _extra_tensor(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    config, tensors = _tensors(spec)
    tensors["base_model.model.lm_head.weight"] = torch.zeros(320, 64)
    return config, save(tensors)


def _not_lora(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    config, tensors = _tensors(spec)
    config["peft_type"] = "PREFIX_TUNING"
    return config, save(tensors)


def _dora(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    config, tensors = _tensors(spec)
    config["use_dora"] = True
    return config, save(tensors)


def _int_dtype(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    config, tensors = _tensors(spec)
    return config, save({k: v.to(torch.int32) for k, v in tensors.items()})


def _mixed_dtypes(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    config, tensors = _tensors(spec)
    tensors[factor_key(Q0, "A")] = tensors[factor_key(Q0, "A")].half()
    return config, save(tensors)


def _nan(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    config, tensors = _tensors(spec)
    tensors[factor_key(Q0, "B")][0, 0] = float("nan")
    return config, save(tensors)


def _truncated(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    config, tensors = _tensors(spec)
    return config, save(tensors)[:-10]


def _garbage(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    return _tensors(spec)[0], b"this is not a safetensors file at all"


def _huge_header_length(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    return _tensors(spec)[0], struct.pack("<Q", 1 << 40) + b"{}"


def _header_not_json(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    return _tensors(spec)[0], struct.pack("<Q", 4) + b"\xff\xfe{["


def _overlapping_offsets(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    a, b = factor_key(Q0, "A"), factor_key(Q0, "B")
    header = {
        a: {"dtype": "F32", "shape": [4, 64], "data_offsets": [0, 1024]},
        b: {"dtype": "F32", "shape": [64, 4], "data_offsets": [512, 1536]},
    }
    return {**_tensors(spec)[0], "target_modules": ["q_proj"]}, _raw_safetensors(
        header, bytes(1536)
    )


def _size_not_dtype_times_shape(spec: BaseModelSpec) -> tuple[dict[str, Any], bytes]:
    a = factor_key(Q0, "A")
    header = {a: {"dtype": "F32", "shape": [4, 64], "data_offsets": [0, 1000]}}
    return _tensors(spec)[0], _raw_safetensors(header, bytes(1000))


CASES: dict[str, tuple[Case, str]] = {
    "wrong A shape": (_wrong_a_shape, r"lora_A has shape \[4, 65\], expected \[4, 64\]"),
    "wrong B shape": (_wrong_b_shape, r"lora_B has shape \[32, 4\], expected \[64, 4\]"),
    "rank not the config's": (_rank_not_the_configs, "expected \\[8, 64\\]"),
    "unknown module": (_unknown_module, "unknown module 'model.layers.7.self_attn.q_proj'"),
    "unknown target module": (_unknown_target, "target module 'c_attn' does not exist"),
    "weights outside target_modules": (_untargeted_module, "not in target_modules"),
    "missing B factor": (_missing_b, "lacks its lora_B factor"),
    "extra tensor": (_extra_tensor, "unsupported tensor 'base_model.model.lm_head.weight'"),
    "not LoRA": (_not_lora, "peft_type is 'PREFIX_TUNING'"),
    "DoRA": (_dora, "DoRA adapters are not supported"),
    "integer dtype": (_int_dtype, "dtype I32 is not accepted"),
    "mixed dtypes": (_mixed_dtypes, "mixes dtypes"),
    "NaN": (_nan, "NaN or infinite"),
    "truncated safetensors": (_truncated, "bad safetensors file"),
    "garbage safetensors": (_garbage, "bad safetensors file"),
    "header length past the end": (_huge_header_length, "exceeds the file"),
    "header not JSON": (_header_not_json, "not UTF-8 JSON"),
    "overlapping tensors": (_overlapping_offsets, "overlaps another"),
    "bytes not dtype x shape": (_size_not_dtype_times_shape, "needs 1024"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_defects_are_rejected_with_what_is_wrong(
    case: str, tmp_path: Path, lora_base_spec: BaseModelSpec
) -> None:
    make, message = CASES[case]
    config, weights = make(lora_base_spec)
    with pytest.raises(InvalidArgument, match=message):
        _check(tmp_path, lora_base_spec, config, weights)


def test_rank_over_the_limit_is_rejected(tmp_path: Path, lora_base_spec: BaseModelSpec) -> None:
    adapter = random_adapter(lora_base_spec, rank=4)
    with pytest.raises(InvalidArgument, match="rank 4, over the limit of 2"):
        _check(
            tmp_path,
            lora_base_spec,
            dict(adapter.config),
            adapter.weights_bytes(),
            AdapterLimits(max_rank=2),
        )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must hold a JSON object"),
        (b'{"peft_type": "LORA", "r": NaN}', "not valid JSON"),
        (b'{"peft_type": "LORA", "r": 0, "lora_alpha": 1, "target_modules": ["q_proj"]}', "r:"),
        (b'{"peft_type": "LORA", "r": 4, "lora_alpha": 8}', "target_modules"),
    ],
)
def test_bad_configs_are_rejected(
    raw: bytes, message: str, tmp_path: Path, lora_base_spec: BaseModelSpec
) -> None:
    path = tmp_path / "adapter_model.safetensors"
    path.write_bytes(random_adapter(lora_base_spec).weights_bytes())
    with pytest.raises(InvalidArgument, match=message):
        validate_adapter(raw, path, lora_base_spec)


def test_rank_pattern_sets_a_modules_rank_and_scale(
    tmp_path: Path, lora_base_spec: BaseModelSpec
) -> None:
    adapter = random_adapter(lora_base_spec, rank=4)
    config, tensors = dict(adapter.config), adapter.tensors()
    tensors[factor_key(Q0, "A")] = torch.ones(2, 64)
    tensors[factor_key(Q0, "B")] = torch.ones(64, 2)
    config["rank_pattern"] = {"layers.0.self_attn.q_proj": 2}
    config["alpha_pattern"] = {"layers.0.self_attn.q_proj": 1}
    out = _check(tmp_path, lora_base_spec, config, save(tensors))
    assert out.modules[Q0].rank == 2 and out.modules[Q0].scale == pytest.approx(0.5)
    assert out.modules["model.layers.1.self_attn.q_proj"].scale == pytest.approx(2.0)
