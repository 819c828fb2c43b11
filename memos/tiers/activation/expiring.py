"""Tenant-owned entries that end by release, by expiry or at close, each exactly once.

The pin leases (``leases.py``) and the shared directory's holds (``shared.py``) are both
promises to an engine that something stays put until it is done or time runs out. Both keep
their entries here: a dict by id and a heap of expiries, swept on every call (no timer
thread), and an ``on_end`` callback that undoes what the entry held, called outside the lock.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Owned(Protocol):
    @property
    def tenant(self) -> str: ...

    @property
    def expires_at(self) -> float: ...  # on the registry's clock


T = TypeVar("T", bound=Owned)


class Expiring(Generic[T]):
    """At most ``capacity`` live entries; another tenant can neither see nor end one."""

    def __init__(
        self,
        on_end: Callable[[T], None],
        *,
        capacity: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_end = on_end
        self._capacity = capacity
        self.clock = clock
        self._entries: dict[str, T] = {}
        # (expiry, id) of every entry added; ended ones are skipped when they surface.
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def full(self) -> bool:
        self.sweep()
        with self._lock:
            return len(self._entries) >= self._capacity

    def admits(self, tenant: str, entry_id: str) -> bool:
        """Whether ``change`` could apply now: the tenant's live entry, or room for one."""
        self.sweep()
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is None:
                return len(self._entries) < self._capacity
            return entry.tenant == tenant

    def add(self, entry_id: str, entry: T) -> bool:
        """Keep ``entry`` under a new id; False (nothing kept) when the registry is full."""
        with self._lock:
            if len(self._entries) >= self._capacity or entry_id in self._entries:
                return False
            self._entries[entry_id] = entry
            heapq.heappush(self._expiry, (entry.expires_at, entry_id))
            return True

    def change(
        self, tenant: str, entry_id: str, make: Callable[[], T], change: Callable[[T], None]
    ) -> bool:
        """Apply ``change`` to the tenant's live entry under ``entry_id``, made with ``make``
        when there is none (and there is room), under the registry's lock, so the entry cannot
        end halfway; False, and nothing changed, when it is another tenant's or there is no
        room."""
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is None:
                if len(self._entries) >= self._capacity:
                    return False
                entry = make()
                self._entries[entry_id] = entry
                heapq.heappush(self._expiry, (entry.expires_at, entry_id))
            elif entry.tenant != tenant:
                return False
            change(entry)
            return True

    def release(self, tenant: str, entry_id: str) -> bool:
        """End the tenant's entry now; False when it is unknown, over or another tenant's."""
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is None or entry.tenant != tenant:
                return False
            del self._entries[entry_id]
        self._on_end(entry)
        self.sweep()
        return True

    def sweep(self) -> int:
        """End every expired entry; how many there were."""
        now = self.clock()
        expired: list[T] = []
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, entry_id = heapq.heappop(self._expiry)
                entry = self._entries.pop(entry_id, None)
                if entry is not None:
                    expired.append(entry)
        for entry in expired:
            self._on_end(entry)
        return len(expired)

    def live(self) -> list[T]:
        """The entries not over, after a sweep."""
        self.sweep()
        with self._lock:
            return list(self._entries.values())

    def close(self) -> None:
        """End every entry."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
            self._expiry.clear()
        for entry in entries:
            self._on_end(entry)
