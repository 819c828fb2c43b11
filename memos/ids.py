"""Time-sortable cube ids (ULID: 48-bit milliseconds + 80 random bits, Crockford base32)."""

from __future__ import annotations

import os
import re
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ID_PATTERN = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")

_lock = threading.Lock()
_last_ms = -1
_last_rand = 0


class _RandomPool:
    """Random bytes drawn from the OS a few KiB at a time. os.urandom releases the GIL, and
    getting it back behind a dozen busy gRPC threads took up to a switch interval (5 ms) while
    ``_lock`` was held: one draw per new millisecond made id making most of a 64-cube PutBatch's
    time."""

    SIZE = 4096

    def __init__(self) -> None:
        self._bytes = b""
        self._at = 0

    def take80(self) -> int:
        """80 fresh random bits (called with ``_lock`` held)."""
        if self._at + 10 > len(self._bytes):
            self._bytes, self._at = os.urandom(self.SIZE), 0
        rand = int.from_bytes(self._bytes[self._at : self._at + 10], "big")
        self._at += 10
        return rand

    def forget(self) -> None:
        # A forked child must not hand out its parent's random bits again.
        self._bytes, self._at = b"", 0


_random = _RandomPool()
os.register_at_fork(after_in_child=_random.forget)


def new_id(now_ms: int | None = None) -> str:
    """A new ULID. Ids made in the same millisecond by this process stay strictly increasing."""
    global _last_ms, _last_rand
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            rand = _last_rand + 1
            if rand >= 1 << 80:  # 2^80 ids in one millisecond: move to the next one
                ms, rand = ms + 1, _random.take80()
        else:
            rand = _random.take80()
        _last_ms, _last_rand = ms, rand
    value = (ms << 80) | rand
    return "".join(_ALPHABET[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


def is_valid_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))


def id_time_ms(value: str) -> int:
    """The millisecond timestamp an id was made at."""
    number = 0
    for ch in value:
        number = number * 32 + _ALPHABET.index(ch)
    return number >> 80
