"""``robust-mark0``: follow-the-better over lazy Mark0 and LRU, fused for speed.

The same decisions as ``FollowTheBetter(budget, Mark0(budget), LRU(budget))`` (tests check
that they agree request by request), with the three caches (two shadows and the real one)
kept in one object. One dictionary maps each known key to its size and to the caches that
hold it, so a request that hits everywhere costs one lookup and two recency moves, and
allocates nothing. This is the policy the daemon defaults to: sized (byte budgets) and
pinnable. ``bit`` is a discard bit (1 = safe to evict before its next use); ``None``
counts as ``default_bit`` (1: without predictions it behaves as LRU).
"""

from __future__ import annotations

from collections import OrderedDict

from scheduler.policies._structs import check_size
from scheduler.policies.robust import discount
from scheduler.policy import HIT, MISS, REJECTED, Key, Outcome, Policy

# Where a key is, in the low bits of its code (the size is ``code >> 4``).
_LRU = 1  # the LRU shadow
_ONES = 2  # the Mark0 shadow, latest bit 1
_ZEROS = 4  # the Mark0 shadow, latest bit 0
_REAL = 8  # the real cache
_MARK0 = _ONES | _ZEROS
_HIT_ONE = _LRU | _ONES | _REAL
_HIT_ZERO = _LRU | _ZEROS | _REAL


