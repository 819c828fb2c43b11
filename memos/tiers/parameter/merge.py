"""Fusing adapters: weighted linear and TIES merges, on the factors or on dense deltas.

Adapter i contributes ``w_i * delta_i`` per module, with ``delta_i = s_i * B_i @ A_i``
(its scale folded in); a module an adapter lacks contributes zero.

- ``linear`` on ``factors``: stack the factors, ``A = [A_1; A_2; ...]`` and
  ``B = [w_1 s_1 B_1, w_2 s_2 B_2, ...]``, so ``B @ A = sum_i w_i delta_i`` exactly, at rank
  ``r_1 + r_2 + ...`` (the stated rank; zero-padded to one rank for every module).
- ``linear`` on ``dense``: the same sum as a dense matrix per module, re-factored by a
  truncated SVD to ``rank`` (default: the sum of the ranks, which is exact).
- ``ties`` (always dense: TIES is defined on weights, not factors): trim each delta to its
  ``density`` fraction of largest-magnitude entries, elect each entry's sign from the sum of
  the trimmed deltas, average the weighted entries that agree with it (peft's ``ties``),
  then re-factor by truncated SVD to ``rank`` (default: the largest input rank).

Every result has ``alpha == r`` (scale 1) and states its rank and its reconstruction error:
``||D - B A||_F / ||D||_F`` over all modules against the dense merge D (0 for a factor
concatenation). Arithmetic runs in float64; the result takes the inputs' dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from memos.errors import InvalidArgument
from memos.tiers.parameter.weights import LoraModule, LoraWeights, lora_config

Method = Literal["linear", "ties"]
Space = Literal["factors", "dense"]


@dataclass(frozen=True, slots=True)
class MergeResult:
    weights: LoraWeights
    method: Method
    space: Space
    #: The rank of every module of the result.
    rank: int
    #: Relative Frobenius error of the result against the dense merge, all modules.
    error: float
    #: The same per module.
    module_errors: Mapping[str, float] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.error <= 1e-6

    def describe(self) -> dict[str, str]:
        """Provenance metadata for the merged adapter's record."""
        return {
            "merge.method": self.method,
            "merge.space": self.space,
            "merge.rank": str(self.rank),
            "merge.error": f"{self.error:.3e}",
        }


def merge(
    adapters: Sequence[LoraWeights],
    weights: Sequence[float],
    *,
    method: Method = "linear",
    space: Space = "factors",
    rank: int | None = None,
    density: float = 0.2,
    max_rank: int | None = None,
    base_model: str = "",
) -> MergeResult:
    """Merge ``adapters`` with ``weights`` into one adapter (see the module docstring)."""
    if len(adapters) < 1 or len(adapters) != len(weights):
        raise InvalidArgument(
            f"a merge needs one weight per adapter, got {len(adapters)} adapters and "
            f"{len(weights)} weights"
        )
    if not all(math.isfinite(w) for w in weights):
        raise InvalidArgument("merge weights must be finite")
    if rank is not None and rank < 1:
        raise InvalidArgument(f"merge rank must be >= 1, got {rank}")
    if method == "ties":
        if space != "dense":
            raise InvalidArgument("TIES merges dense deltas: use space='dense'")
        if not 0.0 < density <= 1.0:
            raise InvalidArgument(f"TIES density must be in (0, 1], got {density}")
    elif method != "linear":
        raise InvalidArgument(f"unknown merge method {method!r}: use 'linear' or 'ties'")
    if space not in ("factors", "dense"):
        raise InvalidArgument(f"unknown merge space {space!r}: use 'factors' or 'dense'")
    dtype = _common_dtype(adapters)
    if method == "linear" and space == "factors":
        if rank is not None:
            raise InvalidArgument(
                "a factor concatenation has rank sum(r_i); to choose a rank use space='dense'"
            )
        modules, out_rank = _concat(adapters, weights)
        errors = dict.fromkeys(modules, 0.0)
        total = 0.0
    else:
        dense = merged_deltas(adapters, weights, method=method, density=density)
        if rank is None:
            rank = (
                max(_module_rank_sum(adapters).values())
                if method == "linear"
                else max(a.rank for a in adapters)
            )
        modules, errors, total = _refactor(dense, rank)
        out_rank = rank
    if max_rank is not None and out_rank > max_rank:
        raise InvalidArgument(
            f"the merge has rank {out_rank}, over the limit of {max_rank}: "
            "merge on dense deltas with a smaller rank="
        )
    names = sorted(modules)
    out = LoraWeights(
        lora_config(
            rank=out_rank,
            alpha=out_rank,
            target_modules=(n.rsplit(".", 1)[-1] for n in names),
            base_model=base_model,
        ),
        {n: LoraModule(modules[n][0].to(dtype), modules[n][1].to(dtype), 1.0) for n in names},
    )
    return MergeResult(out, method, space, out_rank, total, errors)


