"""Small O(1) containers the policies share."""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable

Key = Hashable


class IndexedSet:
    """A set with O(1) add, discard and uniform random choice (swap-remove on a list)."""

    __slots__ = ("_items", "_pos")

    def __init__(self, items: Iterable[Key] = ()) -> None:
        self._items: list[Key] = []
        self._pos: dict[Key, int] = {}
        for item in items:
            self.add(item)

    def add(self, item: Key) -> None:
        if item not in self._pos:
            self._pos[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: Key) -> bool:
        pos = self._pos.pop(item, None)
        if pos is None:
            return False
        last = self._items.pop()
        if pos < len(self._items):
            self._items[pos] = last
            self._pos[last] = pos
        return True

    def choice(self, rng: random.Random) -> Key:
        return self._items[int(rng.random() * len(self._items))]

    def clear(self) -> None:
        self._items.clear()
        self._pos.clear()

    def __contains__(self, item: object) -> bool:
        return item in self._pos

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)


def check_size(name: str, size: int) -> None:
    """Sized policies take whole positive sizes (bytes)."""
    if size < 1:
        raise ValueError(f"policy {name!r}: item size must be >= 1, got {size}")
