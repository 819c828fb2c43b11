"""Cubes retrieved together again and again, fused into one activation cube in canonical order.

A prompt is laid out ``[system][memory cubes in canonical order][query]``
(``memos.integrations.vllm.prompts``), so a Search whose top-k is the same set of cubes
builds the same memory prefix every time. Each cube's own KV cache covers only a prompt that
starts with it; the KV of the *concatenation* is what such a prompt reuses. The tracker counts,
per tenant, the sets of plaintext cubes that one Search returned together; once a set was seen
``jobs.coretrieval_min_count`` times, the ``fuse-coretrieved`` job prefills the concatenated
texts (canonical order, the prompts' separator) once and records one activation cube whose
``parent_ids`` are the plaintext cubes, in that order. The plaintext originals are never
changed, archived or deleted: the fused cube is a cache of them.

A fused cube is stale once a parent changed (new version), left the active set or expired:
the job then drops its chunks and archives it; if the set keeps coming back it is built again.
Counts halve at every run of the job, so "seen together N times" means recently; a fused cube
whose set was not retrieved together for several runs is dropped as cold.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from memos.config import JobsSettings
from memos.cube import ActivationPayload, Kind, MemCube, Source, State, utcnow
from memos.errors import MemosError, ResourceExhausted
from memos.events import ChangeEvent, ChangeType
from memos.ids import new_id
from memos.integrations.vllm.prompts import build_prompt, canonical_order
from memos.kernel import MemoryOS
from memos.manager import JobPrincipal
from memos.metrics import CORETRIEVAL_FUSED
from memos.tiers.plaintext.store import CubeFilter

log = logging.getLogger(__name__)

WRITER = "memos-coretrieval"
#: Marks a fused activation cube (its value: the parents' versions, comma-separated).
META_FUSED_VERSIONS = "memos.fused_versions"
META_MODEL = "memos.model"
META_FINGERPRINT = "memos.fingerprint"

Members = tuple[str, ...]  # plaintext ids, sorted (= canonical order: ids sort by time)


def is_fused(cube: MemCube) -> bool:
    return cube.kind == Kind.ACTIVATION and META_FUSED_VERSIONS in cube.metadata


def fused_text(cubes: Sequence[MemCube]) -> str:
    """The memory part of a prompt holding exactly ``cubes``: what the fused KV covers."""
    return build_prompt("", cubes, "")


class CoRetrieval:
    """Counts of the sets of cubes each Search returned together, per tenant (bounded)."""

    def __init__(self, min_count: int, max_set: int, capacity: int = 10_000) -> None:
        self.min_count = min_count
        self.max_set = max_set
        self.capacity = capacity
        self._counts: dict[tuple[str, Members], int] = {}
        self._fused: dict[tuple[str, Members], str] = {}  # set -> fused activation cube id
        self._lock = threading.Lock()

    def observe(self, tenant: str, cube_ids: Sequence[str]) -> None:
        """One Search's hits (plaintext ids): its set counts once, if 2..max_set cubes."""
        members = tuple(sorted(set(cube_ids)))
        if not 2 <= len(members) <= self.max_set:
            return
        key = (tenant, members)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            if len(self._counts) > self.capacity:
                self._shrink()

    def decay(self) -> None:
        """Halve every count (once per job run): "seen together often" means recently."""
        with self._lock:
            self._shrink()

    def _shrink(self) -> None:
        # Halve every count and drop the sets that reach zero: old one-offs go first, and a
        # set seen often keeps its lead (a decayed frequency, applied in bulk).
        self._counts = {
            k: c // 2 for k, c in self._counts.items() if c // 2 > 0 or k in self._fused
        }

    def due(self, tenant: str) -> list[Members]:
        """The tenant's sets seen at least ``min_count`` times, most frequent first."""
        with self._lock:
            sets = [
                (c, m) for (t, m), c in self._counts.items() if t == tenant and c >= self.min_count
            ]
        return [m for _, m in sorted(sets, key=lambda cm: (-cm[0], cm[1]))]

    def count(self, tenant: str, members: Sequence[str]) -> int:
        with self._lock:
            return self._counts.get((tenant, tuple(sorted(members))), 0)

    def tenants(self) -> list[str]:
        with self._lock:
            return sorted({t for t, _ in self._counts})

    def counts(self) -> tuple[int, int]:
        """(sets tracked, sets that hold a fused activation cube)."""
        with self._lock:
            return len(self._counts), len(self._fused)

    def fused(self, tenant: str, members: Members, cube_id: str | None) -> None:
        with self._lock:
            if cube_id is None:
                self._fused.pop((tenant, members), None)
            else:
                self._fused[(tenant, members)] = cube_id


@dataclass(frozen=True, slots=True)
class CoFusion:
    built: tuple[MemCube, ...] = ()
    kept: int = 0  # due sets whose fused cube is current
    dropped: int = 0  # stale fused cubes demoted
    skipped: int = 0  # due sets that cannot be built (a member gone, too short, ...)
    prefilled_chunks: int = 0
    reused_chunks: int = 0
    stopped: str = ""

    def __str__(self) -> str:
        s = (
            f"built {len(self.built)} fused activation cubes ({self.prefilled_chunks} chunks "
            f"prefilled, {self.reused_chunks} reused), {self.kept} current, {self.dropped} "
            f"stale or cold dropped, {self.skipped} skipped"
        )
        return f"{s}; stopped: {self.stopped}" if self.stopped else s


