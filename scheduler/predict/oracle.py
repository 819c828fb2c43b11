"""Ground-truth bits and next-arrival times computed from a trace's future. Evaluation only.

Conventions (``research/paging.md`` §1):
- discard bit 1 = Belady (LFD) evicts the page before its next request; 0 = keep.
- phase bit 1 = the page is requested in the next k-phase; 0 = it is not.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence

from scheduler.policies.classic import Belady, next_uses

__all__ = [
    "discard_bits",
    "next_uses",
    "noisy_discard_bits",
    "noisy_next_arrivals",
    "noisy_phase_bits",
    "phase_bits",
    "phase_ids",
]


def discard_bits(
    keys: Sequence[Hashable],
    k: int,
    next_use: Sequence[float] | None = None,
    sizes: Sequence[int] | None = None,
) -> list[int]:
    """Bit 1 on each request whose page Belady evicts before that page is requested again.

    With ``next_use`` (predicted next-request times) the bits are those of LFD run on the
    predictions instead of the truth. With ``sizes``, ``k`` is a byte budget and the bits
    are those of furthest-first eviction until the item fits (a heuristic: sized OPT is
    NP-hard).
    """
    opt = Belady(k, keys, next_use)
    if sizes is None:
        for key in keys:
            opt.request(key)
    else:
        for key, size in zip(keys, sizes, strict=True):
            opt.request(key, size)
    bits = [0] * len(keys)
    for t in opt.evicted_at:
        bits[t] = 1
    return bits


def phase_ids(keys: Sequence[Hashable], k: int) -> list[int]:
    """The k-phase of every request: maximal blocks holding at most k distinct pages."""
    ids = [0] * len(keys)
    phase = 0
    seen: set[Hashable] = set()
    for t, key in enumerate(keys):
        if key not in seen:
            if len(seen) == k:
                phase += 1
                seen = set()
            seen.add(key)
        ids[t] = phase
    return ids


def phase_bits(keys: Sequence[Hashable], k: int) -> list[int]:
    """Bit 1 on each request whose page is requested in the next k-phase."""
    ids = phase_ids(keys, k)
    pages_of: dict[int, set[Hashable]] = {}
    for key, ph in zip(keys, ids, strict=True):
        pages_of.setdefault(ph, set()).add(key)
    empty: set[Hashable] = set()
    return [int(key in pages_of.get(ph + 1, empty)) for key, ph in zip(keys, ids, strict=True)]


def noisy_next_arrivals(keys: Sequence[Hashable], sigma: float, seed: int = 0) -> list[float]:
    """Predicted next-request times: truth plus LogNormal(0, sigma) noise (Lykouris and
    Vassilvitskii; ACEPS). Pages never requested again get ``10_000 * len(keys)`` plus noise.
    Only their order matters."""
    n = len(keys)
    rng = random.Random(seed)
    far = 10_000.0 * n
    out = []
    for nxt in next_uses(keys):
        true_next = float(nxt) if nxt < n else far
        out.append(true_next + (rng.lognormvariate(0.0, sigma) if sigma > 0 else 1.0))
    return out


def noisy_discard_bits(keys: Sequence[Hashable], k: int, sigma: float, seed: int = 0) -> list[int]:
    """Discard bits of LFD run on lognormally noisy next-arrival predictions."""
    return discard_bits(keys, k, noisy_next_arrivals(keys, sigma, seed))


def noisy_phase_bits(keys: Sequence[Hashable], k: int, sigma: float, seed: int = 0) -> list[int]:
    """Phase bits read off noisy next-arrival predictions: 1 iff the predicted next request
    falls before the end of the next k-phase. With ``sigma=0`` these are the true phase bits
    on every request that is its page's last of a phase (the only ones a policy keeps)."""
    ids = phase_ids(keys, k)
    end_of: dict[int, int] = {}
    for t, ph in enumerate(ids):
        end_of[ph] = t
    preds = noisy_next_arrivals(keys, sigma, seed)
    bits = []
    for t, ph in enumerate(ids):
        horizon = end_of.get(ph + 1, -1)
        bits.append(int(horizon >= 0 and preds[t] <= horizon + 1))
    return bits
