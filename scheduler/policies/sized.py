"""Size- and cost-aware policies for byte budgets: GreedyDual-Size and its bit-aware variant.

- ``GreedyDualSize`` (Cao and Irani; Young's Landlord with credit reset on hits): each item
  holds credit H = L + cost / size, set on admission and on every hit; a miss evicts the
  item of least H and raises the inflation L to it. k-competitive for cost-weighted misses.
  With ``frequency=True`` it is GDSF (credit L + hits * cost / size).
- ``GreedyDualSizeBits`` ("Mark0-Landlord", ``research/paging.md`` §9): items whose latest
  discard bit is 1 go first, in GreedyDual order among themselves (least credit, so cheap
  bytes and old items first); when no item says "discard", it is GreedyDual-Size among the
  rest. ``bit=None`` counts as 0, so without predictions it *is* GreedyDual-Size. On unit
  sizes and costs the credit order is recency order, so with perfect bits it is lazy
  Mark0's "least recent discardable page" rule and misses exactly as often as OPT.
  (The research note suggests largest-first among discardable items; on the synthetic
  workload both orders gave the same cost within 0.1%, and credit order degrades more
  gently when a wrong bit lands on an expensive KV block.)

Both are sized and pinnable. Heaps use lazy deletion: a stale entry is skipped when
popped, and a heap is rebuilt when stale entries outnumber live ones.
"""

from __future__ import annotations

import heapq

from scheduler.policies._structs import check_size
from scheduler.policy import HIT, MISS, REJECTED, Key, Outcome, Policy


class GreedyDualSize(Policy):
    """GreedyDual-Size (or GDSF with ``frequency=True``). Sized and pinnable."""

    name = "gds"
    sized = True

    def __init__(self, budget: int, *, frequency: bool = False) -> None:
        super().__init__(budget)
        self.frequency = frequency
        if frequency:
            self.name = f"{self.name}f"
        self.inflation = 0.0
        self._size: dict[Key, int] = {}
        self._credit: dict[Key, float] = {}
        self._hits: dict[Key, int] = {}
        self._stamp: dict[Key, int] = {}  # the seq of the key's live credit-heap entry
        self._heap: list[tuple[float, int, Key]] = []
        self._seq = 0
        self._pins: dict[Key, int] = {}
        self._used = 0
        self._pinned_bytes = 0

    # Where an unpinned item waits to be evicted; the bit-aware subclass has two places.
    def _place(self, key: Key, bit: int | None) -> None:
        self._seq += 1
        self._stamp[key] = self._seq
        heapq.heappush(self._heap, (self._credit[key], self._seq, key))

    def _unplace(self, key: Key) -> None:
        self._stamp.pop(key, None)

    def _score(self, key: Key, size: int, cost: float) -> float:
        if self.frequency:
            return self.inflation + self._hits[key] * cost / size
        return self.inflation + cost / size

    def request(
        self, key: Key, size: int = 1, cost: float = 1.0, bit: int | None = None
    ) -> Outcome:
        old = self._size.get(key)
        if old is not None:
            if self.frequency:
                self._hits[key] += 1
            if old != size:
                return self._resize(key, old, size, cost, bit)
            self._credit[key] = self._score(key, size, cost)
            if key not in self._pins:
                self._place(key, bit)
                self._compact()
            return HIT
        check_size(self.name, size)
        if size > self.budget - self._pinned_bytes:
            return REJECTED
        evicted = self._make_room(self._used + size - self.budget)
        self._size[key] = size
        self._hits[key] = 1
        self._used += size
        self._credit[key] = self._score(key, size, cost)
        self._place(key, bit)
        return Outcome(False, evicted) if evicted else MISS

    def _pop_least(self) -> Key:
        heap, stamp = self._heap, self._stamp
        while True:
            credit, seq, key = heapq.heappop(heap)
            if stamp.get(key) == seq:
                del stamp[key]
                self.inflation = credit
                return key

    def _make_room(self, need: int) -> tuple[Key, ...]:
        evicted = []
        while need > 0:
            victim = self._pop_least()
            need -= self._forget(victim)
            evicted.append(victim)
        return tuple(evicted)

    def _forget(self, key: Key) -> int:
        self._unplace(key)
        size = self._size.pop(key)
        del self._credit[key], self._hits[key]
        self._used -= size
        return size

    def _compact(self) -> None:
        if len(self._heap) > 4 * len(self._stamp) + 64:
            stamp, credit = self._stamp, self._credit
            self._heap = [(credit[k], s, k) for k, s in stamp.items()]
            heapq.heapify(self._heap)

    def _resize(self, key: Key, old: int, size: int, cost: float, bit: int | None) -> Outcome:
        check_size(self.name, size)
        pinned = key in self._pins
        if size > self.budget - self._pinned_bytes + (old if pinned else 0):
            if pinned:
                raise ValueError(f"pinned item {key!r} cannot grow to {size}: it would not fit")
            self._forget(key)
            return REJECTED
        self._unplace(key)  # out of the heaps while the others make room
        self._size[key] = size
        self._used += size - old
        if pinned:
            self._pinned_bytes += size - old
        evicted = self._make_room(self._used - self.budget)
        self._credit[key] = self._score(key, size, cost)
        if not pinned:
            self._place(key, bit)
        return Outcome(True, evicted)

    def remove(self, key: Key) -> bool:
        if key not in self._size:
            return False
        if self._pins.pop(key, 0):
            self._pinned_bytes -= self._size[key]
        self._forget(key)
        return True

    def pin(self, key: Key) -> None:
        if key in self._pins:
            self._pins[key] += 1
            return
        size = self._size[key]  # KeyError when not resident
        self._pins[key] = 1
        self._pinned_bytes += size
        self._unplace(key)  # its heap entries turn stale: never a victim

    def unpin(self, key: Key) -> None:
        count = self._pins[key]
        if count > 1:
            self._pins[key] = count - 1
            return
        del self._pins[key]
        self._pinned_bytes -= self._size[key]
        # Back in play with the credit it held, floored at the current inflation.
        self._credit[key] = max(self._credit[key], self.inflation)
        self._place(key, self._last_bit(key))

    def _last_bit(self, key: Key) -> int | None:
        return None

    def is_pinned(self, key: Key) -> bool:
        return key in self._pins

    def __contains__(self, key: object) -> bool:
        return key in self._size

    def __len__(self) -> int:
        return len(self._size)

    @property
    def used(self) -> int:
        return self._used


