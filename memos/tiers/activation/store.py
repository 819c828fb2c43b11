"""The activation store: KV chunks over an ordered list of levels (fastest first).

This is the in-process API a gRPC ``ActivationService`` translates: ``lookup`` (how many
leading chunks of a key chain are stored, one round trip per level), ``fetch`` / ``fetch_raw``
(the verified leading chunks, as tensors-to-be or as wire bytes), ``put`` / ``put_many``
(bytes from the wire, validated before admission), ``drop`` (demotion) and ``stats``.

Reads go level by level, asking each only for what the faster ones lacked. Every chunk read is
validated (header, key, checksum) once, whatever level it came from; a corrupt one is counted,
deleted from that level and treated as a miss, so its bytes never reach an engine. A chunk
found in a slower level is promoted: written into every faster level. Writes go through to
every level (``write_levels`` narrows that), so a chunk one daemon computes is at once in its
RAM, on its disk and in the shared Redis.

The store is not tied to one model: a key carries its layout's fingerprint and each chunk's
header repeats it, so chunks of several models share the levels without ever mixing.

Namespaces. Every call takes an optional ``namespace``: bytes that prefix the key in every
level, while a chunk's header (and so its validation) keeps the plain 48-byte key. The daemon
gives each tenant its own namespace (``tenancy.py``), so one tenant can neither read, probe,
pin nor overwrite another's chunks, even for identical tokens and salt. The default, empty
namespace is the plain key.

Pins. ``pin`` makes the leading chunks of a chain resident and unevictable in the first level
(RAM), reading from slower levels what RAM lacks, so an engine that was told "N chunks are
there" finds them when it fetches; ``unpin`` releases them. Pins nest (the policy counts them).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from memos.tiers.activation.chunk import Chunk, decode, encode
from memos.tiers.activation.errors import CorruptChunk
from memos.tiers.activation.keys import FINGERPRINT_BYTES, KEY_BYTES, ModelLayout
from memos.tiers.activation.levels.base import Level, LevelStats
from memos.tiers.activation.levels.ram import RamLevel


@dataclass(frozen=True, slots=True)
class StoreStats:
    lookups: int
    lookup_keys: int
    lookup_hits: int
    fetches: int
    fetched_chunks: int
    fetched_bytes: int
    promotions: int
    corrupt: int
    stored_chunks: int
    rejected_puts: int
    levels: tuple[LevelStats, ...]


class ActivationStore:
    def __init__(
        self,
        levels: Sequence[Level],
        *,
        promote: bool = True,
        write_levels: Sequence[str] | None = None,
    ) -> None:
        if not levels:
            raise ValueError("an activation store needs at least one level")
        names = [level.name for level in levels]
        if len(set(names)) != len(names):
            raise ValueError(f"level names must be unique, got {names}")
        unknown = set(write_levels or ()) - set(names)
        if unknown:
            raise ValueError(f"write_levels names unknown levels: {sorted(unknown)}")
        self.levels = tuple(levels)
        self._promote = promote
        self._write_levels = tuple(
            level for level in self.levels if write_levels is None or level.name in write_levels
        )
        self._lock = threading.Lock()
        self._lookups = self._lookup_keys = self._lookup_hits = 0
        self._fetches = self._fetched_chunks = self._fetched_bytes = 0
        self._promotions = self._corrupt = self._stored = self._rejected = 0

    def level(self, name: str) -> Level:
        for level in self.levels:
            if level.name == name:
                return level
        raise KeyError(name)

    def lookup(self, keys: Sequence[bytes], *, namespace: bytes = b"", record: bool = True) -> int:
        """How many leading ``keys`` some level holds (presence only: fetch verifies).

        ``record=False`` leaves the lookup counters alone (a fetch checking presence).
        """
        stored = [namespace + key for key in keys]
        present = [False] * len(keys)
        pending = list(range(len(keys)))
        for level in self.levels:
            if not pending:
                break
            flags = level.contains_many([stored[i] for i in pending])
            for i, flag in zip(pending, flags, strict=True):
                present[i] = flag
            pending = [i for i in pending if not present[i]]
        leading = _leading(present)
        if not record:
            return leading
        with self._lock:
            self._lookups += 1
            self._lookup_keys += len(keys)
            self._lookup_hits += leading
        return leading

    def fetch(
        self,
        keys: Sequence[bytes],
        layout: ModelLayout | None = None,
        *,
        namespace: bytes = b"",
    ) -> list[Chunk]:
        """The verified chunks of the longest prefix of ``keys`` that the levels hold.

        With ``layout``, a chunk whose header disagrees with it is corrupt too; asking for keys
        of another layout is the caller's error (``ValueError``), and leaves the chunks alone.
        """
        chunks, sources = self._read(keys, layout, namespace)
        if self._promote:
            self._promote_chunks(chunks, sources, namespace)
        with self._lock:
            self._fetches += 1
            self._fetched_chunks += len(chunks)
            self._fetched_bytes += sum(c.raw.nbytes for c in chunks)
        return chunks

    def fetch_raw(self, keys: Sequence[bytes], *, namespace: bytes = b"") -> list[bytes]:
        """:meth:`fetch`, as the chunks' encoded bytes (for the wire)."""
        return [bytes(chunk.raw) for chunk in self.fetch(keys, namespace=namespace)]

    def _read(
        self, keys: Sequence[bytes], layout: ModelLayout | None, namespace: bytes
    ) -> tuple[list[Chunk], list[int]]:
        """The verified leading chunks, and the depth of the level each came from."""
        if layout is not None and any(k[:FINGERPRINT_BYTES] != layout.fingerprint for k in keys):
            raise ValueError("keys of another model layout than the one given")
        found: list[Chunk | None] = [None] * len(keys)
        source = [0] * len(keys)
        pending = list(range(len(keys)))
        for depth, level in enumerate(self.levels):
            if not pending:
                break
            blobs = level.get_many([namespace + keys[i] for i in pending])
            for i, blob in zip(pending, blobs, strict=True):
                if blob is None:
                    continue
                chunk = self._validate(level, keys[i], blob, layout, namespace)
                if chunk is not None:
                    found[i] = chunk
                    source[i] = depth
            pending = [i for i in pending if found[i] is None]
        leading = _leading([c is not None for c in found])
        chunks = [c for c in found[:leading] if c is not None]
        return chunks, source[:leading]

    def _validate(
        self,
        level: Level,
        key: bytes,
        blob: bytes,
        layout: ModelLayout | None,
        namespace: bytes = b"",
    ) -> Chunk | None:
        try:
            chunk = decode(blob, key)
            if layout is not None and not chunk.header.matches(layout):
                raise CorruptChunk("header disagrees with the requested layout")
        except CorruptChunk:
            level.discard_corrupt(namespace + key)
            with self._lock:
                self._corrupt += 1
            return None
        return chunk

    def _promote_chunks(
        self, chunks: Sequence[Chunk], sources: Sequence[int], namespace: bytes = b""
    ) -> None:
        moved = 0
        for chunk, depth in zip(chunks, sources, strict=True):
            for faster in self.levels[:depth]:
                if faster.put(namespace + chunk.key, bytes(chunk.raw)):
                    moved += 1
        if moved:
            with self._lock:
                self._promotions += moved

    def put(self, key: bytes, blob: bytes, *, namespace: bytes = b"") -> int:
        """Validate ``blob`` and write it to the write levels; how many accepted it.

        Raises :class:`CorruptChunk` for bytes that fail validation: a client's error.
        """
        return self.put_many([(key, blob)], namespace=namespace)[0]

    def put_many(
        self, items: Sequence[tuple[bytes, bytes]], *, namespace: bytes = b""
    ) -> list[int]:
        """Validate every blob first (one bad blob: :class:`CorruptChunk`, nothing written)."""
        for key, blob in items:
            if len(key) != KEY_BYTES:
                raise CorruptChunk(f"a chunk key has {KEY_BYTES} bytes, got {len(key)}")
            decode(blob, key)
        accepted = [0] * len(items)
        payload = [(namespace + key, bytes(blob)) for key, blob in items]
        for level in self._write_levels:
            for i, ok in enumerate(level.put_many(payload)):
                accepted[i] += int(ok)
        with self._lock:
            self._stored += sum(1 for n in accepted if n)
            self._rejected += sum(1 for n in accepted if not n)
        return accepted

    def store(
        self, key: bytes, layout: ModelLayout, kv: torch.Tensor, *, namespace: bytes = b""
    ) -> int:
        """Encode ``kv`` [layers, 2, KV heads, tokens, head dim] and write it under ``key``."""
        return self.put(key, encode(key, layout, kv), namespace=namespace)

    def drop(self, keys: Sequence[bytes], *, namespace: bytes = b"") -> int:
        """Remove ``keys`` from every level (demotion); how many (key, level) pairs existed."""
        return sum(int(level.delete(namespace + key)) for key in keys for level in self.levels)

    # -- pins -----------------------------------------------------------------------------

    @property
    def pin_level(self) -> RamLevel | None:
        """The level pins hold chunks in: the first one, when it is RAM."""
        first = self.levels[0]
        return first if isinstance(first, RamLevel) else None

    def pin(self, keys: Sequence[bytes], *, namespace: bytes = b"") -> int:
        """Pin the leading ``keys`` in RAM, loading from slower levels what RAM lacks.

        Returns how many leading keys are now pinned (each needs one :meth:`unpin`): fewer
        than the stored prefix when RAM cannot hold more beside what is already pinned.
        A chunk read from a slower level is verified before it is pinned.
        """
        ram = self.pin_level
        if ram is None:
            return 0
        pinned = ram.pin_many([namespace + key for key in keys])
        if pinned == len(keys):
            return pinned
        rest, sources = self._read(keys[pinned:], None, namespace)
        for chunk, depth in zip(rest, sources, strict=True):
            stored = namespace + chunk.key
            # Depth 0 means RAM held it after all (written meanwhile): pin it in place.
            if depth > 0 and not ram.put(stored, bytes(chunk.raw)):
                break
            if not ram.pin(stored):
                break
            pinned += 1
        return pinned

    def unpin(self, keys: Sequence[bytes], *, namespace: bytes = b"") -> None:
        ram = self.pin_level
        if ram is not None:
            ram.unpin_many([namespace + key for key in keys])

    def stats(self) -> StoreStats:
        with self._lock:
            return StoreStats(
                lookups=self._lookups,
                lookup_keys=self._lookup_keys,
                lookup_hits=self._lookup_hits,
                fetches=self._fetches,
                fetched_chunks=self._fetched_chunks,
                fetched_bytes=self._fetched_bytes,
                promotions=self._promotions,
                corrupt=self._corrupt,
                stored_chunks=self._stored,
                rejected_puts=self._rejected,
                levels=tuple(level.stats() for level in self.levels),
            )

    def close(self) -> None:
        for level in self.levels:
            level.close()


def _leading(flags: Sequence[bool]) -> int:
    for i, flag in enumerate(flags):
        if not flag:
            return i
    return len(flags)