def merged_deltas(
    adapters: Sequence[LoraWeights],
    weights: Sequence[float],
    *,
    method: Method = "linear",
    density: float = 0.2,
) -> dict[str, torch.Tensor]:
    """The dense merge D per module (float64): what a re-factored result approximates."""
    out: dict[str, torch.Tensor] = {}
    for name in _union(adapters):
        deltas = [_delta(a, name) for a in adapters]
        shape = next(d.shape for d in deltas if d is not None)
        stacked = torch.stack(
            [d if d is not None else torch.zeros(shape, dtype=torch.float64) for d in deltas]
        )
        w = torch.tensor(list(weights), dtype=torch.float64).view(-1, 1, 1)
        out[name] = (stacked * w).sum(0) if method == "linear" else ties(stacked, w, density)
    return out


def ties(deltas: torch.Tensor, weights: torch.Tensor, density: float) -> torch.Tensor:
    """TIES over stacked deltas [n, out, in] with weights [n, 1, 1] (peft's semantics)."""
    if density < 1.0:
        flat = deltas.abs().flatten(1)
        keep = int(density * flat.shape[1])
        mask = torch.zeros_like(flat)
        mask.scatter_(1, flat.topk(keep, dim=1).indices, 1.0)
        deltas = deltas * mask.view_as(deltas)
    elected = torch.where(deltas.sum(0) >= 0, 1.0, -1.0).to(deltas.dtype)
    agree = deltas.sign() == elected
    total = (deltas * weights * agree).sum(0)
    return total / agree.sum(0).clamp(min=1)


def _delta(adapter: LoraWeights, name: str) -> torch.Tensor | None:
    module = adapter.modules.get(name)
    return None if module is None else module.delta(torch.float64)


def _union(adapters: Sequence[LoraWeights]) -> list[str]:
    names: set[str] = set()
    shapes: dict[str, tuple[int, int]] = {}
    for adapter in adapters:
        for name, module in adapter.modules.items():
            shape = (int(module.b.shape[0]), int(module.a.shape[1]))
            if shapes.setdefault(name, shape) != shape:
                raise InvalidArgument(
                    f"module {name!r} has shape {list(shape)} in one adapter and "
                    f"{list(shapes[name])} in another: adapters of different base models"
                )
            names.add(name)
    return sorted(names)


def _module_rank_sum(adapters: Sequence[LoraWeights]) -> dict[str, int]:
    ranks: dict[str, int] = {}
    for adapter in adapters:
        for name, module in adapter.modules.items():
            ranks[name] = ranks.get(name, 0) + module.rank
    return ranks


def _concat(
    adapters: Sequence[LoraWeights], weights: Sequence[float]
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], int]:
    names = _union(adapters)
    rank = max(_module_rank_sum(adapters).values())
    out = {}
    for name in names:
        parts = [
            (a.modules[name], w)
            for a, w in zip(adapters, weights, strict=True)
            if name in a.modules
        ]
        a_cat = torch.cat([m.a.to(torch.float64) for m, _ in parts])
        b_cat = torch.cat([m.b.to(torch.float64) * (w * m.scale) for m, w in parts], dim=1)
        out[name] = _pad(a_cat, b_cat, rank)
    return out, rank


def _refactor(
    dense: Mapping[str, torch.Tensor], rank: int
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, float], float]:
    out = {}
    errors = {}
    residual = norm = 0.0
    for name, d in dense.items():
        u, s, vh = torch.linalg.svd(d, full_matrices=False)
        r = min(rank, int(s.shape[0]))
        root = s[:r].sqrt()
        out[name] = _pad(root[:, None] * vh[:r], u[:, :r] * root, rank)
        lost = float((s[r:] ** 2).sum())
        whole = float((s**2).sum())
        errors[name] = math.sqrt(lost / whole) if whole > 0 else 0.0
        residual += lost
        norm += whole
    return out, errors, math.sqrt(residual / norm) if norm > 0 else 0.0


def _pad(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero rows of A and columns of B up to ``rank``: the product is unchanged."""
    missing = rank - a.shape[0]
    if missing > 0:
        a = torch.cat([a, a.new_zeros(missing, a.shape[1])])
        b = torch.cat([b, b.new_zeros(b.shape[0], missing)], dim=1)
    return a, b


def _common_dtype(adapters: Sequence[LoraWeights]) -> torch.dtype:
    dtypes = {a.dtype for a in adapters}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32
