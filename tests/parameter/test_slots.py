"""Engine slots as a paging cache: decisions, pins, hints, and an engine that follows them."""

from __future__ import annotations

import random

import pytest
import torch

from memos.engines.lora import LoRAEngine
from memos.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from memos.tiers.parameter.slots import AdapterSlots, SlotDecision, carry_out
from tests.fixtures.adapters import random_adapter


def test_lru_decisions_load_and_unload_the_least_recent() -> None:
    slots = AdapterSlots(2, "lru")
    assert slots.request("a") == SlotDecision(False, "a", ())
    assert slots.request("b") == SlotDecision(False, "b", ())
    assert slots.request("a") == SlotDecision(True)
    assert slots.request("c") == SlotDecision(False, "c", ("b",))
    assert "a" in slots and "c" in slots and "b" not in slots and len(slots) == 2
    stats = slots.stats
    assert (stats.requests, stats.hits, stats.loads, stats.unloads) == (4, 1, 3, 1)


def test_a_pinned_adapter_stays_loaded() -> None:
    slots = AdapterSlots(2, "lru")
    slots.request("a")
    slots.pin("a")
    slots.request("b")
    assert slots.request("c").unload == ("b",)
    assert slots.request("d").unload == ("c",)
    slots.pin("d")
    with pytest.raises(ResourceExhausted, match="all 2 adapter slots are pinned"):
        slots.request("e")
    slots.unpin("a")
    assert slots.request("e").unload == ("a",)
    with pytest.raises(FailedPrecondition, match="not loaded"):
        slots.pin("zzz")


def test_the_hint_steers_eviction_where_lru_would_not() -> None:
    """'b' is done (hint 1): the one-bit policy unloads it, LRU unloads the older 'a'."""
    lru = AdapterSlots(2, "lru")
    hinted = AdapterSlots(2, "robust-mark0", learned=False)
    for slots in (lru, hinted):
        slots.request("a", bit=0)
        slots.request("b", bit=1)
    assert lru.request("c").unload == ("a",)
    decision = hinted.request("c")
    assert decision.unload == ("b",) and decision.bit is None


def test_the_learned_predictor_supplies_the_bit() -> None:
    slots = AdapterSlots(4, "robust-mark0")
    assert slots.predictor is not None
    bits = {slots.request(f"a{i % 6}", bit=i % 2).bit for i in range(50)}
    assert bits <= {0, 1} and None not in bits
    assert AdapterSlots(4, "lru").predictor is None


def test_bad_requests() -> None:
    with pytest.raises(InvalidArgument, match="at least one adapter slot"):
        AdapterSlots(0)
    with pytest.raises(InvalidArgument, match="hint bit"):
        AdapterSlots(2).request("a", bit=2)
    with pytest.raises(FailedPrecondition, match="does not support pinning"):
        AdapterSlots(2, "marker").pin("a")


def test_removing_a_deleted_adapter_frees_its_slot() -> None:
    slots = AdapterSlots(2)
    slots.request("a")
    assert slots.remove("a") and "a" not in slots and not slots.remove("a")


@pytest.mark.parametrize("policy", ["lru", "robust-mark0", "marker"])
def test_decisions_replayed_keep_at_most_k_and_track_the_policy(policy: str) -> None:
    rng = random.Random(7)
    slots = AdapterSlots(3, policy)
    loaded: set[str] = set()
    for _ in range(500):
        adapter = f"a{min(int(rng.paretovariate(1.0)), 12)}"
        decision = slots.request(adapter, bit=rng.choice([None, 0, 1]))
        assert decision.hit == (adapter in loaded)
        carry_out(decision, loaded.add, loaded.remove)
        assert adapter in loaded and len(loaded) <= 3
        assert all(a in slots for a in loaded) and len(slots) == len(loaded)


def test_an_engine_driven_by_the_slots_serves_every_adapter(lora_engine: LoRAEngine) -> None:
    adapters = {f"a{i}": random_adapter(lora_engine.spec, seed=i) for i in range(4)}
    prompt = lora_engine.engine.tokenize("slots")
    expected = {}
    for name, weights in adapters.items():
        lora_engine.load(name, weights)
        with lora_engine.use(name) as hf:
            expected[name] = hf.prefill(prompt).logits.clone()
        lora_engine.unload(name)
    slots = AdapterSlots(2)
    for name in ["a0", "a1", "a0", "a2", "a3", "a1", "a1", "a0"]:
        decision = slots.request(name)
        carry_out(decision, lambda n: lora_engine.load(n, adapters[n]), lora_engine.unload)
        assert set(lora_engine.loaded) == {a for a in adapters if a in slots}
        with lora_engine.use(name) as hf:
            assert torch.equal(hf.prefill(prompt).logits, expected[name])
