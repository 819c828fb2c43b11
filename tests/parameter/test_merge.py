"""Merges: the linear merge is the weighted sum of the deltas; TIES is peft's; ranks stated."""

from __future__ import annotations

import pytest
import torch
from peft.utils.merge_utils import ties as peft_ties

from memos.errors import InvalidArgument
from memos.tiers.parameter.fingerprint import BaseModelSpec
from memos.tiers.parameter.merge import merge, merged_deltas
from memos.tiers.parameter.weights import LoraWeights
from tests.fixtures.adapters import random_adapter

ATOL = 1e-5


@pytest.fixture
def pair(lora_base_spec: BaseModelSpec) -> tuple[LoraWeights, LoraWeights]:
    """Two adapters of ranks 4 and 2 on overlapping module sets, different scales."""
    a = random_adapter(lora_base_spec, ("q_proj", "v_proj"), rank=4, alpha=8.0, seed=1)
    b = random_adapter(lora_base_spec, ("v_proj", "down_proj"), rank=2, alpha=1.0, seed=2)
    return a, b


def _expected(
    pair: tuple[LoraWeights, LoraWeights], w: tuple[float, float]
) -> dict[str, torch.Tensor]:
    a, b = pair
    out: dict[str, torch.Tensor] = {}
    for adapter, weight in ((a, w[0]), (b, w[1])):
        for name, delta in adapter.deltas().items():
            out[name] = out.get(name, torch.zeros_like(delta)) + weight * delta
    return out


def test_linear_merge_of_factors_is_the_weighted_sum_of_deltas_exactly(
    pair: tuple[LoraWeights, LoraWeights],
) -> None:
    w = (0.7, -1.3)
    result = merge(list(pair), list(w), method="linear", space="factors")
    expected = _expected(pair, w)
    got = result.weights.deltas()
    assert set(got) == set(expected) and len(got) == 6
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=ATOL), name
    # rank r1 + r2 where both adapters touch a module (v_proj): 4 + 2
    assert result.rank == 6 == result.weights.rank
    assert all(m.rank == 6 for m in result.weights.modules.values())
    assert result.error == 0.0 and result.exact
    assert result.weights.config["r"] == 6 and result.weights.config["lora_alpha"] == 6


def test_linear_merge_on_dense_deltas_at_full_rank_is_exact(
    pair: tuple[LoraWeights, LoraWeights],
) -> None:
    w = (0.5, 0.5)
    result = merge(list(pair), list(w), method="linear", space="dense")
    expected = _expected(pair, w)
    for name, delta in result.weights.deltas().items():
        assert torch.allclose(delta, expected[name], atol=ATOL), name
    assert result.rank == 6 and result.error < 1e-6


def test_a_truncated_refactoring_states_its_rank_and_true_error(
    pair: tuple[LoraWeights, LoraWeights],
) -> None:
    w = (1.0, 1.0)
    result = merge(list(pair), list(w), method="linear", space="dense", rank=2)
    expected = _expected(pair, w)
    got = result.weights.deltas(torch.float64)
    residual = sum(float((got[n] - expected[n].double()).pow(2).sum()) for n in expected)
    norm = sum(float(expected[n].double().pow(2).sum()) for n in expected)
    assert result.rank == 2 and all(m.rank == 2 for m in result.weights.modules.values())
    assert result.error == pytest.approx((residual / norm) ** 0.5, rel=1e-4)
    assert 0.0 < result.error < 1.0
    # Modules only one rank-2 adapter touches are still exact at rank 2.
    assert result.module_errors["model.layers.0.mlp.down_proj"] < 1e-6
    assert result.module_errors["model.layers.0.self_attn.v_proj"] > 0.01


def test_ties_equals_peft_ties_on_the_dense_deltas(pair: tuple[LoraWeights, LoraWeights]) -> None:
    w = (0.6, 0.4)
    density = 0.3
    dense = merged_deltas(list(pair), list(w), method="ties", density=density)
    result = merge(list(pair), list(w), method="ties", space="dense", density=density, rank=64)
    a, b = pair
    for name, got in dense.items():
        deltas = []
        for adapter in (a, b):
            m = adapter.modules.get(name)
            deltas.append(m.delta(torch.float64) if m else torch.zeros_like(got))
        reference = peft_ties(deltas, torch.tensor(w, dtype=torch.float64), density)
        assert torch.allclose(got, reference, atol=1e-10), name
        # At a rank that holds the whole matrix the factors reproduce it.
        assert torch.allclose(result.weights.modules[name].delta(torch.float64), got, atol=ATOL)
    assert result.rank == 64 and result.error < 1e-6


def test_ties_default_rank_is_the_largest_input_rank(pair: tuple[LoraWeights, LoraWeights]) -> None:
    result = merge(list(pair), [1.0, 1.0], method="ties", space="dense")
    assert result.rank == 4 and result.error > 0.0
    assert result.describe()["merge.rank"] == "4"


def test_ties_of_one_adapter_at_full_density_is_that_adapter(
    lora_base_spec: BaseModelSpec,
) -> None:
    a = random_adapter(lora_base_spec, rank=3, seed=5)
    result = merge([a], [1.0], method="ties", space="dense", density=1.0)
    for name, delta in a.deltas().items():
        assert torch.allclose(result.weights.modules[name].delta(), delta, atol=ATOL)
    assert result.rank == 3 and result.exact


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "ties", "space": "factors"}, "TIES merges dense deltas"),
        ({"method": "linear", "space": "factors", "rank": 2}, "use space='dense'"),
        ({"method": "average"}, "unknown merge method"),
        ({"method": "ties", "space": "dense", "density": 0.0}, "density"),
        ({"max_rank": 5}, "rank 6, over the limit of 5"),
    ],
)
def test_bad_merge_requests_are_rejected(
    pair: tuple[LoraWeights, LoraWeights], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        merge(list(pair), [1.0, 1.0], **kwargs)  # type: ignore[arg-type]


def test_weights_must_match_the_adapters(pair: tuple[LoraWeights, LoraWeights]) -> None:
    with pytest.raises(InvalidArgument, match="one weight per adapter"):
        merge(list(pair), [1.0])
