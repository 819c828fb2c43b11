"""Every policy keeps the interface's invariants; small hand-checked cases per family."""

from __future__ import annotations

import random

import pytest

from scheduler import POLICY_NAMES, make_opt, make_policy
from scheduler.policies.next_arrival import FollowThePrediction
from scheduler.policies.one_bit import Mark0, MarkPredict
from scheduler.policies.sized import GreedyDualSize, GreedyDualSizeBits
from scheduler.policy import Outcome, Policy
from scheduler.registry import policy_info


def _drive(policy: Policy, keys: list[int], rng: random.Random, *, sizes: bool) -> None:
    """Random requests (bits, predictions, sizes, pins) with every invariant checked."""
    info = policy_info(policy.name) if policy.name in POLICY_NAMES else None
    pinnable = bool(info and info.pinnable)
    size_of = {k: (rng.choice((1, 3, 10, 40)) if sizes else 1) for k in set(keys)}
    pinned: dict[int, int] = {}
    for t, key in enumerate(keys):
        if pinnable and rng.random() < 0.05:
            victim = rng.choice(keys)
            if victim in policy:
                policy.pin(victim)
                pinned[victim] = pinned.get(victim, 0) + 1
        if pinnable and pinned and rng.random() < 0.05:
            victim = rng.choice(sorted(pinned))
            policy.unpin(victim)
            pinned[victim] -= 1
            if not pinned[victim]:
                del pinned[victim]
        before = key in policy
        bit = rng.randrange(2)
        if policy.uses_next_arrival:
            out = policy.request(key, 1, 1.0, bit, next_arrival=t + rng.random() * 50)  # type: ignore[call-arg]
        else:
            out = policy.request(key, size_of[key], 1.0, bit)
        assert out.hit == before
        assert key not in out.evicted
        assert not set(out.evicted) & set(pinned)
        assert all(e not in policy for e in out.evicted)
        assert (key in policy) == out.admitted
        assert policy.used <= policy.budget
        assert policy.used == sum(size_of[k] for k in set(keys) if k in policy)
        assert all(p in policy for p in pinned)


@pytest.mark.parametrize("name", [n for n in POLICY_NAMES if n != "opt"])
def test_unit_size_invariants(name: str) -> None:
    rng = random.Random(5)
    keys = [int(rng.paretovariate(1.0)) % 40 for _ in range(3_000)]
    _drive(make_policy(name, 8, seed=1), keys, rng, sizes=False)


@pytest.mark.parametrize("name", [n for n in POLICY_NAMES if policy_info(n).sized and n != "opt"])
def test_sized_invariants_with_pins(name: str) -> None:
    rng = random.Random(9)
    keys = [int(rng.paretovariate(1.0)) % 40 for _ in range(3_000)]
    _drive(make_policy(name, 100, seed=1), keys, rng, sizes=True)


@pytest.mark.parametrize(
    "name", [n for n in POLICY_NAMES if not policy_info(n).sized and n != "opt"]
)
def test_unit_only_policies_refuse_sizes(name: str) -> None:
    policy = make_policy(name, 4)
    with pytest.raises(ValueError, match="unit-size only"):
        if policy.uses_next_arrival:
            policy.request("a", 7, next_arrival=1.0)  # type: ignore[call-arg]
        else:
            policy.request("a", 7)


@pytest.mark.parametrize("name", [n for n in POLICY_NAMES if not policy_info(n).pinnable])
def test_policies_without_pins_say_so_by_name(name: str) -> None:
    policy = make_policy(name, 4, trace=["a"]) if name == "opt" else make_policy(name, 4)
    with pytest.raises(NotImplementedError, match=name):
        policy.pin("a")


def test_registry_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        make_policy("nope", 4)
    with pytest.raises(ValueError, match="offline"):
        make_policy("opt", 4)
    with pytest.raises(ValueError, match="budget must be positive"):
        make_policy("lru", 0)
    opt = make_opt(2, ["a", "b"])
    opt.request("a")
    with pytest.raises(ValueError, match="feed it exactly its trace"):
        opt.request("c")


