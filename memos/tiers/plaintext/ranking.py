"""Fusion of ranked lists and the optional recency / importance weighting.

By default hybrid search sums the dense and lexical scores after min-max normalising each
list, with equal weights (a convex combination, Bruch, Gai and Ingber, TOIS 2023): it keeps
how far apart the scores are, which ranks throw away, and nothing is learned. The other choice
(``plaintext.fusion = "rrf"``) is reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR
2009): a cube's score is the sum over the lists it appears in of ``1 / (k + rank)``, rank
counted from 1, with k = 60 as in the paper; it lands below BM25 alone when the dense list is
much weaker, as MiniLM is on conversational turns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Literal, TypeVar

from memos.cube import MemCube

T = TypeVar("T")

SearchMode = Literal["dense", "lexical", "hybrid"]
SEARCH_MODES: tuple[SearchMode, ...] = ("dense", "lexical", "hybrid")

PRIORITY_SCALE = 100


def reciprocal_rank_fusion(rankings: Sequence[Sequence[T]], k: int = 60) -> list[tuple[T, float]]:
    """The items of all ``rankings`` (each best first, items unique within one), by fused
    score, best first; ties keep the order of first appearance."""
    if k < 1:
        raise ValueError(f"the RRF constant must be at least 1, got {k}")
    scores: dict[T, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: kv[1], reverse=True)


def convex_combination(
    scored: Sequence[Sequence[tuple[T, float]]], weights: Sequence[float] | None = None
) -> list[tuple[T, float]]:
    """The items of all lists (each ``(item, score)``, higher better) by the weighted sum of
    their min-max normalised scores (equal weights by default), best first; an item absent
    from a list gets 0 from it, a list whose scores are all equal gives its items 1 (Bruch,
    Gai and Ingber, "An Analysis of Fusion Functions for Hybrid Retrieval", TOIS 2023)."""
    w = list(weights) if weights is not None else [1.0 / len(scored)] * len(scored)
    if len(w) != len(scored):
        raise ValueError(f"{len(w)} weights for {len(scored)} lists")
    fused: dict[T, float] = {}
    for ranking, wi in zip(scored, w, strict=True):
        if not ranking:
            continue
        lo = min(s for _, s in ranking)
        span = max(s for _, s in ranking) - lo
        for item, s in ranking:
            norm = (s - lo) / span if span > 0 else 1.0
            fused[item] = fused.get(item, 0.0) + wi * norm
    return sorted(fused.items(), key=lambda kv: kv[1], reverse=True)


def weight(
    cube: MemCube,
    score: float,
    now: datetime,
    *,
    recency_weight: float,
    half_life_s: float,
    importance_weight: float,
) -> float:
    """``score`` scaled by the cube's recency and importance (both factors 1 when off).

    Recency: ``(1 - w) + w * 0.5 ** (age / half_life)``, age since the last update, so a
    cube one half-life old keeps ``1 - w/2`` of its score. Importance: ``1 + w * p / 100``
    with the priority clamped to -100..100. Meant for positive scores (cosine of a relevant
    hit, BM25, RRF).
    """
    factor = 1.0
    if recency_weight > 0:
        age = max(0.0, (now - cube.updated_at).total_seconds())
        factor *= (1.0 - recency_weight) + recency_weight * math.pow(0.5, age / half_life_s)
    if importance_weight > 0:
        p = max(-PRIORITY_SCALE, min(PRIORITY_SCALE, cube.priority)) / PRIORITY_SCALE
        factor *= max(0.0, 1.0 + importance_weight * p)
    return score * factor