class RobustMark0(Policy):
    """Lazy deterministic Mark0 made robust by following LRU when LRU did better lately.

    Costs are discounted, halving every ``window / 2`` requests on which a shadow missed
    (``None``: cumulative; see ``FollowTheBetter`` for why); the leader changes when its
    cost exceeds ``lam`` times the other's plus ``margin``.
    """

    name = "robust-mark0"
    sized = True
    bit_kind = "discard"

    def __init__(
        self,
        budget: int,
        *,
        window: int | None = 4_000,
        lam: float = 1.0,
        margin: float = 0.0,
        default_bit: int = 1,
    ) -> None:
        super().__init__(budget)
        if window is not None and window < 2:
            raise ValueError(f"window must be >= 2 or None, got {window}")
        self.lam = lam
        self.margin = margin
        self._default = 1 if default_bit else 0
        self._code: dict[Key, int] = {}
        # Recency orders, least recent first: the LRU shadow, and Mark0's pages by bit.
        # (Deterministic Mark0 needs no marks: see ``Mark0``.)
        self._lru: OrderedDict[Key, None] = OrderedDict()
        self._ones: OrderedDict[Key, None] = OrderedDict()
        self._zeros: OrderedDict[Key, None] = OrderedDict()
        self._lru_used = 0
        self._mark0_used = 0
        # The real cache: unpinned keys in admission order (the last-resort victims).
        self._fifo: OrderedDict[Key, None] = OrderedDict()
        self._used = 0
        self._count = 0
        self._pins: dict[Key, int] = {}
        self._pinned_bytes = 0
        # Unpinned real keys that Mark0 (resp. LRU) does not hold, in the order it dropped them.
        self._x_mark0: OrderedDict[Key, None] = OrderedDict()
        self._x_lru: OrderedDict[Key, None] = OrderedDict()
        # Discounted costs per shadow.
        self._decay = discount(window)
        self._mark0_cost = 0.0
        self._lru_cost = 0.0
        #: 0 while following Mark0, 1 while following LRU.
        self.leader = 0
        #: How many times the leader changed (a health signal for the predictor).
        self.switches = 0
        # This request's costs, not yet added (the general path).
        self._new_lru = 0.0
        self._new_mark0 = 0.0
        self._missed = False

    def costs(self) -> tuple[float, float]:
        """The discounted costs of the Mark0 and the LRU shadow."""
        return (self._mark0_cost, self._lru_cost)

    def request(
        self, key: Key, size: int = 1, cost: float = 1.0, bit: int | None = None
    ) -> Outcome:
        if bit is None:
            bit = self._default
        code = self._code.get(key)
        # Hits everywhere (the common case), with or without a change of bit.
        if bit:
            if code == size << 4 | _HIT_ONE:
                self._lru.move_to_end(key)
                self._ones.move_to_end(key)
                return HIT
            if code == size << 4 | _HIT_ZERO:
                self._lru.move_to_end(key)
                del self._zeros[key]
                self._ones[key] = None
                self._code[key] = code ^ _MARK0
                return HIT
        else:
            if code == size << 4 | _HIT_ZERO:
                self._lru.move_to_end(key)
                self._zeros.move_to_end(key)
                return HIT
            if code == size << 4 | _HIT_ONE:
                self._lru.move_to_end(key)
                del self._ones[key]
                self._zeros[key] = None
                self._code[key] = code ^ _MARK0
                return HIT
        return self._serve(key, code, size, cost, bit)

    # --- misses --------------------------------------------------------------------------

    def _serve(self, key: Key, code: int | None, size: int, cost: float, bit: int) -> Outcome:
        """A miss somewhere, without a resize: everything inline (the miss-heavy hot path)."""
        if code is None:
            if size < 1 or size > self.budget:
                return self._serve_general(key, code, size, cost, bit)
            flags = 0
        elif code >> 4 != size:
            return self._serve_general(key, code, size, cost, bit)
        else:
            flags = code & 15
        budget = self.budget
        codes, pins = self._code, self._pins
        missed = False
        new_lru = new_mark0 = 0.0
        # Shadow LRU.
        if flags & _LRU:
            self._lru.move_to_end(key)
        else:
            missed = True
            new_lru = cost
            lru = self._lru
            lru[key] = None
            flags |= _LRU
            used = self._lru_used + size
            if used > budget:
                extra = self._x_lru
                while used > budget:
                    victim = lru.popitem(last=False)[0]
                    vcode = codes[victim]
                    if vcode & 14:
                        codes[victim] = vcode & ~_LRU
                    else:
                        del codes[victim]
                    used -= vcode >> 4
                    if vcode & _REAL and victim not in pins:
                        extra[victim] = None
            self._lru_used = used
            if flags & _REAL:
                self._x_lru.pop(key, None)
        # Shadow Mark0.
        if bit:
            table, other, flag = self._ones, self._zeros, _ONES
        else:
            table, other, flag = self._zeros, self._ones, _ZEROS
        if flags & _MARK0:
            if flags & flag:
                table.move_to_end(key)
            else:
                del other[key]
                table[key] = None
                flags ^= _MARK0
        else:
            missed = True
            new_mark0 = cost
            need = self._mark0_used + size - budget
            if need > 0:
                ones, zeros, extra = self._ones, self._zeros, self._x_mark0
                while need > 0:
                    # The least recent "discardable" page, else the least recent page.
                    victim = (ones if ones else zeros).popitem(last=False)[0]
                    vcode = codes[victim]
                    if vcode & 9:
                        codes[victim] = vcode & ~_MARK0
                    else:
                        del codes[victim]
                    vsize = vcode >> 4
                    need -= vsize
                    self._mark0_used -= vsize
                    if vcode & _REAL and victim not in pins:
                        extra[victim] = None
            table[key] = None
            flags |= flag
            self._mark0_used += size
            if flags & _REAL:
                self._x_mark0.pop(key, None)
        if missed:
            g = self._decay
            a = self._mark0_cost = self._mark0_cost * g + new_mark0
            b = self._lru_cost = self._lru_cost * g + new_lru
            if self.leader == 0:
                if a > self.lam * b + self.margin:
                    self.leader = 1
                    self.switches += 1
            elif b > self.lam * a + self.margin:
                self.leader = 0
                self.switches += 1
        # The real cache.
        if flags & _REAL:
            codes[key] = size << 4 | flags
            return HIT
        if size > budget - self._pinned_bytes:
            codes[key] = size << 4 | flags
            return REJECTED
        need = self._used + size - budget
        if need > 0:
            first = self._x_mark0 if self.leader == 0 else self._x_lru
            if first:
                victim = first.popitem(last=False)[0]
                vcode = codes[victim]
                if vcode & 7:
                    codes[victim] = vcode & ~_REAL
                else:
                    del codes[victim]
                vsize = vcode >> 4
                self._used -= vsize
                self._count -= 1
                del self._fifo[victim]
                (self._x_lru if first is self._x_mark0 else self._x_mark0).pop(victim, None)
                evicted: tuple[Key, ...] = (victim,)
                if vsize < need:
                    evicted += self._make_room(need - vsize)
            else:
                evicted = self._make_room(need)
        else:
            evicted = ()
        self._used += size
        self._count += 1
        self._fifo[key] = None
        codes[key] = size << 4 | flags | _REAL
        # The key was just admitted by both shadows (it fits the budget), so no extras.
        return Outcome(False, evicted) if evicted else MISS

    # --- the general path: resizes and items larger than the budget ---------------------

    def _serve_general(
        self, key: Key, code: int | None, size: int, cost: float, bit: int
    ) -> Outcome:
        if code is None:
            old, flags = 0, 0
        else:
            old, flags = code >> 4, code & 15
            room = self.budget - self._pinned_bytes + old
            if key in self._pins and size != old and size > room:
                raise ValueError(f"pinned item {key!r} cannot grow to {size}: it would not fit")
        check_size(self.name, size)
        self._missed = False
        flags = self._serve_lru(key, flags, old, size, cost)
        flags = self._serve_mark0(key, flags, old, size, cost, bit)
        if self._missed:
            g = self._decay
            self._mark0_cost = self._mark0_cost * g + self._new_mark0
            self._lru_cost = self._lru_cost * g + self._new_lru
            self._new_mark0 = self._new_lru = 0.0
            self._follow()
        if flags & _REAL:
            outcome = HIT if old == size else self._resize_real(key, flags, old, size)
            if not outcome.admitted:  # a resize that no longer fits drops the key
                flags &= ~_REAL
        elif size > self.budget - self._pinned_bytes:
            outcome = REJECTED
        else:
            need = self._used + size - self.budget
            evicted = self._make_room(need) if need > 0 else ()
            flags |= _REAL
            self._used += size
            self._count += 1
            self._fifo[key] = None
            if not flags & _MARK0:
                self._x_mark0[key] = None
            if not flags & _LRU:
                self._x_lru[key] = None
            outcome = Outcome(False, evicted) if evicted else MISS
        if flags:
            self._code[key] = size << 4 | flags
        else:
            self._code.pop(key, None)
        return outcome

    def _clear(self, victim: Key, flag: int) -> int:
        """Take ``flag`` off a victim's code; return the victim's size."""
        code = self._code[victim]
        rest = code & ~flag
        if rest & 15:
            self._code[victim] = rest
        else:
            del self._code[victim]
        return code >> 4

    def _serve_lru(self, key: Key, flags: int, old: int, size: int, cost: float) -> int:
        lru = self._lru
        if flags & _LRU:
            lru.move_to_end(key)
            if old == size:
                return flags
            self._lru_used += size - old  # a resize: a hit unless it no longer fits
        else:
            self._new_lru += cost
            self._missed = True
            if size <= self.budget:
                lru[key] = None
                self._lru_used += size
                flags |= _LRU
        if size > self.budget:
            if flags & _LRU:
                del lru[key]
                self._lru_used -= size
                self._new_lru += cost
                self._missed = True
                flags &= ~_LRU
            if flags & _REAL and key not in self._pins:
                self._x_lru[key] = None
            return flags
        extra, pins = self._x_lru, self._pins
        while self._lru_used > self.budget:
            victim = lru.popitem(last=False)[0]
            code = self._code[victim]
            self._lru_used -= self._clear(victim, _LRU)
            if code & _REAL and victim not in pins:
                extra[victim] = None
        if flags & _REAL:
            extra.pop(key, None)
        return flags

    def _serve_mark0(self, key: Key, flags: int, old: int, size: int, cost: float, bit: int) -> int:
        ones, zeros = self._ones, self._zeros
        table, flag = (ones, _ONES) if bit else (zeros, _ZEROS)
        if flags & _MARK0:
            if flags & flag:
                table.move_to_end(key)
            else:
                del (zeros if bit else ones)[key]
                table[key] = None
                flags ^= _MARK0
            if old == size:
                return flags
            # A resize: out of its table while the others make room.
            del table[key]
            self._mark0_used -= old
            flags &= ~_MARK0
            if size > self.budget:
                self._new_mark0 += cost
                self._missed = True
        else:
            self._new_mark0 += cost
            self._missed = True
        if size > self.budget:
            if flags & _REAL and key not in self._pins:
                self._x_mark0[key] = None
            return flags
        need = self._mark0_used + size - self.budget
        if need > 0:
            extra, pins, codes = self._x_mark0, self._pins, self._code
            while need > 0:
                # The least recent "discardable" page, else the least recent page.
                victim = (ones if ones else zeros).popitem(last=False)[0]
                real = codes[victim] & _REAL
                vsize = self._clear(victim, _MARK0)
                need -= vsize
                self._mark0_used -= vsize
                if real and victim not in pins:
                    extra[victim] = None
        table[key] = None
        self._mark0_used += size
        if flags & _REAL:
            self._x_mark0.pop(key, None)
        return flags | flag

    def _follow(self) -> None:
        a, b = self._mark0_cost, self._lru_cost
        if self.leader == 0:
            if a > self.lam * b + self.margin:
                self.leader = 1
                self.switches += 1
        elif b > self.lam * a + self.margin:
            self.leader = 0
            self.switches += 1

    # --- the real cache ------------------------------------------------------------------

    def _make_room(self, need: int) -> tuple[Key, ...]:
        # The leader's own choices first, then the other shadow's, then oldest admission:
        # the last two only happen when pins hold what the leader would keep.
        if self.leader == 0:
            first, second = self._x_mark0, self._x_lru
        else:
            first, second = self._x_lru, self._x_mark0
        evicted = []
        for source in (first, second, self._fifo):
            while need > 0 and source:
                victim = next(iter(source))
                need -= self._drop(victim)
                evicted.append(victim)
            if need <= 0:
                break
        return tuple(evicted)

    def _drop(self, key: Key) -> int:
        """Take ``key`` out of the real cache; return its size."""
        size = self._clear(key, _REAL)
        self._used -= size
        self._count -= 1
        self._fifo.pop(key, None)
        self._x_mark0.pop(key, None)
        self._x_lru.pop(key, None)
        return size

    def _resize_real(self, key: Key, flags: int, old: int, size: int) -> Outcome:
        pinned = key in self._pins
        if size > self.budget - self._pinned_bytes + (old if pinned else 0):
            # (A pinned key that would not fit was refused before any shadow saw it.)
            self._used -= old
            self._count -= 1
            self._fifo.pop(key, None)
            self._x_mark0.pop(key, None)
            self._x_lru.pop(key, None)
            return REJECTED
        if pinned:
            self._pinned_bytes += size - old
        self._used += size - old
        extras = [e for e in (self._x_mark0, self._x_lru) if key in e]
        for e in extras:
            del e[key]
        self._fifo.pop(key, None)
        need = self._used - self.budget
        evicted = self._make_room(need) if need > 0 else ()
        if not pinned:
            self._fifo[key] = None
            for e in extras:
                e[key] = None
        return Outcome(True, evicted)

    # --- owner operations ----------------------------------------------------------------

    def remove(self, key: Key) -> bool:
        code = self._code.pop(key, None)
        if code is None:
            return False
        size = code >> 4
        if code & _LRU:
            del self._lru[key]
            self._lru_used -= size
        if code & _MARK0:
            del (self._ones if code & _ONES else self._zeros)[key]
            self._mark0_used -= size
        if not code & _REAL:
            return False
        if self._pins.pop(key, 0):
            self._pinned_bytes -= size
        self._used -= size
        self._count -= 1
        self._fifo.pop(key, None)
        self._x_mark0.pop(key, None)
        self._x_lru.pop(key, None)
        return True

    def pin(self, key: Key) -> None:
        if key in self._pins:
            self._pins[key] += 1
            return
        if not self._code.get(key, 0) & _REAL:
            raise KeyError(key)
        self._pins[key] = 1
        self._pinned_bytes += self._code[key] >> 4
        self._fifo.pop(key, None)
        self._x_mark0.pop(key, None)
        self._x_lru.pop(key, None)

    def unpin(self, key: Key) -> None:
        count = self._pins[key]
        if count > 1:
            self._pins[key] = count - 1
            return
        del self._pins[key]
        code = self._code[key]
        self._pinned_bytes -= code >> 4
        self._fifo[key] = None
        if not code & _MARK0:
            self._x_mark0[key] = None
        if not code & _LRU:
            self._x_lru[key] = None

    def is_pinned(self, key: Key) -> bool:
        return key in self._pins

    def __contains__(self, key: object) -> bool:
        return bool(self._code.get(key, 0) & _REAL)

    def __len__(self) -> int:
        return self._count

    @property
    def used(self) -> int:
        return self._used