def test_opt_evicts_the_page_needed_furthest_away() -> None:
    keys = list("abcabdacb")
    opt = make_opt(2, keys)
    outs = [opt.request(k) for k in keys]
    assert [o.evicted for o in outs] == [(), (), ("b",), (), ("c",), ("b",), (), ("d",), ("a",)]


def test_seeded_policies_are_reproducible_and_seed_dependent() -> None:
    rng = random.Random(0)
    keys = [rng.randrange(30) for _ in range(2_000)]
    bits = [rng.randrange(2) for _ in keys]

    def run(name: str, seed: int) -> list[Outcome]:
        policy = make_policy(name, 8, seed=seed)
        return [policy.request(k, bit=b) for k, b in zip(keys, bits, strict=True)]

    for name in ("marker", "mark0-rand", "mark-predict"):
        assert run(name, 1) == run(name, 1)
        assert run(name, 1) != run(name, 2)


def test_mark0_evicts_least_recent_discardable_then_marks() -> None:
    m = Mark0(3)
    m.request("a", bit=1)
    m.request("b", bit=0)
    m.request("c", bit=1)
    m.request("a", bit=1)  # a is now more recent than c
    assert m.request("d", bit=0).evicted == ("c",)
    assert m.request("e", bit=0).evicted == ("a",)
    # All three say "keep": the round's least recent unmarked page goes (all marked: reset).
    assert m.request("f", bit=0).evicted == ("b",)
    assert m.request("g", bit=0).evicted == ("d",)


def test_mark_predict_evicts_only_pages_not_needed_this_phase() -> None:
    for seed in range(20):
        mp = MarkPredict(3, seed=seed)
        for key, bit in (("a", 1), ("b", 0), ("c", 1)):
            mp.request(key, bit=bit)
        # New phase at d: only b is predicted unneeded, so b goes whatever the seed.
        assert mp.request("d", bit=0).evicted == ("b",)


def test_ftp_without_predictions_is_lru() -> None:
    ftp, lru = FollowThePrediction(3), make_policy("lru", 3)
    rng = random.Random(2)
    for _ in range(500):
        key = rng.randrange(8)
        assert ftp.request(key) == lru.request(key)


def test_gds_evicts_least_credit_per_byte_and_inflates() -> None:
    gds = GreedyDualSize(10)
    gds.request("cheap", 5, cost=1.0)
    gds.request("dear", 5, cost=10.0)
    assert gds.request("new", 5, cost=1.0).evicted == ("cheap",)
    assert gds.inflation == pytest.approx(0.2)
    # new's credit (0.2 + 0.2) is below dear's (2.0): it goes next, dear stays.
    assert gds.request("x", 5, cost=1.0).evicted == ("new",)
    assert "dear" in gds


def test_gds_pins_and_resizes() -> None:
    gds = GreedyDualSize(10)
    gds.request("a", 4)
    gds.request("b", 4)
    gds.pin("a")
    assert gds.request("c", 6).evicted == ("b",)
    assert gds.request("d", 7) == Outcome(False, (), False)  # only 6 bytes can be freed
    gds.unpin("a")
    assert gds.request("d", 7).evicted == ("a", "c")  # a kept its credit (0.25) while pinned
    assert gds.request("d", 2).hit and gds.used == 2


def test_gds_bits_drops_discardable_items_before_cheaper_ones() -> None:
    g = GreedyDualSizeBits(3_000)
    g.request("kv", 2_000, cost=500.0, bit=1)  # a session that ended
    g.request("t1", 500, cost=1.0, bit=0)
    g.request("t2", 500, cost=1.0, bit=0)
    assert g.request("t3", 500, cost=1.0, bit=0).evicted == ("kv",)
    # Without bits it is plain GDS: the cheap text lines go first.
    plain = GreedyDualSizeBits(3_000)
    for key, size, cost in (("kv", 2_000, 500.0), ("t1", 500, 1.0), ("t2", 500, 1.0)):
        plain.request(key, size, cost)
    assert plain.request("t3", 500, cost=1.0).evicted == ("t1",)
