"""Policies that read a predicted next-arrival time per request (unit-size only).

``request(key, ..., next_arrival=T)`` says "this page is predicted to be requested again
at time T" (only the order of predictions matters). A request without one is predicted in
LRU order (as if T = -now), the convention of ACEPS's ``PredLRU``.

- ``FollowThePrediction`` (FtP / BlindOracle): evict the page predicted furthest away.
- ``PredictiveMarker`` (Lykouris and Vassilvitskii, ICML 2018): marking, furthest
  prediction among unmarked pages, random once an eviction chain exceeds H_k.
- ``LMarker`` (Rohatgi, SODA 2020): marking, random for stale pages, furthest prediction
  for clean ones.
- ``LNonMarkerCore`` (Rohatgi): the non-marking variant; not robust alone, so the
  registry's ``lnonmarker`` combines it with Marker (as ACEPS does).

The marking variants follow ACEPS's reference code (``adampolak/mts-with-predictions``).
"""

from __future__ import annotations

import heapq
import random
from abc import abstractmethod

from scheduler.policies._structs import IndexedSet
from scheduler.policy import HIT, MISS, Key, Outcome, Policy


class NextArrivalPolicy(Policy):
    """A unit-size policy whose ``request`` also takes ``next_arrival``."""

    uses_next_arrival = True

    def __init__(self, budget: int) -> None:
        super().__init__(budget)
        self._now = 0

    def request(
        self,
        key: Key,
        size: int = 1,
        cost: float = 1.0,
        bit: int | None = None,
        *,
        next_arrival: float | None = None,
    ) -> Outcome:
        self._now += 1
        pred = -float(self._now) if next_arrival is None else next_arrival
        return self._serve(key, size, pred)

    @abstractmethod
    def _serve(self, key: Key, size: int, pred: float) -> Outcome: ...


class FollowThePrediction(NextArrivalPolicy):
    """FtP / BlindOracle: on a miss, evict the page whose predicted next arrival is furthest.

    With exact predictions it is Belady's OPT; it has no robustness guarantee.
    """

    name = "ftp"

    def __init__(self, budget: int) -> None:
        super().__init__(budget)
        self._pred: dict[Key, float] = {}
        self._heap: list[tuple[float, int, Key]] = []
        self._seq = 0

    def _serve(self, key: Key, size: int, pred: float) -> Outcome:
        preds = self._pred
        self._seq += 1
        if key in preds:
            preds[key] = pred
            heapq.heappush(self._heap, (-pred, self._seq, key))
            if len(self._heap) > 4 * len(preds) + 64:
                self._heap = [(-p, i, k) for i, (k, p) in enumerate(preds.items())]
                heapq.heapify(self._heap)
            return HIT
        self._check_unit(size)
        outcome = MISS
        if len(preds) >= self.budget:
            heap = self._heap
            while True:
                negp, _, victim = heapq.heappop(heap)
                if preds.get(victim) == -negp:
                    break
            del preds[victim]
            outcome = Outcome(False, (victim,))
        preds[key] = pred
        heapq.heappush(self._heap, (-pred, self._seq, key))
        return outcome

    def remove(self, key: Key) -> bool:
        return self._pred.pop(key, None) is not None

    def __contains__(self, key: object) -> bool:
        return key in self._pred

    def __len__(self) -> int:
        return len(self._pred)

    @property
    def used(self) -> int:
        return len(self._pred)


class _Marking(NextArrivalPolicy):
    """Shared state of the marking algorithms with predictions.

    Unmarked pages never change their prediction (a request marks them), so the max-heap of
    unmarked predictions is rebuilt at each phase start and only loses entries in between.
    """

    def __init__(self, budget: int, *, seed: int = 0) -> None:
        super().__init__(budget)
        self._rng = random.Random(seed)
        self._pred: dict[Key, float] = {}
        self._unmarked = IndexedSet()
        self._heap: list[tuple[float, int, Key]] = []
        self._stale: set[Key] = set()

    def _new_phase(self) -> None:
        self._stale = set(self._pred)
        self._unmarked = IndexedSet(self._pred)
        self._heap = [(-p, i, k) for i, (k, p) in enumerate(self._pred.items())]
        heapq.heapify(self._heap)

    def _furthest_unmarked(self) -> Key:
        heap, unmarked = self._heap, self._unmarked
        while True:
            victim = heap[0][2]
            if victim in unmarked:
                return victim
            heapq.heappop(heap)

    def _evict(self, victim: Key) -> None:
        self._unmarked.discard(victim)
        del self._pred[victim]

    def remove(self, key: Key) -> bool:
        if self._pred.pop(key, None) is None:
            return False
        self._unmarked.discard(key)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._pred

    def __len__(self) -> int:
        return len(self._pred)

    @property
    def used(self) -> int:
        return len(self._pred)


