"""Oracle bits, noise models and bit sources."""

from __future__ import annotations

import random

import pytest

from scheduler.policies.one_bit import Mark0, MarkPredict
from scheduler.predict.noise import count_errors, false_evict, false_keep, flip
from scheduler.predict.oracle import (
    discard_bits,
    next_uses,
    noisy_discard_bits,
    noisy_next_arrivals,
    noisy_phase_bits,
    phase_bits,
    phase_ids,
)
from scheduler.predict.sources import BitSpec, oracle_bits
from scheduler.sim import count_misses


def naive_lfd_bits(keys: list[str], k: int) -> list[int]:
    """O(n k) LFD: evict the page requested furthest away (never again: oldest first)."""
    n = len(keys)
    nxt = next_uses(keys)
    cache: dict[str, int] = {}  # page -> index of its latest request
    bits = [0] * n
    for t, key in enumerate(keys):
        if key not in cache and len(cache) == k:

            def far(p: str) -> tuple[int, int]:
                return (nxt[cache[p]], -cache[p])

            victim = max(cache, key=far)
            bits[cache.pop(victim)] = 1
        cache[key] = t
    assert n == len(bits)
    return bits


def test_next_uses_and_phases() -> None:
    assert next_uses(list("abab")) == [2, 3, 4, 4]
    # k = 2: phases are maximal blocks with at most 2 distinct pages.
    keys = list("aabbcacbd")
    assert phase_ids(keys, 2) == [0, 0, 0, 0, 1, 1, 1, 2, 2]
    # A phase bit says "requested in the next phase": only a (phase 0) is, in phase 1.
    assert phase_bits(keys, 2) == [1, 1, 0, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_discard_bits_are_what_lfd_evicts(k: int) -> None:
    rng = random.Random(k)
    keys = [f"p{int(rng.paretovariate(0.7)) % 12}" for _ in range(400)]
    assert discard_bits(keys, k) == naive_lfd_bits(keys, k)


def test_zero_sigma_noise_keeps_the_oracle() -> None:
    rng = random.Random(0)
    keys = [rng.randrange(20) for _ in range(3_000)]
    assert noisy_discard_bits(keys, 5, 0.0) == discard_bits(keys, 5)
    arrivals = noisy_next_arrivals(keys, 0.0)
    assert arrivals == [
        float(t) + 1.0 if t < len(keys) else 10_000.0 * len(keys) + 1.0 for t in next_uses(keys)
    ]
    # Noisy phase bits agree with the truth where it matters: same Mark&Predict run.
    truth = count_misses(MarkPredict(5), keys, phase_bits(keys, 5))
    assert count_misses(MarkPredict(5), keys, noisy_phase_bits(keys, 5, 0.0)) == truth
    noisy = noisy_discard_bits(keys, 5, 50.0, seed=1)
    assert noisy != discard_bits(keys, 5)
    assert count_misses(Mark0(5), keys, noisy) > count_misses(Mark0(5), keys, discard_bits(keys, 5))


def test_flips_are_seeded_and_sized_by_p() -> None:
    bits = [i % 2 for i in range(10_000)]
    assert flip(bits, 0.0) == bits
    assert flip(bits, 1.0) == [b ^ 1 for b in bits]
    once = flip(bits, 0.1, seed=4)
    assert once == flip(bits, 0.1, seed=4) != flip(bits, 0.1, seed=5)
    changed = sum(a != b for a, b in zip(bits, once, strict=True))
    assert 900 < changed < 1100


@pytest.mark.parametrize("kind", ["discard", "phase"])
def test_one_sided_noise_makes_only_its_own_error(kind: str) -> None:
    truth = [i % 3 == 0 for i in range(9_000)]
    bits = [int(b) for b in truth]
    fe_only = false_evict(bits, 0.2, kind, seed=1)  # type: ignore[arg-type]
    fk_only = false_keep(bits, 0.2, kind, seed=1)  # type: ignore[arg-type]
    fe, fk = count_errors(fe_only, bits, kind)  # type: ignore[arg-type]
    assert fk == 0 and fe > 0
    fe, fk = count_errors(fk_only, bits, kind)  # type: ignore[arg-type]
    assert fe == 0 and fk > 0
    # In the discard convention a false keep turns a 1 into 0; in the phase one, 0 into 1.
    changed_to = {b for a, b in zip(bits, fk_only, strict=True) if a != b}
    assert changed_to == ({0} if kind == "discard" else {1})


def test_bit_specs_route_bits_and_reject_noise_on_non_oracle_sources() -> None:
    assert BitSpec("oracle").gives("discard") and BitSpec("oracle").gives("phase")
    assert BitSpec("oracle-phase").gives("phase") and not BitSpec("oracle-phase").gives("discard")
    assert not BitSpec("none").gives("discard")
    with pytest.raises(ValueError, match="applies to oracle bits"):
        BitSpec("learned", flip=0.1)
    keys = [i % 7 for i in range(200)]
    truth = discard_bits(keys, 3)
    assert oracle_bits(BitSpec("oracle"), "discard", keys, 3) == truth
    noisy = oracle_bits(BitSpec("oracle", false_keep=1.0), "discard", keys, 3)
    assert noisy == [0] * len(keys)
