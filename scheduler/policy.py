"""The one interface every paging policy implements.

A cache holds items identified by hashable keys. Each request names a key, the item's
size (1 for unit-size paging, bytes for sized caches), the cost of a miss and, optionally,
one prediction bit. The policy answers hit or miss and which keys it evicted to make room.

Invariants every implementation keeps:
- after ``request(key, ...)`` returns, ``key`` is resident (unless it alone exceeds the
  budget, or does not fit beside the pinned items: then the outcome says ``admitted=False``
  and nothing else is evicted for it);
- the sum of resident sizes never exceeds ``budget``;
- ``evicted`` never contains the requested key, nor a pinned key;
- every method is O(1) or O(log k) amortised: no scans over the cache.

Pinning: ``pin(key)`` makes a resident key unevictable until a matching ``unpin(key)``
(pins nest: a key pinned twice needs two unpins). The daemon pins a KV block while an engine
loads it. ``remove`` drops a key even when pinned (the owner deleted it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

Key = Hashable

#: What the ``bit`` argument means to a policy: a discard bit (1 = safe to evict before its
#: next use), a phase bit (1 = requested again in the next k-phase), or nothing.
BitKind = Literal["discard", "phase", "none"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one request did to the cache."""

    hit: bool
    evicted: tuple[Key, ...] = field(default=())
    admitted: bool = True


#: Shared outcomes for the common cases, so that hot paths allocate nothing.
HIT = Outcome(True)
MISS = Outcome(False)
REJECTED = Outcome(False, (), False)


class Policy(ABC):
    """A cache of ``budget`` units (items for unit-size paging, bytes for sized caches).

    ``bit`` semantics depend on the policy family and are documented there (see
    ``bit_kind``); a policy that uses no prediction ignores it. ``None`` means "no
    prediction for this request".
    """

    name: str = "policy"
    #: Whether items may have sizes other than 1 (a byte budget). Unit-only policies raise
    #: ``ValueError`` on ``size != 1``.
    sized: ClassVar[bool] = False
    #: Which prediction bit the policy reads from ``request(..., bit=)``.
    bit_kind: ClassVar[BitKind] = "none"
    #: Whether ``request`` takes a ``next_arrival=`` keyword (a predicted next request time).
    uses_next_arrival: ClassVar[bool] = False

    def __init__(self, budget: int) -> None:
        if budget <= 0:
            raise ValueError(f"cache budget must be positive, got {budget}")
        self.budget = budget

    @abstractmethod
    def request(
        self, key: Key, size: int = 1, cost: float = 1.0, bit: int | None = None
    ) -> Outcome:
        """Serve one request: a hit, or a miss that admits ``key`` and may evict others."""

    @abstractmethod
    def remove(self, key: Key) -> bool:
        """Drop ``key`` without it counting as an eviction (deleted or demoted by the owner).

        Returns whether it was resident.
        """

    @abstractmethod
    def __contains__(self, key: object) -> bool: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def used(self) -> int:
        """The sum of the sizes of resident items."""

    def pin(self, key: Key) -> None:
        """Make resident ``key`` unevictable until the matching ``unpin`` (pins nest).

        Raises ``KeyError`` when ``key`` is not resident.
        """
        raise NotImplementedError(f"policy {self.name!r} does not support pinning")

    def unpin(self, key: Key) -> None:
        """Release one pin of ``key``. Raises ``KeyError`` when ``key`` is not pinned."""
        raise NotImplementedError(f"policy {self.name!r} does not support pinning")

    def is_pinned(self, key: Key) -> bool:
        """Whether ``key`` currently holds at least one pin."""
        return False

    def _check_unit(self, size: int) -> None:
        if size != 1:
            raise ValueError(
                f"policy {self.name!r} is unit-size only (got size={size}); "
                "use lru, gds, gds-bits or robust-mark0 for sized items"
            )
