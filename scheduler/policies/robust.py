"""Follow-the-better: serve with whichever of two shadow policies has cost less lately.

Both policies run on metadata only (shadow caches of keys). The real cache follows the
current leader lazily: on a miss it evicts pages it holds that the leader does not (the
leader's evictions, in the order the leader made them), so a switch costs no eager
refetching. Costs are cost-weighted misses, discounted: each request on which a shadow
missed multiplies both costs by a factor that halves them every ``window / 2`` such
requests (about as much evidence as a sliding window of ``window`` of them; O(1));
``window=None`` uses cumulative costs. The leader changes when its cost exceeds ``lam``
times the other's plus ``margin``.

Why discounted rather than a sliding window kept as two half-windows: dropping a
half-window throws half the evidence away at once, and right after it the leader follows
whatever the last half-window said. Measured on the LoRA-slots trace at k = 4 with weak
learned bits (Mark0 5% worse than LRU overall, slightly better on a few stretches), the
half-windows switched 31 times and paid 57 misses over LRU, all of it while following
Mark0 on stretches where it was worse; the switches themselves cost nothing (the real
cache stayed within a few misses of its leader). Discounted, with about as much evidence
(a half-life of ``window / 2`` weighs ~0.72 ``window`` requests in all, the half-windows
0.5 to 1 ``window``): 13 switches, 1 miss over LRU.

Robustness (Fiat et al.; Wei 2020): with a fixed cost the real cache pays at most a
constant factor over the better shadow, so wrong bits cost at most a constant factor over
the classical policy. Sized (byte budgets) when both shadows are; pinnable (the real cache
never evicts a pinned key; shadows do not see pins).
"""

from __future__ import annotations

from collections import OrderedDict

from scheduler.policies._structs import check_size
from scheduler.policy import HIT, MISS, REJECTED, BitKind, Key, Outcome, Policy


def discount(window: int | None) -> float:
    """The factor that halves a cost every ``window / 2`` steps (1.0: no discount)."""
    return 1.0 if window is None else 2.0 ** (-2.0 / window)


