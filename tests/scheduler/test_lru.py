"""Sized, pinnable LRU: exact evictions, and a differential test against a naive model."""

from __future__ import annotations

import random

import pytest

from scheduler import make_policy
from scheduler.policies.classic import LRU
from scheduler.policy import Outcome


def test_unit_lru_evicts_least_recent() -> None:
    lru = make_policy("lru", 2)
    assert lru.request("a") == Outcome(False)
    assert lru.request("b") == Outcome(False)
    assert lru.request("a").hit
    assert lru.request("c") == Outcome(False, ("b",))
    assert "b" not in lru and "a" in lru and len(lru) == 2 and lru.used == 2


def test_sized_miss_evicts_several_until_the_item_fits() -> None:
    lru = make_policy("lru", 100)
    for key, size in (("x", 30), ("y", 30), ("z", 30)):
        lru.request(key, size)
    out = lru.request("big", 70)
    assert out == Outcome(False, ("x", "y"))
    assert lru.used == 100 and set(("z", "big")) == {k for k in ("x", "y", "z", "big") if k in lru}


def test_item_larger_than_budget_is_rejected_without_evicting() -> None:
    lru = LRU(100)
    lru.request("a", 60)
    assert lru.request("huge", 101) == Outcome(False, (), False)
    assert "a" in lru and "huge" not in lru and lru.used == 60


def test_resize_on_hit_evicts_others_or_drops_the_item() -> None:
    lru = LRU(100)
    lru.request("a", 40)
    lru.request("b", 40)
    assert lru.request("a", 70) == Outcome(True, ("b",))
    assert lru.used == 70
    assert lru.request("a", 10).hit and lru.used == 10
    assert lru.request("a", 500) == Outcome(False, (), False)
    assert "a" not in lru and lru.used == 0


def test_pinned_items_are_never_evicted_and_pins_nest() -> None:
    lru = LRU(3)
    for key in "abc":
        lru.request(key)
    lru.pin("a")
    lru.pin("a")
    assert lru.is_pinned("a")
    assert lru.request("d").evicted == ("b",)
    assert lru.request("e").evicted == ("c",)
    assert lru.request("f").evicted == ("d",)
    lru.unpin("a")
    assert lru.request("g").evicted == ("e",)  # still pinned once
    lru.unpin("a")
    assert not lru.is_pinned("a")
    # Unpinned "a" re-entered as most recently used: "f" and "g" are older.
    assert lru.request("h").evicted == ("f",)
    assert lru.request("i").evicted == ("g",)
    assert lru.request("j").evicted == ("a",)


def test_miss_that_cannot_fit_beside_pinned_items_is_rejected() -> None:
    lru = LRU(10)
    lru.request("kv", 8)
    lru.pin("kv")
    lru.request("t", 2)
    assert lru.request("u", 3) == Outcome(False, (), False)
    assert "t" in lru and lru.used == 10
    assert lru.request("v", 2) == Outcome(False, ("t",))


def test_pin_errors_and_remove_of_pinned_item() -> None:
    lru = LRU(4)
    with pytest.raises(KeyError):
        lru.pin("nope")
    with pytest.raises(KeyError):
        lru.unpin("nope")
    lru.request("a", 2)
    lru.pin("a")
    assert lru.remove("a")
    assert "a" not in lru and lru.used == 0 and not lru.is_pinned("a")
    assert not lru.remove("a")
    with pytest.raises(ValueError, match="size must be >= 1"):
        lru.request("z", 0)


class NaiveLRU:
    """The obvious O(k) model: a list, most recent last."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.items: list[tuple[str, int]] = []
        self.pins: dict[str, int] = {}

    def used(self) -> int:
        return sum(s for _, s in self.items)

    def request(self, key: str, size: int) -> tuple[bool, tuple[str, ...], bool]:
        idx = [k for k, _ in self.items].index(key) if key in dict(self.items) else -1
        hit = idx >= 0
        if hit:
            self.items.pop(idx)
        pinned_bytes = sum(s for k, s in self.items if k in self.pins)
        own_pinned = key in self.pins
        if not own_pinned and size > self.budget - pinned_bytes:
            return (False, (), False)
        if hit and key in self.pins:
            # a pinned item keeps its place: reinsert in order position is irrelevant
            pass
        evicted = []
        while self.used() + size > self.budget:
            victim = next(k for k, _ in self.items if k not in self.pins)
            self.items = [(k, s) for k, s in self.items if k != victim]
            evicted.append(victim)
        self.items.append((key, size))
        return (hit, tuple(evicted), True)


def test_matches_naive_lru_on_random_sized_requests_without_pins() -> None:
    rng = random.Random(7)
    fast, slow = LRU(1000), NaiveLRU(1000)
    sizes = {f"k{i}": rng.choice((1, 5, 50, 300, 900)) for i in range(40)}
    for _ in range(3000):
        key = f"k{int(rng.paretovariate(1.2)) % 40}"
        out = fast.request(key, sizes[key])
        hit, evicted, admitted = slow.request(key, sizes[key])
        assert (out.hit, out.evicted, out.admitted) == (hit, evicted, admitted)
        assert fast.used == slow.used() <= 1000
        assert len(fast) == len(slow.items)


def test_invariants_hold_under_random_pins() -> None:
    rng = random.Random(11)
    lru = LRU(500)
    pinned: dict[str, int] = {}
    sizes = {f"k{i}": rng.randrange(1, 98) for i in range(60)}
    for _ in range(5000):
        key = f"k{rng.randrange(60)}"
        roll = rng.random()
        if roll < 0.1 and key in lru:
            lru.pin(key)
            pinned[key] = pinned.get(key, 0) + 1
        elif roll < 0.2 and key in pinned:
            lru.unpin(key)
            pinned[key] -= 1
            if not pinned[key]:
                del pinned[key]
        else:
            out = lru.request(key, sizes[key])
            assert key not in out.evicted
            assert not set(out.evicted) & set(pinned)
            assert (key in lru) == out.admitted or key in pinned
        assert all(k in lru for k in pinned)
        assert lru.used == sum(s for k, s in sizes.items() if k in lru) <= 500
