"""Prediction-free policies: LRU (sized, pinnable), Marker (randomized) and Belady's OPT."""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict
from collections.abc import Hashable, Sequence

from scheduler.policies._structs import IndexedSet, check_size
from scheduler.policy import HIT, MISS, REJECTED, Key, Outcome, Policy


class LRU(Policy):
    """Least recently used. Sized (``budget`` in bytes, any item sizes) and pinnable.

    A miss evicts least-recently-used unpinned items until the new item fits. A resident
    item re-requested with a new size is resized in place (a hit); if the new size no
    longer fits beside the pinned items it is dropped and the outcome says
    ``admitted=False``. Pinned items keep their recency: they re-enter the order as
    most recently used when their last pin is released.
    """

    name = "lru"
    sized = True

    def __init__(self, budget: int) -> None:
        super().__init__(budget)
        # Unpinned items, least recently used first, with their sizes.
        self._order: OrderedDict[Key, int] = OrderedDict()
        # Pinned items with their sizes, and their pin counts.
        self._pinned: dict[Key, int] = {}
        self._pins: dict[Key, int] = {}
        self._used = 0
        self._pinned_bytes = 0

    def request(
        self, key: Key, size: int = 1, cost: float = 1.0, bit: int | None = None
    ) -> Outcome:
        order = self._order
        old = order.get(key)
        if old is not None:
            order.move_to_end(key)
            return HIT if old == size else self._resize(key, old, size)
        if key in self._pinned:
            old = self._pinned[key]
            return HIT if old == size else self._resize_pinned(key, old, size)
        check_size(self.name, size)
        if size > self.budget - self._pinned_bytes:
            return REJECTED
        self._used += size
        order[key] = size
        if self._used <= self.budget:
            return MISS
        return Outcome(False, self._evict_until_fits())

    def _evict_until_fits(self) -> tuple[Key, ...]:
        # The requested key sits at the MRU end and fits beside the pinned items, so the
        # loop frees enough before reaching it.
        order = self._order
        evicted = []
        while self._used > self.budget:
            victim, vsize = order.popitem(last=False)
            self._used -= vsize
            evicted.append(victim)
        return tuple(evicted)

    def _resize(self, key: Key, old: int, size: int) -> Outcome:
        check_size(self.name, size)
        if size > self.budget - self._pinned_bytes:
            del self._order[key]
            self._used -= old
            return REJECTED
        self._order[key] = size
        self._used += size - old
        if self._used <= self.budget:
            return HIT
        return Outcome(True, self._evict_until_fits())

    def _resize_pinned(self, key: Key, old: int, size: int) -> Outcome:
        check_size(self.name, size)
        if size - old > self.budget - self._pinned_bytes:
            raise ValueError(f"pinned item {key!r} cannot grow to {size}: it would not fit")
        self._pinned[key] = size
        self._pinned_bytes += size - old
        self._used += size - old
        if self._used <= self.budget:
            return HIT
        return Outcome(True, self._evict_until_fits())

    def remove(self, key: Key) -> bool:
        size = self._order.pop(key, None)
        if size is None:
            size = self._pinned.pop(key, None)
            if size is None:
                return False
            del self._pins[key]
            self._pinned_bytes -= size
        self._used -= size
        return True

    def pin(self, key: Key) -> None:
        if key in self._pins:
            self._pins[key] += 1
            return
        size = self._order.pop(key)  # KeyError when not resident
        self._pinned[key] = size
        self._pins[key] = 1
        self._pinned_bytes += size

    def unpin(self, key: Key) -> None:
        count = self._pins[key]
        if count > 1:
            self._pins[key] = count - 1
            return
        del self._pins[key]
        size = self._pinned.pop(key)
        self._pinned_bytes -= size
        self._order[key] = size

    def is_pinned(self, key: Key) -> bool:
        return key in self._pins

    def __contains__(self, key: object) -> bool:
        return key in self._order or key in self._pinned

    def __len__(self) -> int:
        return len(self._order) + len(self._pinned)

    @property
    def used(self) -> int:
        return self._used


