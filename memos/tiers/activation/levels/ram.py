"""Host RAM in the daemon: encoded chunks in a dict, evicted by a scheduler policy.

Values are the immutable encoded ``bytes``, handed out without copying; the byte budget counts
each chunk's full encoding. Every hit is reported to the policy so that recency (or whatever the
policy learns from) follows real use, and every admission asks the policy what to evict.
"""

from __future__ import annotations

from collections.abc import Sequence

from memos.tiers.activation.levels.base import PolicyLevel, as_keys
from scheduler import Policy


class RamLevel(PolicyLevel):
    kind = "ram"

    def __init__(self, budget_bytes: int, *, policy: Policy | None = None, name: str = "ram"):
        super().__init__(name, budget_bytes, policy)
        self._data: dict[bytes, bytes] = {}

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        out: list[bytes | None] = []
        hits = read = 0
        with self._lock:
            for key in keys:
                blob = self._data.get(key)
                if blob is not None:
                    self._policy.request(key, len(blob))
                    hits += 1
                    read += len(blob)
                out.append(blob)
        self.counters.add(hits=hits, misses=len(keys) - hits, bytes_read=read)
        return out

    def contains_many(self, keys: Sequence[bytes]) -> list[bool]:
        with self._lock:
            return [key in self._data for key in keys]

    def put(self, key: bytes, blob: bytes) -> bool:
        blob = bytes(blob)
        with self._lock:
            outcome = self._policy.request(key, len(blob))
            if not outcome.admitted:
                self._data.pop(key, None)
                self.counters.add(put_failures=1)
                return False
            self._data[key] = blob
            for victim in as_keys(outcome.evicted):
                self._data.pop(victim, None)
        self.counters.add(puts=1, bytes_written=len(blob), evictions=len(outcome.evicted))
        return True

    def delete(self, key: bytes) -> bool:
        with self._lock:
            self._policy.remove(key)
            return self._data.pop(key, None) is not None

    def pin(self, key: bytes) -> bool:
        """Keep ``key`` from eviction until :meth:`unpin` (e.g. while an engine loads it)."""
        return self.pin_many([key]) == 1

    def pin_many(self, keys: Sequence[bytes]) -> int:
        """:meth:`pin` the leading ``keys`` RAM holds, under one lock (a Lookup pins dozens);
        how many."""
        pinned = 0
        with self._lock:
            for key in keys:
                if key not in self._data:
                    break
                self._policy.pin(key)
                pinned += 1
        return pinned

    def occupancy(self) -> tuple[int, int, int, bool]:
        with self._lock:
            return len(self._data), self._policy.used, self._policy.budget, True
