"""The follow-the-better combiner: the fused robust-mark0 equals the generic combiner."""

from __future__ import annotations

import random

import pytest

from scheduler import make_policy
from scheduler.policies.classic import LRU
from scheduler.policies.one_bit import Mark0
from scheduler.policies.robust import FollowTheBetter
from scheduler.policies.robust_mark0 import RobustMark0
from scheduler.policy import Outcome
from scheduler.predict.noise import flip
from scheduler.predict.oracle import discard_bits
from tests.scheduler._traces import traces


@pytest.mark.parametrize(("window", "p"), [(10_000, 0.1), (10_000, 0.5), (None, 0.3), (200, 1.0)])
def test_fused_robust_mark0_makes_the_generic_combiners_decisions(
    window: int | None, p: float
) -> None:
    for i, keys in enumerate(traces("brightkite")[:15]):
        bits = flip(discard_bits(keys, 10), p, seed=i)
        generic = FollowTheBetter(10, Mark0(10), LRU(10), window=window)
        fused = RobustMark0(10, window=window)
        for key, b in zip(keys, bits, strict=True):
            assert generic.request(key, bit=b) == fused.request(key, bit=b)
        assert generic.switches == fused.switches


def test_fused_and_generic_agree_with_sizes_pins_and_removals() -> None:
    rng = random.Random(4)
    generic = FollowTheBetter(500, Mark0(500), LRU(500), window=300)
    fused = RobustMark0(500, window=300)
    size_of = {k: rng.choice((1, 20, 90, 200)) for k in range(50)}
    pinned: list[int] = []
    current = dict(size_of)
    for t in range(20_000):
        key = int(rng.paretovariate(0.8)) % 50
        roll = rng.random()
        if roll < 0.03 and key in fused:
            generic.pin(key)
            fused.pin(key)
            pinned.append(key)
        elif roll < 0.06 and pinned:
            victim = pinned.pop(rng.randrange(len(pinned)))
            generic.unpin(victim)
            fused.unpin(victim)
        elif roll < 0.07:
            assert generic.remove(key) == fused.remove(key)
            while key in pinned:
                pinned.remove(key)
        else:
            size = size_of[key] if rng.random() > 0.02 else rng.choice((5, 300, 900))
            b = rng.randrange(2) if t % 5000 < 2500 else 0
            if key in pinned and size > 500 - fused._pinned_bytes + current[key]:
                for policy in (fused, generic):
                    with pytest.raises(ValueError, match="cannot grow"):
                        policy.request(key, size, 1.0, b)
                continue
            out = fused.request(key, size, 1.0, b)
            assert generic.request(key, size, 1.0, b) == out
            current[key] = size
            assert not set(out.evicted) & set(pinned)
        assert fused.used == generic.used <= 500
        assert len(fused) == len(generic)


def test_robust_pins_hold_against_the_leader() -> None:
    robust = make_policy("robust-mark0", 3)
    for key in "abc":
        robust.request(key, bit=1)
    robust.pin("a")
    outs = [robust.request(key, bit=1) for key in "defgh"]
    assert all("a" not in o.evicted for o in outs) and "a" in robust
    robust.unpin("a")
    robust.request("i", bit=1)
    robust.request("j", bit=1)
    assert "a" not in robust  # once unpinned it is the oldest and goes


def test_a_miss_that_cannot_fit_beside_pinned_items_is_rejected() -> None:
    robust = make_policy("robust-mark0", 10)
    robust.request("kv", 8)
    robust.pin("kv")
    robust.request("t", 2)
    assert robust.request("u", 3) == Outcome(False, (), False)
    assert "t" in robust and robust.used == 10
    assert robust.request("v", 2) == Outcome(False, ("t",))
