"""Noise on prediction bits: symmetric flips and one-sided flips named by their effect.

The two error types (``research/paging.md`` §1):
- false keep (FK): the bit keeps a page that OPT drops. Discard bits: 0 instead of 1.
  Phase bits: 1 ("needed") instead of 0. The expensive error (up to k-1 misses each).
- false evict (FE): the bit drops a page that OPT keeps. Discard bits: 1 instead of 0.
  Phase bits: 0 instead of 1. The cheap error (at most one miss each).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

BitKind = Literal["discard", "phase"]


def flip(bits: Sequence[int], p: float, seed: int = 0) -> list[int]:
    """Flip every bit independently with probability ``p`` (``p=1`` inverts them all)."""
    if p <= 0:
        return list(bits)
    rng = random.Random(seed)
    return [b ^ 1 if rng.random() < p else b for b in bits]


def _one_sided(bits: Sequence[int], p: float, seed: int, source: int) -> list[int]:
    if p <= 0:
        return list(bits)
    rng = random.Random(seed)
    return [b ^ 1 if b == source and rng.random() < p else b for b in bits]


def false_evict(
    bits: Sequence[int], p: float, kind: BitKind = "discard", seed: int = 0
) -> list[int]:
    """Turn each "keep" bit into a false "evict" with probability ``p``."""
    return _one_sided(bits, p, seed, 0 if kind == "discard" else 1)


def false_keep(
    bits: Sequence[int], p: float, kind: BitKind = "discard", seed: int = 0
) -> list[int]:
    """Turn each "evict" bit into a false "keep" with probability ``p``."""
    return _one_sided(bits, p, seed, 1 if kind == "discard" else 0)


def count_errors(
    bits: Sequence[int], truth: Sequence[int], kind: BitKind = "discard"
) -> tuple[int, int]:
    """(false evicts, false keeps) of ``bits`` against ``truth``."""
    keep = 0 if kind == "discard" else 1
    fe = fk = 0
    for b, t in zip(bits, truth, strict=True):
        if b != t:
            if t == keep:
                fe += 1
            else:
                fk += 1
    return fe, fk
