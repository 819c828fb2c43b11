"""The tier manager on its own: page requests, the activated set's budget, hints, explain."""

from __future__ import annotations

import random
from datetime import timedelta

from memos.config import ManagerSettings
from memos.cube import Kind, MemCube, PlaintextPayload, State, utcnow
from memos.ids import new_id
from memos.manager import Hint, TierManager
from scheduler import POLICY_NAMES


def cube(text: str = "x" * 400, tenant: str = "acme", ttl_s: float | None = None) -> MemCube:
    now = utcnow()
    return MemCube(
        id=new_id(),
        tenant=tenant,
        namespace="default",
        kind=Kind.PLAINTEXT,
        state=State.ACTIVE,
        version=1,
        created_at=now,
        updated_at=now,
        expires_at=now + timedelta(seconds=ttl_s) if ttl_s else None,
        plaintext=PlaintextPayload(text=text),
    )


def manager(budget: int = 500, policy: str = "robust-mark0") -> TierManager:
    return TierManager(
        ManagerSettings(
            activated_budget_tokens=budget, activated_items=4, policies={"activated": policy}
        )
    )


def resident(m: TierManager, tenant: str = "acme") -> set[str]:
    return {p.cube_id for p in m.wanted(tenant)}


def test_the_activated_set_holds_the_hot_cubes_within_its_budget() -> None:
    m = manager(budget=500)  # 400-byte texts: ~100 tokens each, five fit
    hot = [cube() for _ in range(3)]
    cold = [cube() for _ in range(30)]
    rng = random.Random(0)
    for _ in range(400):
        if rng.random() < 0.7:
            m.record("acme", [rng.choice(hot)], "get")
        else:
            m.record("acme", [rng.choice(cold)], "search")
    for c in hot:  # a session ends on its hot memories
        m.record("acme", [c], "get")
    kept = resident(m)
    assert {c.id for c in hot} <= kept
    assert sum(p.size for p in m.wanted("acme")) <= 500
    assert len(kept) <= 5
    evicted = m.unwanted("acme")
    assert evicted and not evicted & kept
    assert m.activated.policy.used <= 500


def test_every_configured_policy_name_is_accepted() -> None:
    for name in ("lru", "robust-mark0", "gds-bits", "robust-gds-bits"):
        m = manager(policy=name)
        m.record("acme", [cube()], "get")
        assert m.activated.policy_name == name
    assert "robust-mark0" in POLICY_NAMES


def test_a_client_hint_sets_the_bit_and_is_recorded() -> None:
    m = manager()
    c = cube()
    m.record("acme", [c], "get", Hint.DONE)
    d = m.decide("acme", c.id)
    assert d.page is not None and d.page.bit == 1 and d.page.source == "hint"
    m.record("acme", [c], "get", Hint.REUSE)
    assert d.page.bit == 0 and d.page.count == 2
    assert [a.hit for a in d.page.recent] == [False, True]


def test_explain_decisions_name_the_policy_and_the_reason() -> None:
    m = manager(budget=150)  # room for one cube of ~100 tokens
    a, b = cube(), cube()
    assert "no reads" in m.decide("acme", a.id).decision
    m.record("acme", [a], "get")
    assert m.decide("acme", a.id).resident
    m.record("acme", [b], "get")
    da = m.decide("acme", a.id)
    assert not da.resident and "evicted by robust-mark0" in da.decision
    m.unplaceable("acme", b.id, "shorter than one chunk")
    db = m.decide("acme", b.id)
    assert not db.resident and db.decision.startswith("unpromotable")
    m.record("acme", [b], "get")  # an unplaceable cube is no longer a page request
    assert not m.decide("acme", b.id).resident


def test_tenants_never_share_pages() -> None:
    m = manager()
    a = cube(tenant="acme")
    m.record("acme", [a], "get")
    assert resident(m, "globex") == set()
    assert m.decide("globex", a.id).page is None


def test_expired_and_forgotten_cubes_leave_the_set() -> None:
    m = manager()
    short, kept = cube(ttl_s=1), cube()
    m.record("acme", [short, kept], "search")
    assert m.drop_expired(utcnow() + timedelta(seconds=2)) == 1
    assert resident(m) == {kept.id}
    m.forget("acme", kept.id, "fused")
    assert resident(m) == set()


def test_retrain_refits_on_the_log_once_labels_mature() -> None:
    m = manager(budget=300)
    assert m.retrain() == "no accesses logged"
    pages = [cube() for _ in range(12)]
    rng = random.Random(1)
    for _ in range(300):
        m.record("acme", [pages[min(int(rng.expovariate(0.5)), 11)]], "get")
    before = m.activated.predictor
    detail = m.retrain()
    assert detail.startswith("refit on 300 accesses"), detail
    assert m.activated.predictor is not before
    assert m.activated.predictor.labelled > 0
    m.record("acme", [pages[0]], "get")  # the refit predictor serves requests


def test_a_cube_the_client_is_done_with_is_not_worth_a_prefill_unless_bits_are_ignored() -> None:
    for policy, promoted in (("robust-mark0", False), ("lru", True)):
        m = manager(policy=policy)
        note, topic = cube(), cube()
        m.record("acme", [note, topic], "get")
        m.record("acme", [note], "get", Hint.DONE)
        assert m.decide("acme", note.id).resident  # still in the set: the policy decides that
        assert (note.id in resident(m)) is promoted, policy
        assert topic.id in resident(m)
        stats = m.stats()
        assert (stats.requests, stats.hits, stats.residents) == (3, 1, 2)
        assert stats.policy == policy and 0 < stats.used <= stats.budget


def test_search_results_read_together_reach_the_coretrieval_hook() -> None:
    m = manager()
    seen: list[tuple[str, list[str]]] = []
    m.on_search = lambda tenant, ids: seen.append((tenant, ids))
    a, b = cube(), cube()
    m.record("acme", [a, b], "search")
    m.record("acme", [a, b], "get")  # a Get is no co-retrieval
    m.record("acme", [a], "search")  # nor is a single hit
    assert seen == [("acme", [a.id, b.id])]
