"""Local disk: one file per chunk, written atomically, indexed in memory, rebuilt on restart.

Layout under ``root``: ``chunks/<2 hex digits of the chain hash>/<key in hex>.kvc`` and
``tmp/``. A write goes to a unique file in ``tmp/`` and is renamed into place (``os.replace``,
atomic on one file system), so a reader never sees half a chunk under its final name. Without
``durable=True`` the data is not fsynced: a power cut may leave a renamed file with lost
contents, which the chunk checksum catches on read (a miss, counted as corrupt), so a cache
need not pay for fsync.

On start the level scans ``chunks/`` and admits every file into its policy, oldest
modification time first, so recency survives a restart approximately; leftovers in ``tmp/``
(a crash mid-write) are removed. One directory belongs to one daemon.

A full disk, a vanished file or any other ``OSError`` degrades to a refused write or a miss.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from memos.tiers.activation.keys import KEY_BYTES
from memos.tiers.activation.levels.base import PolicyLevel, as_keys
from scheduler import Policy

log = logging.getLogger(__name__)

_SUFFIX = ".kvc"


class DiskLevel(PolicyLevel):
    kind = "disk"

    def __init__(
        self,
        root: Path | str,
        budget_bytes: int,
        *,
        policy: Policy | None = None,
        durable: bool = False,
        name: str = "disk",
    ) -> None:
        super().__init__(name, budget_bytes, policy)
        self.root = Path(root)
        self._chunks = self.root / "chunks"
        self._prefix = self._chunks.name + "/"
        self._tmp = self.root / "tmp"
        self._chunks.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._durable = durable
        self._sizes: dict[bytes, int] = {}
        self._rebuild()

    def _path(self, key: bytes) -> Path:
        return self._chunks / _fan_out(key)

    def _rebuild(self) -> None:
        for stale in self._tmp.iterdir():
            stale.unlink(missing_ok=True)
        found: list[tuple[float, bytes, int, Path]] = []
        for path in self._chunks.glob(f"*/*{_SUFFIX}"):
            try:
                key = bytes.fromhex(path.name[: -len(_SUFFIX)])
                st = path.stat()
            except (ValueError, OSError):
                continue
            # A store namespace (a tenant's) may prefix the 48-byte key.
            if len(key) < KEY_BYTES:
                continue
            found.append((st.st_mtime, key, st.st_size, path))
        for _, key, size, path in sorted(found):
            outcome = self._policy.request(key, size)
            if outcome.admitted:
                self._sizes[key] = size
            else:
                path.unlink(missing_ok=True)
            for victim in as_keys(outcome.evicted):
                self._sizes.pop(victim, None)
                self._path(victim).unlink(missing_ok=True)
        if found:
            log.info(
                "disk level %s: indexed %d chunks from %s", self.name, len(self._sizes), self.root
            )

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for key in keys:
            with self._lock:
                size = self._sizes.get(key)
                if size is not None:
                    self._policy.request(key, size)
            if size is None:
                self.counters.add(misses=1)
                out.append(None)
                continue
            try:
                with open(self._path(key), "rb") as f:
                    blob = f.read()
            except OSError as exc:
                log.warning("disk level %s: cannot read a chunk (%s); a miss", self.name, exc)
                self._forget(key)
                self.counters.add(misses=1, errors=1)
                out.append(None)
                continue
            self.counters.add(hits=1, bytes_read=len(blob))
            out.append(blob)
        return out

    def contains_many(self, keys: Sequence[bytes]) -> list[bool]:
        with self._lock:
            return [key in self._sizes for key in keys]

    def put(self, key: bytes, blob: bytes) -> bool:
        size = len(blob)
        with self._lock:
            if self._sizes.get(key) == size:
                # Content-addressed: the same key holds the same bytes; only recency changes.
                self._policy.request(key, size)
                return True
            outcome = self._policy.request(key, size)
            if not outcome.admitted:
                self.counters.add(put_failures=1)
                return False
            victims = as_keys(outcome.evicted)
            for victim in victims:
                self._sizes.pop(victim, None)
        for victim in victims:
            self._path(victim).unlink(missing_ok=True)
        self.counters.add(evictions=len(victims))
        if not self._write(key, blob):
            with self._lock:
                self._policy.remove(key)
                self._sizes.pop(key, None)
            self.counters.add(put_failures=1, errors=1)
            return False
        with self._lock:
            if key in self._policy:
                self._sizes[key] = size
        self.counters.add(puts=1, bytes_written=size)
        return True

    def _write(self, key: bytes, blob: bytes) -> bool:
        final = self._path(key)
        tmp = self._tmp / f"{final.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            final.parent.mkdir(exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(blob)
                if self._durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, final)
            return True
        except OSError as exc:
            log.warning("disk level %s: cannot write a chunk (%s); not stored", self.name, exc)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return False

    def _forget(self, key: bytes) -> None:
        with self._lock:
            self._policy.remove(key)
            self._sizes.pop(key, None)

    def delete(self, key: bytes) -> bool:
        with self._lock:
            self._policy.remove(key)
            known = self._sizes.pop(key, None) is not None
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("disk level %s: cannot delete a chunk (%s)", self.name, exc)
            self.counters.add(errors=1)
        return known

    def path(self, key: bytes) -> Path:
        """Where ``key``'s file is (or would be) under ``root``."""
        return self._path(key)

    def relative_path(self, key: bytes) -> str:
        """:meth:`path` relative to ``root``, POSIX style: string work only, no Path objects
        (they cost several microseconds a key, which a Lookup naming files pays per key)."""
        return self._prefix + _fan_out(key)

    def pin(self, key: bytes) -> bool:
        """Keep ``key``'s file from eviction until :meth:`unpin` (while an engine reads it).

        False when the level does not hold it. ``delete`` still removes a pinned file: a
        demotion or a corrupt file wins over a reader, which then falls back.
        """
        return bool(self.pin_many([key]))

    def pin_many(self, keys: Sequence[bytes]) -> list[int]:
        """:meth:`pin` the leading ``keys`` the level holds, under one lock (a Lookup pins
        dozens); their sizes, stopping at the first it lacks."""
        sizes: list[int] = []
        with self._lock:
            for key in keys:
                size = self._sizes.get(key)
                if size is None:
                    break
                # A pin is a use (an engine is about to read the file): it counts for recency.
                self._policy.request(key, size)
                self._policy.pin(key)
                sizes.append(size)
        if sizes:
            self.counters.add(hits=len(sizes))
        return sizes

    def occupancy(self) -> tuple[int, int, int, bool]:
        with self._lock:
            return len(self._sizes), self._policy.used, self._policy.budget, True


def _fan_out(key: bytes) -> str:
    """A key's file under the chunks directory. Fans out on the chain hash (the key's last 32
    bytes): a key's leading bytes are a model fingerprint or a tenant namespace, the same for
    most chunks."""
    name = key.hex()
    return f"{name[-64:-62]}/{name}{_SUFFIX}"