def fused_cubes(kernel: MemoryOS, tenant: str) -> Iterator[MemCube]:
    """The tenant's active fused activation cubes."""
    token: str | None = None
    flt = CubeFilter(kind=Kind.ACTIVATION, include_expired=True)
    while True:
        cubes, token = kernel.plaintext.list(tenant, flt, page_size=500, page_token=token)
        yield from (c for c in cubes if is_fused(c))
        if not token:
            return


def fuse_coretrieved(
    kernel: MemoryOS, tracker: CoRetrieval, tenants: Sequence[str], settings: JobsSettings
) -> CoFusion:
    """Drop stale fused cubes, then build the due sets' (within the prefill budget)."""
    if kernel.activation is None or kernel.migrator is None:
        return CoFusion(stopped="no activation tier")
    built: list[MemCube] = []
    kept = dropped = skipped = prefilled = reused = 0
    stopped = ""
    chunk = kernel.settings.activation.chunk_tokens
    budget_chunks = max(1, settings.prefill_budget_tokens // chunk)
    for tenant in sorted({*tenants, *tracker.tenants()}):
        who = JobPrincipal(tenant, WRITER)
        current: dict[Members, MemCube] = {}
        for cube in fused_cubes(kernel, tenant):
            members = tuple(cube.parent_ids)
            # Stale (a parent changed or left), or cold: not retrieved together for several
            # runs (its decayed count reached zero; after a restart, until it is seen again).
            if _stale(kernel, cube) or tracker.count(tenant, members) == 0:
                kernel.migrator.demote(who, cube.id)
                tracker.fused(tenant, members, None)
                dropped += 1
            else:
                current[members] = cube
                tracker.fused(tenant, members, cube.id)
        for members in tracker.due(tenant):
            if members in current:
                kept += 1
                continue
            if prefilled >= budget_chunks:
                stopped = f"prefill budget of {settings.prefill_budget_tokens} tokens spent"
                break
            parents = [kernel.plaintext.get(tenant, m) for m in members]
            live = [p for p in parents if p is not None and p.state == State.ACTIVE]
            if len(live) != len(members) or any(p.kind != Kind.PLAINTEXT for p in live):
                skipped += 1
                continue
            try:
                cube, made, had = _build(kernel, tenant, canonical_order(live))
            except ResourceExhausted as exc:
                stopped = str(exc)
                break
            except MemosError as exc:
                log.info("co-retrieved set not fused", extra={"set": members, "e": str(exc)})
                skipped += 1
                continue
            tracker.fused(tenant, members, cube.id)
            built.append(cube)
            prefilled += made
            reused += had
            CORETRIEVAL_FUSED.inc()
        if stopped:
            break
    tracker.decay()
    return CoFusion(tuple(built), kept, dropped, skipped, prefilled, reused, stopped)


def _stale(kernel: MemoryOS, cube: MemCube) -> bool:
    if cube.is_expired():
        return True
    versions = cube.metadata.get(META_FUSED_VERSIONS, "").split(",")
    if len(versions) != len(cube.parent_ids):
        return True
    for parent_id, version in zip(cube.parent_ids, versions, strict=True):
        parent = kernel.plaintext.get(cube.tenant, parent_id)
        if parent is None or parent.state != State.ACTIVE or parent.is_expired():
            return True
        if str(parent.version) != version:
            return True
    return False


def _build(kernel: MemoryOS, tenant: str, parents: list[MemCube]) -> tuple[MemCube, int, int]:
    """Prefill the canonical concatenation (reusing the stored prefix) and record the cube."""
    from memos.migration import prefill

    tier = kernel.activation
    assert tier is not None
    engine = tier.engine()
    layout = engine.layout
    salt = tier.cache_salt(tenant)
    namespace = tier.namespace(tenant)
    tokens = engine.tokenize(fused_text(parents))
    keys = engine.keys(tokens, cache_salt=salt)
    if not keys:
        raise MemosError(f"{len(tokens)} tokens: shorter than one chunk")
    store = tier.store
    have = store.lookup(keys, namespace=namespace)
    made = prefill(tier, tokens, keys, have, namespace) if have < len(keys) else 0
    if made and store.lookup(keys, namespace=namespace) < len(keys):
        raise ResourceExhausted(
            "the activation levels did not keep a fused cube's chunks: raise "
            "activation.ram_budget_bytes or disk_budget_bytes, or add Redis"
        )
    now = utcnow()
    expiries = [p.expires_at for p in parents if p.expires_at is not None]
    record = MemCube(
        id=new_id(),
        tenant=tenant,
        namespace=parents[0].namespace,
        kind=Kind.ACTIVATION,
        state=State.ACTIVE,
        version=1,
        parent_ids=tuple(p.id for p in parents),
        source=Source(writer=WRITER),
        tags=tuple(dict.fromkeys(t for p in parents for t in p.tags))[
            : kernel.settings.limits.max_tags
        ],
        created_at=now,
        updated_at=now,
        # The fused KV is valid while every parent is: it expires with the first of them.
        expires_at=min(expiries) if expiries else None,
        pinned=False,
        priority=max(p.priority for p in parents),
        metadata={
            META_FUSED_VERSIONS: ",".join(str(p.version) for p in parents),
            META_MODEL: layout.model_id,
            META_FINGERPRINT: layout.fingerprint.hex(),
        },
        activation=ActivationPayload(
            model_fingerprint=layout.fingerprint.hex(),
            token_count=len(tokens),
            chunk_tokens=layout.chunk_tokens,
            chunk_keys=tuple(k.hex() for k in keys),
            cache_salt=salt,
        ),
    )
    (stored,) = kernel.plaintext.put([record])
    kernel.events.publish(ChangeEvent(ChangeType.PUT, stored, now))
    return stored, made, have
