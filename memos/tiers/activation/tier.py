"""The activation tier's in-process API: what the ActivationService servicer translates.

Every call names its caller (a tenant and scopes, from the auth layer) and works inside that
tenant's key namespace (``tenancy.py``): Lookup and Fetch need the ``read`` scope, Store needs
``write``. Keys are the store's 48-byte keys (model-layout fingerprint + chain hash), the same
for a chunk the daemon prefilled and for a block a vLLM engine hashed with ``sha256_cbor``.

Failures of a level never reach the caller: a Redis that is down or a full disk make a lookup
or a fetch come up short (a miss) and a store report chunks that no level accepted
(``refused``). The caller's own errors do: a key of the wrong length, a corrupt chunk
(INVALID_ARGUMENT, and then nothing of that call is stored).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar

from memos.config import ActivationSettings
from memos.cube import State, check_id
from memos.errors import FailedPrecondition, InvalidArgument
from memos.tiers.activation.chunk import Chunk, decode
from memos.tiers.activation.errors import CorruptChunk
from memos.tiers.activation.keys import KEY_BYTES
from memos.tiers.activation.leases import PinLeases
from memos.tiers.activation.levels.base import LevelStats
from memos.tiers.activation.shared import SharedDir
from memos.tiers.activation.store import ActivationStore
from memos.tiers.activation.tenancy import tenant_cache_salt, tenant_namespace

if TYPE_CHECKING:
    from memos.engines.hf import HFEngine
    from memos.manager import Hint, TierManager
    from memos.tiers.plaintext.store import PlaintextStore

Scope = Literal["read", "write", "admin"]

#: Keys fetched from the levels per round: bounds a Fetch stream's memory, not its length.
FETCH_BATCH = 8
#: Cube ids one Lookup may name (a prompt's memories, not a listing).
MAX_LOOKUP_CUBES = 256


class Caller(Protocol):
    """Who calls: the kernel's ``Principal`` (a tenant and its scopes) fits."""

    @property
    def tenant(self) -> str: ...

    def require(self, scope: Scope) -> None: ...


@dataclass(frozen=True, slots=True)
class LookupResult:
    matched: int  # leading keys some level holds
    pinned: int  # leading keys pinned in RAM under the lease (0 without one)
    lease_id: str  # "" when nothing was pinned
    lease_seconds: float  # how long the pins last unless a fetch or release ends them
    # With the shared directory's id: the files of the leading pinned keys in it, held under
    # the lease until it is released or expires (a fetch naming the lease leaves them held).
    files: tuple[SharedChunk, ...] = ()


@dataclass(frozen=True, slots=True)
class StoreResult:
    levels: tuple[int, ...]  # per chunk, in order: how many levels accepted it

    @property
    def stored(self) -> int:
        return sum(1 for n in self.levels if n)

    @property
    def refused(self) -> int:
        return sum(1 for n in self.levels if not n)


@dataclass(frozen=True, slots=True)
class TierStats:
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
    leases: int
    pinned_chunks: int
    levels: tuple[LevelStats, ...]
    chunk_tokens: int
    none_hash_seed: str
    cache_salt: str  # the caller's tenant's
    model_id: str  # the daemon's engine's, "" when none is loaded
    model_fingerprint: str  # hex, "" when none is loaded


@dataclass(frozen=True, slots=True)
class SharedChunk:
    """A chunk an engine reads from the shared directory itself."""

    key: bytes
    path: str  # relative to the shared directory
    size: int  # the file's bytes: the chunk's whole encoding


T = TypeVar("T")


class ChunkStream(Iterator[T], Generic[T]):
    """Chunks as they are read; runs ``on_end`` once, when exhausted or closed."""

    def __init__(self, chunks: Generator[T, None, None], on_end: Callable[[], None]) -> None:
        self._chunks = chunks
        self._on_end: Callable[[], None] | None = on_end

    def __next__(self) -> T:
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._chunks.close()
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end()


