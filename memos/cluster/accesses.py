"""The cluster's shared access log, and the Redis level's evictor that replays it.

Every replica appends its accesses to two Redis Streams, through one outbox and one writer
thread:

``{prefix}accesses:pages``: each local plaintext page request (``TierManager.on_access``).
Every replica reads the other replicas' entries (it skips its own, by replica id) and feeds them
to its own manager with ``request_page(req, local=False)``: each replica's predictor and policy
learn from the whole cluster's traffic, and ``explain`` on any replica counts every replica's
reads of a cube. The same stream carries each local Search's set of cubes returned together
(``TierManager.on_search``): every replica's co-retrieval tracker counts the whole cluster's
sets, so the leader's ``fuse-coretrieved`` job sees the searches of every replica.

``{prefix}accesses:chunks``: this replica's accesses to the shared Redis level of the
activation tier: hits and writes, with their size in bytes, and deletes. Only the leader reads
it: its ``RedisEvictor`` replays every replica's entries into one scheduler policy over the
Redis level's byte budget and deletes the policy's victims from Redis. The chunk traffic has a
stream of its own so that replicas need not read all of it to find the page requests.

Publishing never delays a request: the hooks only enqueue, and the writer XADDs in batches
(one pipeline, ``MAXLEN ~``). When Redis is away, or slower than the traffic, accesses are
dropped and counted (``memos_cluster_accesses_total{outcome="dropped"}``), never retried: they
are statistics, and replayed late they would only distort recency. Both streams are trimmed to
about ``cluster.accesses_maxlen`` entries.

Entry fields, plain bytes (no pickle). Pages: ``r`` replica, ``t`` tenant, ``c`` cube id,
``s`` size in tokens, ``o`` operation, ``h`` hint (``reuse``, ``done`` or empty), ``x`` expiry
in microseconds since the epoch (empty for none). Search sets on that stream: ``r``, ``t``,
``o`` ``coretrieved``, ``m`` the cube ids, comma-separated. Chunks: ``r`` replica, ``o``
``h`` (hit), ``w`` (write) or ``d`` (delete), ``k`` the level's key (the tenant's namespace
and the 48-byte chunk key, without the Redis level's prefix), ``s`` size in bytes.

A new leader. The evictor's policy lives in the leader's memory. A replica that starts a new
term (a new fencing token) rebuilds it before it deletes anything: it replays the chunk
stream's retained window (its last ``accesses_maxlen`` entries) through a fresh predictor into
a fresh policy, then reconciles that with a SCAN of what Redis holds: what the policy holds but
Redis no longer does (the previous leader evicted it, or its TTL ran out) leaves the policy;
what Redis holds that the window never mentions (older than the window) stays while it fits in
the budget beside the window's chunks, ranked below all of them (admitted with bit 1), and is
deleted otherwise; the replay's victims are deleted. While the window holds every access since
the previous leader's last rebuild, the new leader's policy is the old one's, chunk for chunk;
a shorter window loses the order of what it no longer holds, nothing else. Deletes go through
the term's ``Fence``: a deposed leader's evictor cannot delete once another replica leads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import redis

from memos.cluster.connection import Outage, take_batch
from memos.cluster.leader import Fence, current_fence
from memos.config import ActivationSettings, ClusterSettings
from memos.manager import Hint, PageRequest
from memos.metrics import CACHE_EVICTIONS, CLUSTER_ACCESSES
from memos.tiers.activation.levels.base import as_keys
from memos.tiers.activation.levels.redis import RedisLevel
from scheduler import BitPredictor, LearnedConfig, Policy, make_policy
from scheduler.registry import policy_info

if TYPE_CHECKING:
    from memos.manager import TierManager
    from memos.tiers.activation.store import ActivationStore

log = logging.getLogger(__name__)

_BATCH = 512
_DELETE_BATCH = 256
_SCAN_COUNT = 1000

_Entries = list[tuple[bytes, dict[bytes, bytes]]]

_CHUNK_OPS = {"hit": b"h", "write": b"w", "delete": b"d"}
_SET_OP = b"coretrieved"
_CHUNK_OP_NAMES = {v: k for k, v in _CHUNK_OPS.items()}


def pages_stream(settings: ClusterSettings) -> str:
    return f"{settings.key_prefix}accesses:pages"


def chunks_stream(settings: ClusterSettings) -> str:
    return f"{settings.key_prefix}accesses:chunks"


@dataclass(frozen=True, slots=True)
class ChunkAccess:
    """One access to the Redis level: ``op`` is "hit", "write" or "delete"."""

    op: str
    key: bytes  # the level's key, without the Redis level's prefix
    size: int  # bytes (0 for a delete)


# ---------------------------------------------------------------------- encoding


def encode_page(req: PageRequest, replica_id: str) -> dict[bytes, bytes]:
    expires = "" if req.expires_at is None else str(int(req.expires_at.timestamp() * 1_000_000))
    return {
        b"r": replica_id.encode(),
        b"t": req.tenant.encode(),
        b"c": req.cube_id.encode(),
        b"s": str(req.size).encode(),
        b"o": req.op.encode(),
        b"h": b"" if req.hint is None else req.hint.value.encode(),
        b"x": expires.encode(),
    }


def decode_page(fields: dict[bytes, bytes]) -> tuple[str, PageRequest]:
    """The writing replica and its page request; raises (KeyError, ValueError) if malformed."""
    hint = fields[b"h"].decode()
    expires = fields[b"x"]
    size = int(fields[b"s"])
    if size < 1:
        raise ValueError(f"page size {size}")
    req = PageRequest(
        tenant=fields[b"t"].decode(),
        cube_id=fields[b"c"].decode(),
        size=size,
        expires_at=(datetime.fromtimestamp(int(expires) / 1_000_000, tz=UTC) if expires else None),
        op=fields[b"o"].decode(),
        hint=Hint(hint) if hint else None,
    )
    return fields[b"r"].decode(), req


@dataclass(frozen=True, slots=True)
class SearchSet:
    """The cubes one Search returned together, for the co-retrieval trackers."""

    tenant: str
    cube_ids: tuple[str, ...]


def encode_set(found: SearchSet, replica_id: str) -> dict[bytes, bytes]:
    return {
        b"r": replica_id.encode(),
        b"t": found.tenant.encode(),
        b"o": _SET_OP,
        b"m": ",".join(found.cube_ids).encode(),
    }


def decode_set(fields: dict[bytes, bytes]) -> tuple[str, SearchSet]:
    """The writing replica and its search set; raises (KeyError, ValueError) if malformed."""
    ids = tuple(fields[b"m"].decode().split(","))
    if len(ids) < 2 or not all(ids):
        raise ValueError(f"a search set of {len(ids)} cubes")
    return fields[b"r"].decode(), SearchSet(fields[b"t"].decode(), ids)


def encode_chunk(access: ChunkAccess, replica_id: str) -> dict[bytes, bytes]:
    return {
        b"r": replica_id.encode(),
        b"o": _CHUNK_OPS[access.op],
        b"k": access.key,
        b"s": str(access.size).encode(),
    }


def decode_chunk(fields: dict[bytes, bytes]) -> tuple[str, ChunkAccess]:
    op = _CHUNK_OP_NAMES[fields[b"o"]]
    size = int(fields[b"s"])
    if size < 0 or (size == 0 and op != "delete"):
        raise ValueError(f"chunk size {size}")
    return fields[b"r"].decode(), ChunkAccess(op, fields[b"k"], size)


def _id_tuple(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


# ---------------------------------------------------------------------- the log


class AccessLog:
    """Publishes this replica's accesses; feeds the other replicas' page requests to its manager.

    ``attach`` hooks it to the manager (``on_access``) and to the Redis level (``on_access``);
    either may be absent.
    """

    def __init__(
        self,
        writer: redis.Redis,
        reader: redis.Redis,
        replica_id: str,
        settings: ClusterSettings,
    ) -> None:
        self.replica_id = replica_id
        self.pages = pages_stream(settings)
        self.chunks = chunks_stream(settings)
        self._writer = writer
        self._reader = reader
        self._settings = settings
        self._manager: TierManager | None = None
        self._level: RedisLevel | None = None
        # The manager's own Search hook (the local co-retrieval tracker), which the other
        # replicas' sets are fed to as well.
        self._observe: Callable[[str, list[str]], None] | None = None
        self._outbox: queue.Queue[PageRequest | SearchSet | ChunkAccess] = queue.Queue(
            maxsize=settings.accesses_outbox_size
        )
        self._counts_lock = threading.Lock()
        #: Accesses by kind ("page", "chunk") that reached Redis, and that never did.
        self.published = {"page": 0, "chunk": 0}
        self.dropped = {"page": 0, "chunk": 0}
        #: Other replicas' page requests fed to this replica's manager, and search sets to
        #: its co-retrieval tracker.
        self.applied = 0
        self.applied_sets = 0
        #: Set once the reader knows where the page stream's tail is (it reads from there).
        self.reading = threading.Event()
        self._position: bytes | None = None
        self._down_until = 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._write_outage = Outage(
            "access log, writing",
            "other replicas do not learn from this replica's accesses (dropped, counted)",
        )
        self._read_outage = Outage(
            "access log, reading", "this replica's predictor learns from its own accesses only"
        )

    def attach(self, manager: TierManager | None, level: RedisLevel | None) -> None:
        self._manager = manager
        self._level = level
        if manager is not None:
            manager.on_access = self.record_page
            self._observe = manager.on_search
            if self._observe is not None:
                manager.on_search = self.record_search
        if level is not None:
            level.on_access = self.record_chunks

    def start(self) -> None:
        self._threads.append(
            threading.Thread(target=self._write_loop, name="cluster-accesses-out", daemon=True)
        )
        if self._manager is not None:
            self._threads.append(
                threading.Thread(target=self._read_loop, name="cluster-accesses-in", daemon=True)
            )
        for t in self._threads:
            t.start()

    def close(self, timeout_s: float = 5.0) -> None:
        if self._manager is not None and self._manager.on_access == self.record_page:
            self._manager.on_access = None
        if self._manager is not None and self._manager.on_search == self.record_search:
            self._manager.on_search = self._observe
        if self._level is not None and self._level.on_access == self.record_chunks:
            self._level.on_access = None
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout_s)

    # ------------------------------------------------------------------ out

    def record_page(self, req: PageRequest) -> None:
        """The manager's ``on_access``: runs in the request's thread, so it only enqueues."""
        self._enqueue(req)

    def record_search(self, tenant: str, cube_ids: list[str]) -> None:
        """The manager's ``on_search``: counts the set here, and enqueues it for the others."""
        if self._observe is not None:
            self._observe(tenant, cube_ids)
        self._enqueue(SearchSet(tenant, tuple(cube_ids)))

    def record_chunks(self, op: str, items: Sequence[tuple[bytes, int]]) -> None:
        """The Redis level's ``on_access``: runs in the request's thread, so it only enqueues."""
        for key, size in items:
            self._enqueue(ChunkAccess(op, key, size))

    def _enqueue(self, item: PageRequest | SearchSet | ChunkAccess) -> None:
        try:
            self._outbox.put_nowait(item)
        except queue.Full:
            self._drop([item])

    def _drop(self, items: Sequence[PageRequest | SearchSet | ChunkAccess]) -> None:
        pages = sum(1 for item in items if not isinstance(item, ChunkAccess))
        chunks = len(items) - pages
        with self._counts_lock:
            self.dropped["page"] += pages
            self.dropped["chunk"] += chunks
            total = self.dropped["page"] + self.dropped["chunk"]
        CLUSTER_ACCESSES.labels("page", "dropped").inc(pages)
        CLUSTER_ACCESSES.labels("chunk", "dropped").inc(chunks)
        if total == len(items) or total // 10_000 != (total - len(items)) // 10_000:
            log.warning(
                "cluster access log: accesses dropped (Redis away or slower than the traffic)",
                extra={"dropped": total},
            )

    def _write_loop(self) -> None:
        flush_until: float | None = None  # on close, flush what is queued for a moment
        while True:
            if self._stop.is_set():
                if flush_until is None:
                    flush_until = time.monotonic() + 1.0
                if self._outbox.empty() or time.monotonic() > flush_until:
                    return
            batch = take_batch(self._outbox, _BATCH)
            if not batch:
                continue
            if time.monotonic() < self._down_until:
                self._drop(batch)
                continue
            try:
                self._publish(batch)
                self._write_outage.recovered()
            except redis.RedisError as exc:
                self._write_outage.failed(exc)
                self._down_until = time.monotonic() + self._settings.retry_s
                self._drop(batch)

    def _publish(self, batch: Sequence[PageRequest | SearchSet | ChunkAccess]) -> None:
        maxlen = self._settings.accesses_maxlen
        pipe = self._writer.pipeline(transaction=False)
        pages = 0
        for item in batch:
            if isinstance(item, PageRequest):
                pages += 1
                stream, fields = self.pages, encode_page(item, self.replica_id)
            elif isinstance(item, SearchSet):
                pages += 1
                stream, fields = self.pages, encode_set(item, self.replica_id)
            else:
                stream, fields = self.chunks, encode_chunk(item, self.replica_id)
            pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        pipe.execute()
        with self._counts_lock:
            self.published["page"] += pages
            self.published["chunk"] += len(batch) - pages
        CLUSTER_ACCESSES.labels("page", "published").inc(pages)
        CLUSTER_ACCESSES.labels("chunk", "published").inc(len(batch) - pages)

    # ------------------------------------------------------------------ in

    def _read_loop(self) -> None:
        block = self._settings.read_block_ms
        while not self._stop.is_set():
            try:
                if self._position is None:
                    # From the tail: a replica learns from the accesses made while it runs.
                    last = cast(_Entries, self._reader.xrevrange(self.pages, count=1))
                    self._position = last[0][0] if last else b"0-0"
                    self.reading.set()
                reply = self._reader.xread({self.pages: self._position}, count=_BATCH, block=block)
                self._read_outage.recovered()
            except redis.RedisError as exc:
                self._read_outage.failed(exc)
                self._stop.wait(self._settings.retry_s)
                continue
            for _stream, entries in cast(list[tuple[bytes, _Entries]], reply or []):
                for entry_id, fields in entries:
                    self._position = entry_id
                    self._apply(entry_id, fields)

    def _apply(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        if fields.get(b"o") == _SET_OP:
            self._apply_set(entry_id, fields)
            return
        try:
            replica, req = decode_page(fields)
        except (KeyError, ValueError):
            log.warning("malformed access log entry skipped", extra={"entry": entry_id.decode()})
            return
        if replica == self.replica_id or self._manager is None:
            return
        try:
            self._manager.request_page(req, local=False)
        except Exception:
            log.exception("a replicated page request failed", extra={"entry": entry_id.decode()})
            return
        self.applied += 1
        CLUSTER_ACCESSES.labels("page", "applied").inc()

    def _apply_set(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            replica, found = decode_set(fields)
        except (KeyError, ValueError, UnicodeDecodeError):
            log.warning("malformed access log entry skipped", extra={"entry": entry_id.decode()})
            return
        if replica == self.replica_id or self._observe is None:
            return
        try:
            self._observe(found.tenant, list(found.cube_ids))
        except Exception:
            log.exception("a replicated search set failed", extra={"entry": entry_id.decode()})
            return
        self.applied_sets += 1
        CLUSTER_ACCESSES.labels("page", "applied").inc()


# ---------------------------------------------------------------------- the evictor


class RedisPolicy:
    """One scheduler policy over the Redis level's byte budget, with its bit predictor, and
    the set of keys it holds resident (the policy itself cannot be iterated)."""

    def __init__(self, name: str, budget_bytes: int, items: int) -> None:
        info = policy_info(name)
        if not info.sized:
            raise ValueError(
                f"activation.redis_policy {name!r} is unit-size only: the Redis level has a "
                "byte budget, so use a sized policy (robust-mark0, lru, gds, gds-bits, ...)"
            )
        self.name = name
        self.policy: Policy = make_policy(name, budget_bytes)
        self.predictor: BitPredictor | None = None
        if info.bit_kind == "discard":
            self.predictor = BitPredictor(
                LearnedConfig(kind="discard", k=items, budget=budget_bytes)
            )
        self.resident: dict[bytes, int] = {}

    def request(self, key: bytes, size: int, *, bit: int | None = None) -> list[bytes]:
        """One access; the keys that must leave Redis for it (``key`` itself if it cannot
        fit the budget at all)."""
        size = max(1, size)
        if bit is None and self.predictor is not None:
            bit = self.predictor.bit(key, size=size, cost=float(size))
        # The miss cost: recomputing (or re-reading) the chunk, proportional to its bytes.
        outcome = self.policy.request(key, size, float(size), bit)
        victims = as_keys(outcome.evicted)
        for victim in victims:
            self.resident.pop(victim, None)
        if outcome.admitted:
            self.resident[key] = size
        else:
            self.resident.pop(key, None)
            victims.append(key)
        return victims

    def remove(self, key: bytes) -> None:
        self.policy.remove(key)
        self.resident.pop(key, None)

    def apply(self, access: ChunkAccess) -> list[bytes]:
        if access.op == "delete":
            self.remove(access.key)
            return []
        return self.request(access.key, access.size)

    @property
    def used(self) -> int:
        return self.policy.used


@dataclass(frozen=True, slots=True)
class EvictorRun:
    rebuilt: bool
    replayed: int
    victims: int
    deleted: int
    behind: bool  # the run stopped at its entry cap; the next one continues
    lost: int  # entries trimmed from the stream before this evictor read them
    used: int
    budget: int

    def __str__(self) -> str:
        s = (
            f"{'rebuilt from the retained window; ' if self.rebuilt else ''}"
            f"replayed {self.replayed} chunk accesses, deleted {self.deleted} of "
            f"{self.victims} victims; policy holds {self.used} of {self.budget} bytes"
        )
        if self.lost:
            s += f"; {self.lost} accesses were trimmed before they were replayed"
        return s + ("; behind the stream, continuing next run" if self.behind else "")


class RedisEvictor:
    """The Redis level's eviction, as a cluster-wide job: ``run`` on the leader only.

    Runs replay the chunk stream from where the previous run of the same term stopped; a new
    term (or a failed run) rebuilds the policy from Redis's keys and the retained window.
    """

    def __init__(
        self,
        client: redis.Redis,
        level: RedisLevel,
        cluster: ClusterSettings,
        activation: ActivationSettings,
        *,
        max_entries_per_run: int = 200_000,
    ) -> None:
        self.stream = chunks_stream(cluster)
        self.level = level
        self.policy_name = activation.redis_policy
        self.budget = activation.redis_budget_bytes
        self.items = activation.redis_policy_items
        RedisPolicy(self.policy_name, 1, 1)  # a bad name fails at start-up, not in the job
        self.max_entries_per_run = max_entries_per_run
        self.state: RedisPolicy | None = None
        self._client = client
        self._term: int | None = None
        self._position = b"0-0"
        self._added = 0  # the stream's entries-added count at ``_position``
        self._pending: set[bytes] = set()  # victims not yet deleted
        self._lock = threading.Lock()

    def run(self) -> EvictorRun:
        fence = current_fence()
        if fence is None:
            raise RuntimeError(
                "the Redis evictor runs as a cluster-wide job, under the leader's fence"
            )
        with self._lock:
            try:
                return self._run(fence)
            except Exception:
                # Victims may be half deleted and the position half advanced: the next run
                # rebuilds (a lost lease, a Redis error, a lost stream all end here).
                self.state = None
                raise

    def _run(self, fence: Fence) -> EvictorRun:
        rebuilt = self.state is None or self._term != fence.token
        if rebuilt:
            self.state = RedisPolicy(self.policy_name, self.budget, self.items)
            self._position, self._added = b"0-0", 0
            self._pending = set()
            self._term = fence.token
            log.info("redis evictor: rebuilding its policy from the access log's window")
        state = self.state
        assert state is not None
        # A rebuild replays the whole window (bounded by cluster.accesses_maxlen) at once.
        limit = None if rebuilt else self.max_entries_per_run
        replayed, behind, lost = self._catch_up(state, limit=limit, rebuilding=rebuilt)
        if rebuilt:
            self._reconcile(state)
        victims = sorted(k for k in self._pending if k not in state.resident)
        deleted = self._delete(fence, victims)
        self._pending.clear()
        return EvictorRun(
            rebuilt, replayed, len(victims), deleted, behind, lost, state.used, self.budget
        )

    # ------------------------------------------------------------------ rebuild

    def _reconcile(self, state: RedisPolicy) -> None:
        """Make the replayed policy agree with what Redis holds now (see the module's doc)."""
        stored = self._scan()
        present = {key for key, _ in stored}
        for key in [k for k in state.resident if k not in present]:
            state.remove(key)
        for key, size in stored:
            if key in state.resident or key in self._pending:
                continue
            if state.used + size <= self.budget:
                self._pending.update(state.request(key, size, bit=1))
            else:
                self._pending.add(key)

    def _scan(self) -> list[tuple[bytes, int]]:
        """Every chunk stored in Redis now, in scan order, with its size."""
        pattern = _glob_escape(self.level.namespace) + b"*"
        found: list[tuple[bytes, int]] = []
        batch: list[bytes] = []

        def sizes() -> None:
            pipe = self._client.pipeline(transaction=False)
            for rkey in batch:
                pipe.strlen(rkey)
            for rkey, size in zip(batch, pipe.execute(), strict=True):
                key = self.level.level_key(rkey)
                if key is not None and int(size) > 0:  # 0: gone since the SCAN saw it
                    found.append((key, int(size)))
            batch.clear()

        for rkey in self._client.scan_iter(match=pattern, count=_SCAN_COUNT):
            batch.append(cast(bytes, rkey))
            if len(batch) >= _BATCH:
                sizes()
        if batch:
            sizes()
        return found

    # ------------------------------------------------------------------ replay

    def _catch_up(
        self, state: RedisPolicy, *, limit: int | None, rebuilding: bool
    ) -> tuple[int, bool, int]:
        replayed = lost = 0
        while limit is None or replayed < limit:
            entries, missed = self._snapshot()
            if missed and not rebuilding:
                lost += missed
                log.warning(
                    "redis evictor: chunk accesses trimmed before it replayed them "
                    "(raise cluster.accesses_maxlen or run it more often)",
                    extra={"lost": missed},
                )
            if not entries:
                return replayed, False, lost
            for entry_id, fields in entries:
                self._position = entry_id
                self._added += 1
                try:
                    _replica, access = decode_chunk(fields)
                except (KeyError, ValueError):
                    log.warning("malformed chunk access skipped", extra={"entry": entry_id})
                    continue
                self._pending.update(state.apply(access))
                replayed += 1
            CLUSTER_ACCESSES.labels("chunk", "replayed").inc(len(entries))
        return replayed, True, lost

    def _snapshot(self) -> tuple[_Entries, int]:
        """The entries after the position, read atomically with the stream's counters, and how
        many were trimmed before they could be read (as ``stream.EventBridge`` does)."""
        pipe = self._client.pipeline(transaction=True)
        pipe.xinfo_stream(self.stream)
        pipe.xread({self.stream: self._position}, count=_BATCH)
        info, reply = pipe.execute(raise_on_error=False)
        if isinstance(info, redis.ResponseError):  # no stream yet
            return [], 0
        for result in (info, reply):
            if isinstance(result, Exception):
                raise result
        info = cast(dict[str, Any], info)
        batch = cast(list[tuple[bytes, _Entries]] | None, reply)
        entries: _Entries = batch[0][1] if batch else []
        added, length = int(info["entries-added"]), int(info["length"])
        first = info.get("recorded-first-entry-id") or b"0-0"
        if added < self._added:
            # Redis restarted without the stream: the policy describes what is gone.
            raise redis.RedisError("the access log's chunk stream was lost: rebuilding")
        if _id_tuple(first) > _id_tuple(self._position) and added - self._added > length:
            missed = added - self._added - length
            self._added = added - length
            return entries, missed
        return entries, 0

    # ------------------------------------------------------------------ delete

    def _delete(self, fence: Fence, victims: Sequence[bytes]) -> int:
        deleted = 0
        for start in range(0, len(victims), _DELETE_BATCH):
            rkeys = [self.level.redis_key(k) for k in victims[start : start + _DELETE_BATCH]]
            # One fenced DEL per batch: refused (LostLease) once another replica leads. The
            # keys after the first ride as script arguments: fine on one Redis, which is what
            # cluster mode runs on (a Redis Cluster would need a call per hash slot).
            deleted += int(fence.call("DEL", rkeys[0], *rkeys[1:]))
        if deleted:
            self.level.count_policy_evictions(deleted)
            CACHE_EVICTIONS.labels("redis", "policy").inc(deleted)
        return deleted


def _glob_escape(raw: bytes) -> bytes:
    out = bytearray()
    for b in raw:
        if b in b"*?[]\\":
            out += b"\\"
        out.append(b)
    return bytes(out)


def redis_level_of(store: ActivationStore | None) -> RedisLevel | None:
    if store is None:
        return None
    return next((lv for lv in store.levels if isinstance(lv, RedisLevel)), None)
