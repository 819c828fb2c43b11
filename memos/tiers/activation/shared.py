"""The shared directory: chunk files a same-host engine reads itself, instead of a stream.

Streaming a chunk over gRPC costs the daemon a read and a copy into messages, and the engine
a receive and a reassembly: for a few tens of MiB that is most of a load. When the engine
runs beside the daemon (a sidecar with a shared emptyDir of medium Memory, or a directory
under /dev/shm on one host), the daemon can hand it a file name instead, and the engine
copies the file's bytes (page cache or tmpfs) straight into its KV buffer.

The directory is a :class:`DiskLevel` rooted there (``chunks/<xx>/<key>.kvc``): chunks are
content-addressed, so a file once written holds those bytes for as long as it exists and any
later fetch of the key reuses it; writes are atomic (a temporary file renamed into place); a
byte budget with the scheduler's policy evicts files; every read verifies the chunk's
checksum. It is a level of the store like the others (after RAM), so Store writes through to
it, Lookup sees it and a demotion removes its files.

Proof of sight: the directory holds ``memos-shared.id``, 128 random bits written once. An
engine sends the id it reads from its own mount; only a matching id gets file names, so an
engine on another host, or one that mounts another directory, gets bytes as before. Names are
relative to the directory, since the engine may mount it elsewhere.

Holds: a file named in a Fetch answer is pinned against eviction under a hold (the same idea
as a pin lease, see ``leases.py``) until the engine releases it or ``seconds`` pass, so an
engine never finds a file gone between the answer and its read, unless a demotion or a
corrupt file removed it, which costs that engine a fallback to the stream.

Everything that can read the directory can read every file in it, of every tenant: mount it
only into engines trusted with what their daemon holds. The daemon's own checks (the tenant's
namespace, the ``read`` scope) decide which names an engine is given.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from memos.tiers.activation.chunk import decode
from memos.tiers.activation.errors import CorruptChunk
from memos.tiers.activation.expiring import Expiring
from memos.tiers.activation.levels.disk import DiskLevel

log = logging.getLogger(__name__)

#: The file in the shared directory that names it: an engine proves it sees the directory by
#: sending its content.
ID_FILE = "memos-shared.id"
ID_BYTES = 16


def read_shared_id(directory: Path | str) -> str:
    """The id in ``directory``'s id file, "" when it cannot be read (an engine's side)."""
    try:
        return (Path(directory) / ID_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


class SharedIdReader:
    """:func:`read_shared_id`, read again at most every ``ttl_s`` seconds (an engine asks for
    it with every Lookup: reading the file took 0.1 ms of a scheduler's step, measured). The
    daemon may create the directory, or a new one with a new id, after the engine started:
    an id that went stale costs streamed bytes instead of file names until the next read,
    never a wrong file (the daemon names files only to the id it holds)."""

    def __init__(self, directory: Path | str, ttl_s: float = 1.0) -> None:
        self._directory = directory
        self._ttl_s = ttl_s
        self._value = ""
        self._due = 0.0

    def __call__(self) -> str:
        now = time.monotonic()
        if now >= self._due:
            self._value = read_shared_id(self._directory)
            self._due = now + self._ttl_s
        return self._value


def _load_or_create_id(root: Path) -> str:
    existing = read_shared_id(root)
    if len(existing) == 2 * ID_BYTES:
        return existing
    value = secrets.token_hex(ID_BYTES)
    tmp = root / f".{ID_FILE}.{os.getpid()}.tmp"
    tmp.write_text(value + "\n")
    os.replace(tmp, root / ID_FILE)
    return value


@dataclass(slots=True)
class _Hold:
    tenant: str
    expires_at: float
    keys: list[bytes] = field(default_factory=list)  # stored keys, one pin each


class SharedDir:
    """The shared level, its id, and the holds on the files engines were told about."""

    def __init__(
        self,
        level: DiskLevel,
        *,
        max_holds: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.level = level
        self.root = level.root
        self.id = _load_or_create_id(self.root)
        self._holds: Expiring[_Hold] = Expiring(self._unpin, capacity=max_holds, clock=clock)

    def matches(self, shared_id: str) -> bool:
        """Whether a client that sent ``shared_id`` sees this directory."""
        return bool(shared_id) and hmac.compare_digest(shared_id.encode(), self.id.encode())

    def relative_path(self, stored_key: bytes) -> str:
        return self.level.relative_path(stored_key)

    def hold(self, tenant: str, hold_id: str, stored_key: bytes, seconds: float) -> int | None:
        """Pin ``stored_key``'s file under ``hold_id``; its size, or None when the level
        lacks it or no hold can be taken (too many, or ``hold_id`` is another tenant's)."""
        sizes = self.hold_many(tenant, hold_id, [stored_key], seconds)
        return sizes[0] if sizes else None

    def hold_many(
        self, tenant: str, hold_id: str, stored_keys: Sequence[bytes], seconds: float
    ) -> list[int]:
        """:meth:`hold` the leading ``stored_keys`` the level has, in one pass (a Lookup
        names dozens of files: per key, the hold's bookkeeping cost more than the pin);
        their sizes, stopping at the first it lacks; none when no hold can be taken."""
        if not stored_keys or not self._holds.admits(tenant, hold_id):
            return []  # before pinning anything
        sizes = self.level.pin_many(stored_keys)
        held = list(stored_keys[: len(sizes)])
        if not held:
            return []
        expires_at = self._holds.clock() + seconds
        if not self._holds.change(
            tenant,
            hold_id,
            lambda: _Hold(tenant, expires_at),
            lambda hold: hold.keys.extend(held),
        ):
            self.level.unpin_many(held)
            return []
        return sizes

    def release(self, tenant: str, hold_id: str) -> bool:
        """Unpin a hold's files; False when it is unknown, expired or another tenant's."""
        return self._holds.release(tenant, hold_id)

    def sweep(self) -> int:
        return self._holds.sweep()

    def holds(self) -> int:
        return len(self._holds.live())

    def _unpin(self, hold: _Hold) -> None:
        self.level.unpin_many(hold.keys)

    def verify(self, stored_keys: Sequence[bytes], keys: Sequence[bytes]) -> int:
        """Check the files of ``stored_keys`` (an engine could not use them): delete those
        that are corrupt or unreadable, so the next fetch writes them anew. How many went."""
        dropped = 0
        for stored, key, blob in zip(
            stored_keys, keys, self.level.get_many(stored_keys), strict=True
        ):
            if blob is None:
                continue  # unreadable: get_many already forgot it
            try:
                decode(blob, key)
            except CorruptChunk:
                self.level.discard_corrupt(stored)
                dropped += 1
        if dropped:
            log.warning("shared dir %s: dropped %d corrupt chunk files", self.root, dropped)
        return dropped

    def close(self) -> None:
        self._holds.close()