class PredictiveMarker(_Marking):
    """Lykouris and Vassilvitskii's Predictive Marker: O(min(1 + sqrt(eta/OPT), log k))."""

    name = "predictive-marker"

    def __init__(self, budget: int, *, seed: int = 0) -> None:
        super().__init__(budget, seed=seed)
        self._hk = sum(1.0 / i for i in range(1, budget + 1))
        self._chain_of: dict[Key, int] = {}  # latest evicted page of a chain -> chain id
        self._chain_len: list[int] = []

    def _serve(self, key: Key, size: int, pred: float) -> Outcome:
        preds = self._pred
        if key in preds:
            preds[key] = pred
            self._unmarked.discard(key)
            return HIT
        self._check_unit(size)
        if len(preds) < self.budget:
            preds[key] = pred
            return MISS
        if not self._unmarked:
            self._new_phase()
            self._chain_of = {}
            self._chain_len = []
        if key not in self._stale:
            victim = self._furthest_unmarked()
            chain = len(self._chain_len)
            self._chain_len.append(1)
        else:
            chain = self._chain_of.pop(key, -1)
            if chain < 0:  # only after an owner's remove(): start a chain
                chain = len(self._chain_len)
                self._chain_len.append(0)
            self._chain_len[chain] += 1
            if self._chain_len[chain] <= self._hk:
                victim = self._furthest_unmarked()
            else:
                victim = self._unmarked.choice(self._rng)
        self._chain_of[victim] = chain
        self._evict(victim)
        preds[key] = pred
        return Outcome(False, (victim,))


class LMarker(_Marking):
    """Rohatgi's LMarker: stale pages are answered by a random unmarked eviction."""

    name = "lmarker"

    def _serve(self, key: Key, size: int, pred: float) -> Outcome:
        preds = self._pred
        if key in preds:
            preds[key] = pred
            self._unmarked.discard(key)
            return HIT
        self._check_unit(size)
        if len(preds) < self.budget:
            preds[key] = pred
            return MISS
        if not self._unmarked:
            self._new_phase()
        if key in self._stale:
            victim = self._unmarked.choice(self._rng)
        else:
            victim = self._furthest_unmarked()
        self._evict(victim)
        preds[key] = pred
        return Outcome(False, (victim,))


class LNonMarkerCore(_Marking):
    """Rohatgi's non-marking algorithm (not robust alone). Phases are the input's k-phases.

    A stale page whose evictor was itself stale is answered by a random eviction among all
    pages, otherwise among unmarked pages; clean pages evict the furthest unmarked one.
    """

    name = "lnonmarker-core"

    def __init__(self, budget: int, *, seed: int = 0) -> None:
        super().__init__(budget, seed=seed)
        self._all = IndexedSet()
        self._phase_pages: set[Key] = set()
        self._evictor: dict[Key, Key] = {}

    def _serve(self, key: Key, size: int, pred: float) -> Outcome:
        if key not in self._phase_pages:
            if len(self._phase_pages) == self.budget:
                self._new_phase()
                self._evictor = {}
                self._phase_pages = set()
            self._phase_pages.add(key)
        preds = self._pred
        if key in preds:
            preds[key] = pred
            self._unmarked.discard(key)
            return HIT
        self._check_unit(size)
        if len(preds) < self.budget:
            preds[key] = pred
            self._all.add(key)
            return MISS
        if key in self._stale:
            if self._evictor.get(key) not in self._stale:
                victim = self._all.choice(self._rng)
            else:
                victim = self._unmarked.choice(self._rng)
        else:
            victim = self._furthest_unmarked()
        self._evictor[victim] = key
        self._evict(victim)
        self._all.discard(victim)
        self._all.add(key)
        preds[key] = pred
        return Outcome(False, (victim,))

    def remove(self, key: Key) -> bool:
        self._all.discard(key)
        return super().remove(key)
