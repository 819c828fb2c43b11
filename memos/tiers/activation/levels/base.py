"""The one interface every storage level implements, and the counters each keeps.

A level stores encoded chunks (see ``chunk.py``) as opaque bytes under 48-byte keys. It never
raises for a failure of its medium (a lost Redis, a full disk, a vanished file): the operation
degrades to a miss or a refused write, and the failure is counted. Validation of the bytes is
the store's job, done once per read whatever the level; a level only drops what the store
reports as corrupt.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from scheduler import Policy, make_policy


@dataclass(frozen=True, slots=True)
class LevelStats:
    """A snapshot of one level's counters and occupancy."""

    name: str
    kind: str
    hits: int
    misses: int
    puts: int
    put_failures: int
    evictions: int
    errors: int
    corrupt: int
    bytes_read: int
    bytes_written: int
    items: int
    used_bytes: int
    budget_bytes: int
    available: bool


def as_keys(evicted: Iterable[Hashable]) -> list[bytes]:
    """A policy's evicted keys, which a level only ever admitted as ``bytes``."""
    return [key for key in evicted if isinstance(key, bytes)]


class Counters:
    """Thread-safe event counters shared by the level implementations."""

    __slots__ = (
        "_lock",
        "bytes_read",
        "bytes_written",
        "corrupt",
        "errors",
        "evictions",
        "hits",
        "misses",
        "put_failures",
        "puts",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits = self.misses = self.puts = self.put_failures = 0
        self.evictions = self.errors = self.corrupt = 0
        self.bytes_read = self.bytes_written = 0

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


class Level(ABC):
    """A byte-budgeted store of encoded chunks."""

    kind: str = "level"

    def __init__(self, name: str) -> None:
        self.name = name
        self.counters = Counters()

    @abstractmethod
    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The stored bytes of each key, ``None`` where absent or unreachable."""

    @abstractmethod
    def contains_many(self, keys: Sequence[bytes]) -> list[bool]:
        """Whether each key is stored (unverified: a fetch may still find it corrupt)."""

    @abstractmethod
    def put(self, key: bytes, blob: bytes) -> bool:
        """Store ``blob`` under ``key``; ``False`` if refused (too large, medium failed)."""

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        return [self.put(key, blob) for key, blob in items]

    @abstractmethod
    def delete(self, key: bytes) -> bool:
        """Drop ``key`` (demotion, or bytes found corrupt); whether it was stored."""

    def discard_corrupt(self, key: bytes) -> None:
        self.counters.add(corrupt=1)
        self.delete(key)

    @abstractmethod
    def occupancy(self) -> tuple[int, int, int, bool]:
        """(items, used bytes, budget bytes, available) as this level knows them."""

    def stats(self) -> LevelStats:
        items, used, budget, available = self.occupancy()
        c = self.counters
        return LevelStats(
            name=self.name,
            kind=self.kind,
            hits=c.hits,
            misses=c.misses,
            puts=c.puts,
            put_failures=c.put_failures,
            evictions=c.evictions,
            errors=c.errors,
            corrupt=c.corrupt,
            bytes_read=c.bytes_read,
            bytes_written=c.bytes_written,
            items=items,
            used_bytes=used,
            budget_bytes=budget,
            available=available,
        )

    def close(self) -> None:  # noqa: B027 - most levels hold nothing to release
        """Release connections or handles; the default holds none."""


class PolicyLevel(Level):
    """A level whose own scheduler policy decides evictions and keeps its pins (RAM, disk):
    ``_policy`` and ``_lock``, which guards it, and the pins' bookkeeping they share."""

    def __init__(self, name: str, budget_bytes: int, policy: Policy | None) -> None:
        super().__init__(name)
        self._policy = policy if policy is not None else make_policy("lru", budget_bytes)
        self._lock = threading.Lock()

    def unpin(self, key: bytes) -> None:
        self.unpin_many([key])

    def unpin_many(self, keys: Sequence[bytes]) -> None:
        with self._lock:
            for key in keys:
                if self._policy.is_pinned(key):
                    self._policy.unpin(key)

    def is_pinned(self, key: bytes) -> bool:
        with self._lock:
            return self._policy.is_pinned(key)