class GreedyDualSizeBits(GreedyDualSize):
    """Mark0-Landlord: discard-bit items first (least credit first), else GDS.

    Sized and pinnable. ``bit`` is a discard bit; ``None`` counts as 0 ("keep").
    """

    name = "gds-bits"
    bit_kind = "discard"

    def __init__(self, budget: int, *, frequency: bool = False) -> None:
        super().__init__(budget, frequency=frequency)
        # Items whose latest bit is 1: heap of (credit, seq, key); seq identifies the live one.
        self._ones: dict[Key, int] = {}
        self._ones_heap: list[tuple[float, int, Key]] = []
        self._bits: dict[Key, int] = {}

    def _place(self, key: Key, bit: int | None) -> None:
        if bit:
            self._seq += 1
            self._stamp.pop(key, None)
            self._ones[key] = self._seq
            self._bits[key] = 1
            heapq.heappush(self._ones_heap, (self._credit[key], self._seq, key))
        else:
            self._ones.pop(key, None)
            self._bits.pop(key, None)
            super()._place(key, bit)

    def _unplace(self, key: Key) -> None:
        self._ones.pop(key, None)
        super()._unplace(key)

    def _last_bit(self, key: Key) -> int | None:
        return self._bits.get(key)

    def _pop_least(self) -> Key:
        heap, ones = self._ones_heap, self._ones
        while heap:
            _, seq, key = heapq.heappop(heap)
            if ones.get(key) == seq:
                del ones[key]
                return key
        return super()._pop_least()

    def _forget(self, key: Key) -> int:
        self._bits.pop(key, None)
        return super()._forget(key)

    def _compact(self) -> None:
        super()._compact()
        if len(self._ones_heap) > 4 * len(self._ones) + 64:
            self._ones_heap = [(self._credit[k], s, k) for k, s in self._ones.items()]
            heapq.heapify(self._ones_heap)
