"""One-bit policies (Antoniadis et al., "Paging with Succinct Predictions", ICML 2023).

- ``Mark0``: lazy Mark0 for *discard* bits (1 = "safe to evict before its next use").
  With perfect bits it misses exactly as often as Belady's OPT. Deterministic or
  randomized in its fallback branch. Sized: a miss evicts until the item fits.
- ``MarkPredict``: Mark&Predict for *phase* bits (1 = "requested again in the next
  k-phase"). With perfect bits it is the best marking algorithm (2-consistent); random
  choice inside each class keeps it O(log k)-robust. Unit-size only.

Neither is robust on its own against adversarial bits; wrap them in
``scheduler.policies.robust.FollowTheBetter``.
"""

from __future__ import annotations

import random
from collections import OrderedDict

from scheduler.policies._structs import IndexedSet, check_size
from scheduler.policy import HIT, MISS, REJECTED, Key, Outcome, Policy


class Mark0(Policy):
    """Lazy Mark0 on discard bits. Sized (byte budget), deterministic or randomized.

    On a miss with no room: evict the least recently used page whose latest bit is 1. When
    every page says "keep" (some bit was wrong), evict an unmarked page (least recently
    used one, or a uniformly random one when ``randomized``), starting a new marking round
    when all are marked. A request marks its page. ``bit=None`` counts as ``default_bit``
    (1 by default, so that without predictions Mark0 is LRU).

    The deterministic variant keeps no marks: a page marked in the current round was
    requested after the round began, so it is more recent than every unmarked page, and
    "the least recent unmarked page, or after a reset the least recent page" is always
    simply the least recent page.
    """

    name = "mark0"
    sized = True
    bit_kind = "discard"

    def __init__(
        self, budget: int, *, randomized: bool = False, seed: int = 0, default_bit: int = 1
    ) -> None:
        super().__init__(budget)
        self.randomized = randomized
        if randomized:
            self.name = "mark0-rand"
        self._rng = random.Random(seed)
        self._default = 1 if default_bit else 0
        # Resident pages by latest bit, least recently used first, with their sizes.
        self._ones: OrderedDict[Key, int] = OrderedDict()
        self._zeros: OrderedDict[Key, int] = OrderedDict()
        # Unmarked resident pages (randomized variant only), indexable for random choice.
        self._unmarked_rand = IndexedSet()
        self._used = 0

    def request(
        self, key: Key, size: int = 1, cost: float = 1.0, bit: int | None = None
    ) -> Outcome:
        one = self._default if bit is None else bit
        ones, zeros = self._ones, self._zeros
        old = ones.get(key)
        if old is None:
            old = zeros.get(key)
        if old is not None:
            if one:
                if key in ones:
                    ones.move_to_end(key)
                else:
                    ones[key] = zeros.pop(key)
            elif key in zeros:
                zeros.move_to_end(key)
            else:
                zeros[key] = ones.pop(key)
            self._mark(key)
            if old == size:
                return HIT
            return self._resize(key, old, size, one)
        check_size(self.name, size)
        if size > self.budget:
            return REJECTED
        evicted = self._make_room(self._used + size - self.budget)
        (ones if one else zeros)[key] = size
        self._used += size
        return Outcome(False, evicted) if evicted else MISS

    def _mark(self, key: Key) -> None:
        if self.randomized and self._unmarked_rand:
            self._unmarked_rand.discard(key)

    def _make_room(self, need: int) -> tuple[Key, ...]:
        if need <= 0:
            return ()
        evicted = []
        ones, zeros = self._ones, self._zeros
        while need > 0 and ones:
            victim, vsize = ones.popitem(last=False)
            self._mark(victim)
            need -= vsize
            self._used -= vsize
            evicted.append(victim)
        while need > 0:
            # Every resident page says "keep": fall back to marking among them.
            victim = self._pick_unmarked()
            vsize = zeros.pop(victim)
            need -= vsize
            self._used -= vsize
            evicted.append(victim)
        return tuple(evicted)

    def _pick_unmarked(self) -> Key:
        if self.randomized:
            unmarked = self._unmarked_rand
            if not unmarked:
                for page in self._zeros:
                    unmarked.add(page)
            victim = unmarked.choice(self._rng)
            unmarked.discard(victim)
            return victim
        return next(iter(self._zeros))

    def _resize(self, key: Key, old: int, size: int, one: int) -> Outcome:
        check_size(self.name, size)
        table = self._ones if one else self._zeros
        del table[key]
        self._used -= old
        if size > self.budget:
            return REJECTED
        evicted = self._make_room(self._used + size - self.budget)
        table[key] = size
        self._used += size
        return Outcome(True, evicted)

    def remove(self, key: Key) -> bool:
        size = self._ones.pop(key, None)
        if size is None:
            size = self._zeros.pop(key, None)
            if size is None:
                return False
        self._unmarked_rand.discard(key)
        self._used -= size
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._ones or key in self._zeros

    def __len__(self) -> int:
        return len(self._ones) + len(self._zeros)

    @property
    def used(self) -> int:
        return self._used


class MarkPredict(Policy):
    """Mark&Predict on phase bits (1 = "requested again in the next phase"). Unit-size only.

    A marking algorithm: on a miss with a full cache it evicts a uniformly random unmarked
    page among those whose latest bit is 0 ("not needed this phase"), or among all unmarked
    pages if none is. ``bit=None`` counts as ``default_bit`` (0: plain Marker).
    """

    name = "mark-predict"
    bit_kind = "phase"

    def __init__(self, budget: int, *, seed: int = 0, default_bit: int = 0) -> None:
        super().__init__(budget)
        self._rng = random.Random(seed)
        self._default = 1 if default_bit else 0
        self._pred: dict[Key, int] = {}  # resident page -> latest bit
        self._unmarked0 = IndexedSet()
        self._unmarked1 = IndexedSet()

    def request(
        self, key: Key, size: int = 1, cost: float = 1.0, bit: int | None = None
    ) -> Outcome:
        pred = self._pred
        b = self._default if bit is None else (1 if bit else 0)
        if key in pred:
            if self._unmarked0 or self._unmarked1:
                self._unmarked0.discard(key)
                self._unmarked1.discard(key)
            pred[key] = b
            return HIT
        self._check_unit(size)
        if len(pred) < self.budget:
            pred[key] = b
            return MISS
        z, o = self._unmarked0, self._unmarked1
        if not z and not o:
            # A new k-phase: the bits were given during the previous one, about this one.
            for page, pb in pred.items():
                (o if pb else z).add(page)
        pool = z if z else o
        victim = pool.choice(self._rng)
        pool.discard(victim)
        del pred[victim]
        pred[key] = b
        return Outcome(False, (victim,))

    def remove(self, key: Key) -> bool:
        if self._pred.pop(key, None) is None:
            return False
        self._unmarked0.discard(key)
        self._unmarked1.discard(key)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._pred

    def __len__(self) -> int:
        return len(self._pred)

    @property
    def used(self) -> int:
        return len(self._pred)