class ActivationTier:
    def __init__(
        self,
        store: ActivationStore,
        settings: ActivationSettings,
        *,
        engine_loader: Callable[[], HFEngine] | None = None,
        shared: SharedDir | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        # One of the store's levels, whose files same-host engines read (``shared.py``).
        self.shared = shared
        self.leases = PinLeases(store, max_leases=settings.max_pin_leases)
        self._engine_loader = engine_loader
        self._engine: HFEngine | None = None
        self._engine_lock = threading.Lock()
        # One prefill at a time: a CPU prefill already uses every core.
        self.prefill_lock = threading.Lock()
        secret = settings.tenant_salt_key
        self._salt_secret = secret.get_secret_value().encode() if secret is not None else None

    # -- tenancy --------------------------------------------------------------------------

    def cache_salt(self, tenant: str) -> str:
        return tenant_cache_salt(tenant, self._salt_secret)

    @staticmethod
    def namespace(tenant: str) -> bytes:
        return tenant_namespace(tenant)

    # -- the engine -------------------------------------------------------------------------

    def engine(self) -> HFEngine:
        """The daemon's engine, loaded on first use (FailedPrecondition when none is set)."""
        with self._engine_lock:
            if self._engine is None:
                if self._engine_loader is None:
                    raise FailedPrecondition("this activation tier was opened without an engine")
                self._engine = self._engine_loader()
            return self._engine

    @property
    def loaded_engine(self) -> HFEngine | None:
        return self._engine

    # -- the service's calls ----------------------------------------------------------------

    def lookup(
        self,
        caller: Caller,
        keys: Sequence[bytes],
        *,
        pin: bool = False,
        lease_seconds: float | None = None,
        shared_id: str = "",
    ) -> LookupResult:
        """How many leading ``keys`` are stored; with ``pin``, pin them under a lease.

        With ``pin`` and the shared directory's id (``shared_id``, as :meth:`fetch_shared`
        takes it), the files of the leading pinned keys already in the directory are named
        and held under the lease, so the engine reads them without a fetch. Files are never
        written here: a lookup stays cheap, and :meth:`fetch_shared` writes the rest.
        """
        caller.require("read")
        _check_keys(keys)
        namespace = self.namespace(caller.tenant)
        matched = self.store.lookup(keys, namespace=namespace)
        if not pin or not matched:
            return LookupResult(matched, 0, "", 0.0)
        seconds = self._lease_seconds(lease_seconds)
        lease = self.leases.grant(caller.tenant, namespace, keys[:matched], seconds)
        if lease is None:
            return LookupResult(matched, 0, "", 0.0)
        pinned = len(lease.keys)
        files: list[SharedChunk] = []
        shared = self.shared
        if shared is not None and shared.matches(shared_id):
            stored = [namespace + key for key in keys[:pinned]]
            sizes = shared.hold_many(caller.tenant, lease.id, stored, seconds)
            files = [
                SharedChunk(key, shared.relative_path(name), size)
                for key, name, size in zip(keys, stored, sizes, strict=False)
            ]
        return LookupResult(matched, pinned, lease.id, seconds, tuple(files))

    def _lease_seconds(self, asked: float | None) -> float:
        if asked is None or asked <= 0:
            return self.settings.pin_lease_s
        if asked > self.settings.max_pin_lease_s:
            raise InvalidArgument(
                f"a pin lease of {asked:g} s is over the limit of "
                f"{self.settings.max_pin_lease_s:g} s (activation.max_pin_lease_s)"
            )
        return asked

    def fetch(
        self, caller: Caller, keys: Sequence[bytes], *, lease_id: str = ""
    ) -> ChunkStream[Chunk]:
        """The verified chunks of the longest stored prefix of ``keys``, in order.

        Reads the levels a few keys at a time, so a long chain streams without holding every
        chunk at once. A ``lease_id`` (from :meth:`lookup`) is released when the stream is
        exhausted or closed, even closed before its first chunk.
        """
        caller.require("read")
        _check_keys(keys)
        namespace = self.namespace(caller.tenant)

        def chunks() -> Generator[Chunk, None, None]:
            for start in range(0, len(keys), FETCH_BATCH):
                wanted = keys[start : start + FETCH_BATCH]
                got = self.store.fetch(wanted, namespace=namespace)
                yield from got
                if len(got) < len(wanted):
                    return

        def release() -> None:
            if lease_id:
                self.leases.release(caller.tenant, lease_id)

        return ChunkStream(chunks(), release)

    def fetch_shared(
        self,
        caller: Caller,
        keys: Sequence[bytes],
        *,
        shared_id: str,
        lease_id: str = "",
        recheck: bool = False,
    ) -> tuple[ChunkStream[Chunk | SharedChunk], str]:
        """:meth:`fetch` for an engine that sees the shared directory: each chunk is a file
        in it where it is or can be put there, else the verified chunk as :meth:`fetch`
        gives it. Returns the stream and the hold pinning the named files ("" when none can
        be named: no shared directory, or ``shared_id`` is not its id, so the engine does not
        see it); :meth:`release` ends the hold, or it expires after ``pin_lease_s``.

        ``recheck``: the engine could not use the files of ``keys`` (missing or corrupt):
        they are verified first, and the bad ones deleted (written anew from the levels when
        named again), whatever ``shared_id``.
        """
        caller.require("read")
        _check_keys(keys)
        shared = self.shared
        namespace = self.namespace(caller.tenant)
        if shared is not None and recheck:
            shared.verify([namespace + key for key in keys], keys)
        if shared is None or not shared.matches(shared_id):
            stream: ChunkStream[Chunk | SharedChunk] = self.fetch(  # type: ignore[assignment]
                caller, keys, lease_id=lease_id
            )
            return stream, ""
        hold_id = secrets.token_hex(16)
        seconds = self.settings.pin_lease_s

        def named(key: bytes) -> SharedChunk | None:
            stored = namespace + key
            size = shared.hold(caller.tenant, hold_id, stored, seconds)
            return None if size is None else SharedChunk(key, shared.relative_path(stored), size)

        def chunks() -> Generator[Chunk | SharedChunk, None, None]:
            for start in range(0, len(keys), FETCH_BATCH):
                wanted = keys[start : start + FETCH_BATCH]
                # The same answer as a stream: the leading chunks some level holds.
                present = self.store.lookup(wanted, namespace=namespace, record=False)
                for key in wanted[:present]:
                    item = named(key)
                    if item is None:
                        got = self.store.fetch([key], namespace=namespace)
                        if not got:
                            return
                        # Writing it costs this fetch a copy; every later one reads the file.
                        if shared.level.put(namespace + key, bytes(got[0].raw)):
                            item = named(key)
                        if item is None:
                            yield got[0]
                            continue
                    yield item
                if present < len(wanted):
                    return

        def release() -> None:
            if lease_id:
                self.leases.release(caller.tenant, lease_id)

        return ChunkStream(chunks(), release), hold_id

    def put(self, caller: Caller, items: Sequence[tuple[bytes, bytes]]) -> StoreResult:
        """Validate every chunk, then store them all; one bad chunk stores nothing."""
        caller.require("write")
        _check_keys([key for key, _ in items])
        for i, (key, blob) in enumerate(items):
            try:
                decode(blob, key)
            except CorruptChunk as exc:
                raise InvalidArgument(
                    f"chunk {i} (key {key.hex()[:16]}…) is corrupt: {exc.reason}; "
                    "nothing of this call was stored"
                ) from None
        accepted = self.store.put_many(items, namespace=self.namespace(caller.tenant))
        return StoreResult(tuple(accepted))

    def release(self, caller: Caller, lease_id: str) -> bool:
        """End a pin lease (Lookup's) or a shared-directory hold (Fetch's)."""
        caller.require("read")
        released = self.leases.release(caller.tenant, lease_id)
        if self.shared is not None:
            released = self.shared.release(caller.tenant, lease_id) or released
        return released

    def stats(self, caller: Caller) -> TierStats:
        """Daemon-wide counters and occupancy (no keys), and what the caller's engine needs."""
        caller.require("read")
        s = self.store.stats()
        leases, pinned = self.leases.counts()
        engine = self._engine
        return TierStats(
            lookups=s.lookups,
            lookup_keys=s.lookup_keys,
            lookup_hits=s.lookup_hits,
            fetches=s.fetches,
            fetched_chunks=s.fetched_chunks,
            fetched_bytes=s.fetched_bytes,
            promotions=s.promotions,
            corrupt=s.corrupt,
            stored_chunks=s.stored_chunks,
            rejected_puts=s.rejected_puts,
            leases=leases,
            pinned_chunks=pinned,
            levels=s.levels,
            chunk_tokens=self.settings.chunk_tokens,
            none_hash_seed=self.settings.none_hash_seed,
            cache_salt=self.cache_salt(caller.tenant),
            model_id=engine.layout.model_id if engine is not None else "",
            model_fingerprint=engine.layout.fingerprint.hex() if engine is not None else "",
        )

    def close(self) -> None:
        self.leases.close()
        if self.shared is not None:
            self.shared.close()
        self.store.close()


def count_kv_reads(
    manager: TierManager,
    plaintext: PlaintextStore,
    caller: Caller,
    cube_ids: Sequence[str],
    hint: Hint | None,
) -> int:
    """Count an engine's Lookup for a prompt holding ``cube_ids`` as one page request
    ("kv-lookup") per cube, with the client's ``hint``; returns the cubes counted.

    Ids must be well formed (INVALID_ARGUMENT); cubes the tenant does not have, or no longer
    has active, are skipped: the lookup itself is about keys, and must not fail for them.
    """
    caller.require("read")
    if len(cube_ids) > MAX_LOOKUP_CUBES:
        raise InvalidArgument(
            f"a Lookup names {len(cube_ids)} cubes, over the limit of {MAX_LOOKUP_CUBES}: "
            "name the memories the prompt holds"
        )
    for cube_id in cube_ids:
        check_id(cube_id)
    cubes = []
    for cube_id in dict.fromkeys(cube_ids):  # a cube named twice is read once
        cube = plaintext.get(caller.tenant, cube_id)
        if cube is not None and cube.state == State.ACTIVE and not cube.is_expired():
            cubes.append(cube)
    manager.record(caller.tenant, cubes, "kv-lookup", hint)
    return len(cubes)


def _check_keys(keys: Sequence[bytes]) -> None:
    for i, key in enumerate(keys):
        if len(key) != KEY_BYTES:
            raise InvalidArgument(
                f"key {i} has {len(key)} bytes: a chunk key is {KEY_BYTES} bytes "
                "(a 16-byte model-layout fingerprint, then the 32-byte chain hash)"
            )