class FollowTheBetter(Policy):
    """CombDet over ``predicted`` and ``classical`` (index 0 and 1), starting with ``predicted``."""

    def __init__(
        self,
        budget: int,
        predicted: Policy,
        classical: Policy,
        *,
        window: int | None = 4_000,
        lam: float = 1.0,
        margin: float = 0.0,
        name: str | None = None,
    ) -> None:
        super().__init__(budget)
        if predicted.budget != budget or classical.budget != budget:
            raise ValueError("the shadow policies must have the combiner's budget")
        if window is not None and window < 2:
            raise ValueError(f"window must be >= 2 requests or None, got {window}")
        self.name = name or f"robust({predicted.name},{classical.name})"
        self._shadows = (predicted, classical)
        self._sized = predicted.sized and classical.sized
        self._na = (predicted.uses_next_arrival, classical.uses_next_arrival)
        self.lam = lam
        self.margin = margin
        self._decay = discount(window)
        # Discounted costs per shadow, and this request's costs not yet added.
        self._cost = [0.0, 0.0]
        self._new = [0.0, 0.0]
        self.leader = 0
        #: How many times the leader changed (a health signal for the predictor).
        self.switches = 0
        self._real: dict[Key, int] = {}  # resident key -> size
        self._fifo: OrderedDict[Key, None] = OrderedDict()  # unpinned keys, admission order
        # Unpinned resident keys the shadow does not hold, in the order it dropped them.
        self._extra: tuple[OrderedDict[Key, None], OrderedDict[Key, None]] = (
            OrderedDict(),
            OrderedDict(),
        )
        self._pins: dict[Key, int] = {}
        self._used = 0
        self._pinned_bytes = 0

    @property
    def bit_kind(self) -> BitKind:  # type: ignore[override]
        return self._shadows[0].bit_kind

    @property
    def sized(self) -> bool:  # type: ignore[override]
        return self._sized

    @property
    def uses_next_arrival(self) -> bool:  # type: ignore[override]
        return self._na[0] or self._na[1]

    @property
    def shadows(self) -> tuple[Policy, Policy]:
        return self._shadows

    def costs(self) -> tuple[float, float]:
        """The discounted costs of the predicted and the classical shadow."""
        return (self._cost[0], self._cost[1])

    def request(
        self,
        key: Key,
        size: int = 1,
        cost: float = 1.0,
        bit: int | None = None,
        *,
        next_arrival: float | None = None,
    ) -> Outcome:
        if self._pins and key in self._pins:
            self._check_pinned_resize(key, size)
        a, b = self._shadows
        # Clean hits come back as the shared HIT object: nothing to account for.
        if self._na[0]:
            out = a.request(key, size, cost, bit, next_arrival=next_arrival)  # type: ignore[call-arg]
        else:
            out = a.request(key, size, cost, bit)
        missed = False
        if out is not HIT:
            missed = self._note(0, out, key, cost)
        if self._na[1]:
            out = b.request(key, size, cost, bit, next_arrival=next_arrival)  # type: ignore[call-arg]
        else:
            out = b.request(key, size, cost, bit)
        if out is not HIT:
            missed = self._note(1, out, key, cost) or missed
        if missed:
            g, c, new = self._decay, self._cost, self._new
            c[0] = c[0] * g + new[0]
            c[1] = c[1] * g + new[1]
            new[0] = new[1] = 0.0
            self._follow()
        real = self._real
        old = real.get(key)
        if old is not None:
            if old == size:
                return HIT
            return self._resize(key, old, size)
        if size != 1 and not self._sized:
            self._check_unit(size)
        check_size(self.name, size)
        if size > self.budget - self._pinned_bytes:
            return REJECTED
        evicted = self._make_room(self._used + size - self.budget)
        real[key] = size
        self._used += size
        self._fifo[key] = None
        if key not in a:
            self._extra[0][key] = None
        if key not in b:
            self._extra[1][key] = None
        return Outcome(False, evicted) if evicted else MISS

    def _note(self, i: int, out: Outcome, key: Key, cost: float) -> bool:
        """Account for shadow ``i``'s outcome; return whether it missed."""
        extra = self._extra[i]
        if not out.hit:
            self._new[i] += cost
        real, pins = self._real, self._pins
        for victim in out.evicted:
            if victim in real and victim not in pins:
                extra[victim] = None
        if out.admitted:
            extra.pop(key, None)
        elif key in real and key not in pins:
            extra[key] = None
        return not out.hit

    def _follow(self) -> None:
        a, b = self._cost
        if self.leader == 0:
            if a > self.lam * b + self.margin:
                self.leader = 1
                self.switches += 1
        elif b > self.lam * a + self.margin:
            self.leader = 0
            self.switches += 1

    def _make_room(self, need: int) -> tuple[Key, ...]:
        if need <= 0:
            return ()
        evicted = []
        # The leader's own choices first, then the other shadow's, then oldest admission:
        # the last two only happen when pins hold what the leader would keep.
        sources = (self._extra[self.leader], self._extra[1 - self.leader], self._fifo)
        for source in sources:
            while need > 0 and source:
                victim = next(iter(source))
                need -= self._drop(victim)
                evicted.append(victim)
            if need <= 0:
                break
        return tuple(evicted)

    def _drop(self, key: Key) -> int:
        size = self._real.pop(key)
        self._used -= size
        self._fifo.pop(key, None)
        self._extra[0].pop(key, None)
        self._extra[1].pop(key, None)
        return size

    def _check_pinned_resize(self, key: Key, size: int) -> None:
        # Before any shadow sees the request: a refused request changes nothing.
        old = self._real[key]
        if size != old and size > self.budget - self._pinned_bytes + old:
            raise ValueError(f"pinned item {key!r} cannot grow to {size}: it would not fit")

    def _resize(self, key: Key, old: int, size: int) -> Outcome:
        check_size(self.name, size)
        pinned = key in self._pins
        room = self.budget - self._pinned_bytes + (old if pinned else 0)
        if size > room:
            if pinned:
                raise ValueError(f"pinned item {key!r} cannot grow to {size}: it would not fit")
            self._drop(key)
            return REJECTED
        if pinned:
            self._pinned_bytes += size - old
        self._real[key] = size
        self._used += size - old
        extras = [(i, e) for i, e in enumerate(self._extra) if key in e]
        for _, e in extras:
            del e[key]
        self._fifo.pop(key, None)
        evicted = self._make_room(self._used - self.budget)
        if not pinned:
            self._fifo[key] = None
            for _, e in extras:
                e[key] = None
        return Outcome(True, evicted)

    def remove(self, key: Key) -> bool:
        for shadow in self._shadows:
            shadow.remove(key)
        if key not in self._real:
            return False
        if self._pins.pop(key, 0):
            self._pinned_bytes -= self._real[key]
        self._drop(key)
        return True

    def pin(self, key: Key) -> None:
        if key in self._pins:
            self._pins[key] += 1
            return
        size = self._real[key]  # KeyError when not resident
        self._pins[key] = 1
        self._pinned_bytes += size
        self._fifo.pop(key, None)
        self._extra[0].pop(key, None)
        self._extra[1].pop(key, None)

    def unpin(self, key: Key) -> None:
        count = self._pins[key]
        if count > 1:
            self._pins[key] = count - 1
            return
        del self._pins[key]
        self._pinned_bytes -= self._real[key]
        self._fifo[key] = None
        for i, shadow in enumerate(self._shadows):
            if key not in shadow:
                self._extra[i][key] = None

    def is_pinned(self, key: Key) -> bool:
        return key in self._pins

    def __contains__(self, key: object) -> bool:
        return key in self._real

    def __len__(self) -> int:
        return len(self._real)

    @property
    def used(self) -> int:
        return self._used
