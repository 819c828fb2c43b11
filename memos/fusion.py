"""Near-duplicate plaintext cubes fused into one successor, with provenance.

Two active plaintext cubes of one tenant and namespace are near-duplicates when their
embeddings' cosine similarity reaches ``jobs.fuse_similarity`` AND their word sets overlap
(Jaccard) by at least ``jobs.fuse_lexical``: the embedding alone calls paraphrases with
opposite facts "similar", the words alone miss rewordings. Near-duplicates group by
transitivity; pinned cubes never fuse.

A group becomes one new cube: the longest text, followed by the sentences of the others it
does not already hold; the union of the tags; ``parent_ids`` naming every original. The
originals are archived (a new version, state ``archived``: history stays) only once the
successor is durably committed, and each only if it did not change since it was read. Nothing
is deleted, so a crash at any point leaves at worst a successor beside its originals.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from memos.config import JobsSettings
from memos.cube import Kind, MemCube, PlaintextPayload, Source, State, check_text, utcnow
from memos.errors import MemosError
from memos.events import ChangeEvent, ChangeType
from memos.ids import new_id
from memos.kernel import MemoryOS
from memos.manager import JobPrincipal, TierManager, activation_parents
from memos.metrics import FUSED
from memos.tiers.plaintext.store import CubeFilter

log = logging.getLogger(__name__)

WRITER = "memos-fuse"
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, slots=True)
class Fusion:
    tenants: int = 0
    compared: int = 0
    successors: tuple[MemCube, ...] = ()
    archived: int = 0
    conflicts: int = 0  # originals that changed after they were read: left active

    def __str__(self) -> str:
        return (
            f"{len(self.successors)} fused cubes from {self.archived} archived originals "
            f"({self.compared} compared in {self.tenants} tenants, {self.conflicts} changed "
            "meanwhile and kept)"
        )


def words(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in _WORD.findall(text))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def groups(cubes: list[MemCube], similarity: float, lexical: float) -> list[list[MemCube]]:
    """Near-duplicate groups (two or more cubes each) among cubes of one namespace."""
    n = len(cubes)
    if n < 2:
        return []
    emb = np.asarray([c.plaintext.embedding for c in cubes if c.plaintext], dtype=np.float32)
    if emb.shape[0] != n:
        return []
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sims = emb @ emb.T
    bags = [words(c.text) for c in cubes]
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows, cols = np.nonzero(np.triu(sims >= similarity, k=1))
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        if jaccard(bags[i], bags[j]) >= lexical:
            parent[find(i)] = find(j)
    by_root: dict[int, list[MemCube]] = {}
    for i in range(n):
        by_root.setdefault(find(i), []).append(cubes[i])
    return [g for g in by_root.values() if len(g) > 1]


def fused_text(group: list[MemCube]) -> str:
    """The longest text, then each other sentence it lacks (in the originals' order)."""
    ordered = sorted(group, key=lambda c: (c.created_at, c.id))
    base = max(ordered, key=lambda c: len(c.text)).text
    have = {_norm(s) for s in _SENTENCE.split(base)}
    extra: list[str] = []
    for cube in ordered:
        for sentence in _SENTENCE.split(cube.text):
            norm = _norm(sentence)
            if norm and norm not in have:
                have.add(norm)
                extra.append(sentence.strip())
    return " ".join([base, *extra]) if extra else base


def _norm(sentence: str) -> str:
    return " ".join(w.lower() for w in _WORD.findall(sentence))


def successor(group: list[MemCube], now: datetime, kernel: MemoryOS) -> MemCube:
    limits = kernel.settings.limits
    text = fused_text(group)
    try:
        check_text(text, limits)
    except MemosError:
        text = max(group, key=lambda c: len(c.text)).text
    tags: list[str] = []
    for cube in group:
        tags.extend(t for t in cube.tags if t not in tags)
    metadata: dict[str, str] = {}
    for cube in sorted(group, key=lambda c: c.created_at):
        for k, v in cube.metadata.items():
            metadata.setdefault(k, v)
    expiries = [c.expires_at for c in group]
    return MemCube(
        id=new_id(),
        tenant=group[0].tenant,
        namespace=group[0].namespace,
        kind=Kind.PLAINTEXT,
        state=State.ACTIVE,
        version=1,
        parent_ids=tuple(c.id for c in group),
        source=Source(writer=WRITER),
        tags=tuple(tags[: limits.max_tags]),
        created_at=now,
        updated_at=now,
        # The successor lives as long as the longest-lived original would have.
        expires_at=None if any(e is None for e in expiries) else max(e for e in expiries if e),
        pinned=False,
        priority=max(c.priority for c in group),
        metadata=dict(list(metadata.items())[: limits.max_metadata_entries]),
        plaintext=PlaintextPayload(text=text),
    )


def _candidates(kernel: MemoryOS, tenant: str, limit: int) -> list[MemCube]:
    out: list[MemCube] = []
    token: str | None = None
    flt = CubeFilter(kind=Kind.PLAINTEXT)
    while True:
        cubes, token = kernel.plaintext.list(
            tenant, flt, page_size=500, page_token=token, with_embeddings=True
        )
        out.extend(c for c in cubes if not c.pinned)
        if len(out) > 4 * limit:  # ids sort by time: keep the most recent
            out = out[-limit:]
        if not token:
            return out[-limit:]


def _archive(kernel: MemoryOS, cube: MemCube, now: datetime) -> MemCube:
    def change(latest: MemCube) -> MemCube:
        return latest.model_copy(
            update={"version": latest.version + 1, "updated_at": now, "state": State.ARCHIVED}
        )

    archived = kernel.plaintext.update(cube.tenant, cube.id, change, expected_version=cube.version)
    kernel.events.publish(ChangeEvent(ChangeType.ARCHIVE, archived, now))
    return archived


def fuse(kernel: MemoryOS, tenants: list[str], settings: JobsSettings) -> Fusion:
    """One fusion pass over each tenant's most recent plaintext cubes."""
    manager: TierManager | None = kernel.manager
    compared = archived = conflicts = 0
    made: list[MemCube] = []
    for tenant in tenants:
        cubes = _candidates(kernel, tenant, settings.fuse_max_cubes)
        compared += len(cubes)
        by_ns: dict[str, list[MemCube]] = {}
        for c in cubes:
            by_ns.setdefault(c.namespace, []).append(c)
        found = [
            g
            for ns_cubes in by_ns.values()
            for g in groups(ns_cubes, settings.fuse_similarity, settings.fuse_lexical)
        ]
        if not found:
            continue
        with_kv = activation_parents(kernel, tenant) if kernel.migrator is not None else {}
        for group in found:
            now = utcnow()
            (stored,) = kernel.plaintext.put([successor(group, now, kernel)])
            kernel.events.publish(ChangeEvent(ChangeType.PUT, stored, now))
            made.append(stored)
            # The successor is committed: only now may the originals leave the active set.
            for original in group:
                try:
                    _archive(kernel, original, now)
                except MemosError as exc:
                    conflicts += 1
                    log.info("fusion kept a changed original", extra={"id": original.id, "e": exc})
                    continue
                archived += 1
                FUSED.inc()
                if manager is not None:
                    manager.forget(tenant, original.id, "fused")
                if original.id in with_kv and kernel.migrator is not None:
                    kernel.migrator.demote(JobPrincipal(tenant), original.id)
    return Fusion(len(tenants), compared, tuple(made), archived, conflicts)
