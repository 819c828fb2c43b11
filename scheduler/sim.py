"""Run a policy over a request sequence and count what it cost."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from scheduler.policy import Policy


@dataclass(slots=True)
class SimResult:
    """Totals of one or more runs."""

    requests: int = 0
    misses: int = 0
    #: Bytes fetched on misses (size-weighted misses).
    byte_misses: int = 0
    #: Sum of the miss costs (cost-weighted misses).
    cost_misses: float = 0.0
    requested_bytes: int = 0
    total_cost: float = 0.0
    #: Misses the policy could not admit (too large for the budget beside pinned items).
    rejected: int = 0

    def __add__(self, other: SimResult) -> SimResult:
        return SimResult(
            self.requests + other.requests,
            self.misses + other.misses,
            self.byte_misses + other.byte_misses,
            self.cost_misses + other.cost_misses,
            self.requested_bytes + other.requested_bytes,
            self.total_cost + other.total_cost,
            self.rejected + other.rejected,
        )

    @property
    def miss_ratio(self) -> float:
        return self.misses / self.requests if self.requests else 0.0

    @property
    def byte_miss_ratio(self) -> float:
        return self.byte_misses / self.requested_bytes if self.requested_bytes else 0.0

    @property
    def cost_miss_ratio(self) -> float:
        return self.cost_misses / self.total_cost if self.total_cost else 0.0


def count_misses(
    policy: Policy,
    keys: Sequence[Hashable],
    bits: Sequence[int | None] | None = None,
    next_arrivals: Sequence[float] | None = None,
) -> int:
    """Misses of a unit-size run (the fast path for paging traces)."""
    req = policy.request
    misses = 0
    if next_arrivals is not None:
        if not policy.uses_next_arrival:
            raise ValueError(f"policy {policy.name!r} takes no next-arrival predictions")
        bit_seq: Sequence[int | None] = bits if bits is not None else [None] * len(keys)
        for key, b, a in zip(keys, bit_seq, next_arrivals, strict=True):
            if not req(key, 1, 1.0, b, next_arrival=a).hit:  # type: ignore[call-arg]
                misses += 1
        return misses
    if bits is None:
        for key in keys:
            if not req(key).hit:
                misses += 1
        return misses
    for key, b in zip(keys, bits, strict=True):
        if not req(key, 1, 1.0, b).hit:
            misses += 1
    return misses


def simulate(
    policy: Policy,
    keys: Sequence[Hashable],
    *,
    sizes: Sequence[int] | None = None,
    costs: Sequence[float] | None = None,
    bits: Sequence[int | None] | None = None,
    next_arrivals: Sequence[float] | None = None,
) -> SimResult:
    """Feed ``policy`` every request and total misses, byte misses and cost-weighted misses.

    Hits are recognised by ``Outcome.hit`` (a resize on a hit is still a hit).
    """
    n = len(keys)
    for name, seq in (("sizes", sizes), ("costs", costs), ("bits", bits)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries for {n} requests")
    if next_arrivals is not None and not policy.uses_next_arrival:
        raise ValueError(f"policy {policy.name!r} takes no next-arrival predictions")
    res = SimResult(requests=n)
    req = policy.request
    for t in range(n):
        key = keys[t]
        size = 1 if sizes is None else sizes[t]
        cost = 1.0 if costs is None else costs[t]
        b = None if bits is None else bits[t]
        if next_arrivals is None:
            out = req(key, size, cost, b)
        else:
            out = req(key, size, cost, b, next_arrival=next_arrivals[t])  # type: ignore[call-arg]
        res.requested_bytes += size
        res.total_cost += cost
        if not out.hit:
            res.misses += 1
            res.byte_misses += size
            res.cost_misses += cost
            if not out.admitted:
                res.rejected += 1
    return res