class Marker(Policy):
    """The randomized marking algorithm (Fiat et al.): 2H_k-competitive. Unit-size only.

    A request marks its page. A miss on a full cache evicts a uniformly random unmarked
    page; when every page is marked, a new phase starts and all marks are cleared.
    """

    name = "marker"

    def __init__(self, budget: int, *, seed: int = 0) -> None:
        super().__init__(budget)
        self._rng = random.Random(seed)
        self._cache: set[Key] = set()
        self._unmarked = IndexedSet()

    def request(
        self, key: Key, size: int = 1, cost: float = 1.0, bit: int | None = None
    ) -> Outcome:
        if key in self._cache:
            self._unmarked.discard(key)
            return HIT
        self._check_unit(size)
        cache = self._cache
        if len(cache) < self.budget:
            cache.add(key)
            return MISS
        unmarked = self._unmarked
        if not unmarked:
            # Every page is marked: a new phase; the reset is paid for by the >= k
            # requests that marked them.
            for page in cache:
                unmarked.add(page)
        victim = unmarked.choice(self._rng)
        unmarked.discard(victim)
        cache.discard(victim)
        cache.add(key)
        return Outcome(False, (victim,))

    def remove(self, key: Key) -> bool:
        if key not in self._cache:
            return False
        self._cache.discard(key)
        self._unmarked.discard(key)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._cache

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def used(self) -> int:
        return len(self._cache)


def next_uses(keys: Sequence[Hashable]) -> list[int]:
    """For each request, the index of the next request of the same key (``len(keys)`` if none)."""
    n = len(keys)
    nxt = [n] * n
    last: dict[Hashable, int] = {}
    for t in range(n - 1, -1, -1):
        key = keys[t]
        nxt[t] = last.get(key, n)
        last[key] = t
    return nxt


class Belady(Policy):
    """Belady's lazy OPT (LFD): evict the page requested furthest in the future.

    Offline: it is built from the whole trace (``Belady(k, keys)``) and must then be fed that
    trace in order; a request that departs from it raises ``ValueError``. Pages never
    requested again tie at "infinity" and go oldest-last-request first. ``next_use``
    optionally replaces the true next-use times (e.g. noisy predicted times), turning it
    into follow-the-prediction with the same tie rule.

    Unit sizes: exactly OPT. With sizes (``request(key, size)``, a byte budget) it evicts
    furthest-first until the item fits: a labelling heuristic, not the (NP-hard) sized
    optimum.
    """

    name = "opt"
    sized = True

    def __init__(
        self, budget: int, keys: Sequence[Hashable], next_use: Sequence[float] | None = None
    ) -> None:
        super().__init__(budget)
        self._size: dict[Key, int] = {}
        self._used = 0
        self._keys = keys
        self._n = len(keys)
        self._next: Sequence[float] = next_uses(keys) if next_use is None else next_use
        self._t = 0
        # page -> its current priority; heap of (-priority, page), stale entries skipped.
        self._prio: dict[Key, float] = {}
        self._heap: list[tuple[float, int, Key]] = []
        #: For each eviction, the index of the victim's most recent request (oracle bits).
        self.evicted_at: list[int] = []
        self._last: dict[Key, int] = {}

    def _priority(self, t: int) -> float:
        nxt = self._next[t]
        if nxt >= self._n:
            # Never requested again: all tie above any real time; oldest request first.
            return 2.0 * self._n - t + (nxt - self._n)
        return nxt

    def request(
        self, key: Key, size: int = 1, cost: float = 1.0, bit: int | None = None
    ) -> Outcome:
        t = self._t
        if t >= self._n or self._keys[t] != key:
            raise ValueError(
                f"opt is offline: request {t} is {key!r}, but the trace it was built from "
                "says otherwise; feed it exactly its trace"
            )
        self._t = t + 1
        prio = self._priority(t)
        prios = self._prio
        self._last[key] = t
        if key in prios:
            prios[key] = prio
            heapq.heappush(self._heap, (-prio, t, key))
            self._compact()
            if size != self._size[key]:
                raise ValueError("opt: an item's size must not change within a trace")
            return HIT
        if size > self.budget:
            return REJECTED
        outcome = MISS
        if self._used + size > self.budget:
            heap, sizes = self._heap, self._size
            evicted = []
            while self._used + size > self.budget:
                negp, _, victim = heapq.heappop(heap)
                if prios.get(victim) == -negp:
                    del prios[victim]
                    self._used -= sizes.pop(victim)
                    self.evicted_at.append(self._last.pop(victim))
                    evicted.append(victim)
            outcome = Outcome(False, tuple(evicted))
        prios[key] = prio
        self._size[key] = size
        self._used += size
        heapq.heappush(self._heap, (-prio, t, key))
        return outcome

    def _compact(self) -> None:
        if len(self._heap) > 4 * len(self._prio) + 64:
            # Stale entries outnumber live ones: rebuild (amortised O(1) per request).
            last = self._last
            self._heap = [(-p, last[k], k) for k, p in self._prio.items()]
            heapq.heapify(self._heap)

    def remove(self, key: Key) -> bool:
        raise NotImplementedError("opt is offline: it cannot drop pages outside its trace")

    def __contains__(self, key: object) -> bool:
        return key in self._prio

    def __len__(self) -> int:
        return len(self._prio)

    @property
    def used(self) -> int:
        return self._used
