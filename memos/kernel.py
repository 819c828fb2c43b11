"""The one in-process API of the daemon (``MemoryOS``).

The gRPC servicers, the CLI in embedded mode and the tests all go through it. Every call
names a ``Principal`` (a tenant and scopes, established by the auth layer from a bearer
token, never from a message field), and every read or write is confined to its tenant.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import numpy as np

from memos.config import Settings
from memos.cube import (
    CubeInput,
    Kind,
    MemCube,
    PlaintextPayload,
    State,
    check_id,
    check_metadata,
    check_namespace,
    check_tags,
    check_text,
    check_ttl,
    expiry,
    utcnow,
)
from memos.embed import Embedder, load_embedder
from memos.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from memos.events import ChangeEvent, ChangeType, EventHub, Subscription
from memos.ids import new_id
from memos.tiers.plaintext.ranking import SEARCH_MODES, SearchMode
from memos.tiers.plaintext.store import CubeFilter, PlaintextStats, PlaintextStore

if TYPE_CHECKING:  # the tiers load torch: imported when opened, not with the kernel
    from memos.manager import Hint, TierManager
    from memos.migration import Migration, Migrator
    from memos.tiers.activation.tier import ActivationTier
    from memos.tiers.parameter.cubes import AdapterCubes

log = logging.getLogger(__name__)

Scope = Literal["read", "write", "admin"]
DEFAULT_K = 10


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a tenant and what it may do there."""

    tenant: str
    scopes: frozenset[str]
    name: str = ""

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            who = f"token {self.name!r}" if self.name else "this token"
            raise PermissionDenied(
                f"{who} lacks the {scope!r} scope for tenant {self.tenant!r}; "
                f"it has {sorted(self.scopes) or 'none'}"
            )


@dataclass(frozen=True, slots=True)
class UpdateSpec:
    """What an Update changes; None leaves a field as it is."""

    text: str | None = None
    embedding: tuple[float, ...] | None = None
    tags: tuple[str, ...] | None = None
    metadata: dict[str, str] | None = None
    ttl_seconds: int | None = None  # 0 clears the expiry
    pinned: bool | None = None
    priority: int | None = None

    def is_empty(self) -> bool:
        return all(
            v is None
            for v in (
                self.text,
                self.embedding,
                self.tags,
                self.metadata,
                self.ttl_seconds,
                self.pinned,
                self.priority,
            )
        )


@dataclass(frozen=True, slots=True)
class SearchHit:
    cube: MemCube
    score: float


@dataclass
class MemoryOS:
    settings: Settings
    embedder: Embedder
    plaintext: PlaintextStore
    events: EventHub = field(default_factory=EventHub)
    #: KV chunks: always open (RAM and disk by default, Redis with redis_url).
    activation: ActivationTier | None = None
    migrator: Migrator | None = None
    #: The adapters' calls; None when no engine model is configured.
    parameter: AdapterCubes | None = None
    #: The tier manager, fed one page request per cube read; wired by the server.
    manager: TierManager | None = None
    _closed: bool = field(default=False, init=False)
    _close_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def migrate(
        self,
        principal: Principal,
        cube_id: str,
        to: Kind,
        *,
        engine: str = "",
        engine_url: str = "",
    ) -> Migration:
        """Promote a plaintext cube to activation (prefilled KV chunks), or demote it back."""
        if self.migrator is None:
            raise FailedPrecondition("the activation tier is not open")
        return self.migrator.migrate(principal, cube_id, to, engine=engine, engine_url=engine_url)

    @classmethod
    def open(cls, settings: Settings, *, embedder: Embedder | None = None) -> MemoryOS:
        """Open the stores (and load the embedding model unless one is given)."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        emb = embedder or load_embedder(settings.embed)
        store = PlaintextStore(settings.plaintext_uri, embedder=emb, settings=settings.plaintext)
        log.info(
            "kernel open",
            extra={"plaintext_uri": settings.plaintext_uri, "embedding_model": emb.model_name},
        )
        kernel = cls(settings=settings, embedder=emb, plaintext=store)
        from memos.migration import Migrator
        from memos.tiers.activation.factory import open_tier

        kernel.activation = open_tier(settings)
        kernel.migrator = Migrator(
            store, kernel.activation, kernel.events, vllm_hosts=settings.engine.vllm_hosts
        )
        if settings.engine.model_path is not None:
            from memos.tiers.parameter.factory import open_adapters

            kernel.parameter = open_adapters(kernel)
        return kernel

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.events.close()
        if self.activation is not None:
            self.activation.close()
        if self.parameter is not None:
            self.parameter.close()  # cancels training runs before the stores close
        self.plaintext.close()

    # ------------------------------------------------------------------ writes

    def put(
        self,
        principal: Principal,
        inputs: Sequence[CubeInput],
        vectors: Sequence[np.ndarray | None] | None = None,
    ) -> list[MemCube]:
        """Store new plaintext cubes; returns them once they are durably committed.

        ``vectors[i]``, when given, is input i's embedding as a float32 array: the form the
        gRPC service reads from the wire, with no Python float per number on the way to the
        table. An input carries its embedding in one place or the other, not both.
        """
        principal.require("write")
        limits = self.settings.limits
        if not inputs:
            raise InvalidArgument("nothing to put: send at least one cube")
        if vectors is not None and len(vectors) != len(inputs):
            raise InvalidArgument(f"{len(vectors)} embeddings for {len(inputs)} cubes")
        if len(inputs) > limits.max_batch:
            raise InvalidArgument(
                f"{len(inputs)} cubes in one batch, over the limit of {limits.max_batch}: "
                "split the batch"
            )
        now = utcnow()
        cubes: list[MemCube] = []
        for i, item in enumerate(inputs):
            try:
                item.check(limits)
            except InvalidArgument as exc:
                raise InvalidArgument(f"cube {i}: {exc}" if len(inputs) > 1 else str(exc)) from None
            if vectors is not None and vectors[i] is not None and item.embedding is not None:
                raise InvalidArgument(f"cube {i} carries its embedding twice: send it once")
            cubes.append(
                MemCube(
                    id=new_id(),
                    tenant=principal.tenant,
                    namespace=item.namespace,
                    kind=Kind.PLAINTEXT,
                    state=State.ACTIVE,
                    version=1,
                    source=item.source,
                    tags=item.tags,
                    created_at=now,
                    updated_at=now,
                    expires_at=expiry(now, item.ttl_seconds),
                    pinned=item.pinned,
                    priority=item.priority,
                    metadata=item.metadata,
                    plaintext=PlaintextPayload(text=item.text, embedding=item.embedding),
                )
            )
        # The store checks every embedding before it queues anything: a bad one fails the batch.
        stored = self.plaintext.put(cubes, vectors)
        if self.manager is not None:
            self.manager.saw_tenant(principal.tenant)
        for cube in stored:
            self.events.publish(ChangeEvent(ChangeType.PUT, cube, now))
        return stored

    def update(
        self,
        principal: Principal,
        cube_id: str,
        spec: UpdateSpec,
        *,
        expected_version: int | None = None,
    ) -> MemCube:
        principal.require("write")
        check_id(cube_id)
        if spec.is_empty():
            raise InvalidArgument("the update changes nothing: set at least one field")
        limits = self.settings.limits
        if spec.text is not None:
            check_text(spec.text, limits)
        if spec.tags is not None:
            check_tags(spec.tags, limits)
        if spec.metadata is not None:
            check_metadata(spec.metadata, limits)
        if spec.ttl_seconds:
            check_ttl(spec.ttl_seconds, limits)
        self._check_embedding(spec.embedding)
        now = utcnow()

        def change(latest: MemCube) -> MemCube:
            self._ensure_visible(latest, cube_id, now)
            if latest.kind != Kind.PLAINTEXT:
                raise FailedPrecondition(
                    f"cube {cube_id} is a {latest.kind} cube: only plaintext cubes are updated "
                    "this way"
                )
            assert latest.plaintext is not None
            payload = latest.plaintext
            if spec.text is not None or spec.embedding is not None:
                payload = PlaintextPayload(
                    text=spec.text if spec.text is not None else payload.text,
                    # A new text without a new embedding is re-embedded by the store.
                    embedding=spec.embedding,
                )
            updates: dict[str, object] = {
                "version": latest.version + 1,
                "updated_at": now,
                "plaintext": payload,
            }
            if spec.tags is not None:
                updates["tags"] = spec.tags
            if spec.metadata is not None:
                updates["metadata"] = spec.metadata
            if spec.ttl_seconds is not None:
                updates["expires_at"] = expiry(now, spec.ttl_seconds)
            if spec.pinned is not None:
                updates["pinned"] = spec.pinned
            if spec.priority is not None:
                updates["priority"] = spec.priority
            return MemCube.model_validate({**latest.model_dump(), **updates})

        cube = self.plaintext.update(
            principal.tenant, cube_id, change, expected_version=expected_version
        )
        self.events.publish(ChangeEvent(ChangeType.UPDATE, cube, now))
        return cube

    def delete(
        self, principal: Principal, cube_id: str, *, expected_version: int | None = None
    ) -> MemCube:
        """Write a tombstone version of a plaintext cube; history stays readable until
        retention purges it, and the KV derived from it is dropped."""
        cube = self._tombstone(
            principal, cube_id, expected_version=expected_version, kinds=(Kind.PLAINTEXT,)
        )
        if self.migrator is not None:
            # The tombstone is already durable, so a failure here leaves chunks for eviction
            # to reclaim, never a live memory.
            try:
                self.migrator.demote(principal, cube_id)
            except Exception:
                log.exception("dropping the KV of a deleted cube failed", extra={"id": cube_id})
        return cube

    def retire(self, principal: Principal, cube_id: str) -> MemCube:
        """Tombstone a cube of any kind: for the tiers, which remove its payload themselves
        (an adapter's weights, an activation cube's chunks)."""
        return self._tombstone(principal, cube_id, expected_version=None, kinds=tuple(Kind))

    def _tombstone(
        self,
        principal: Principal,
        cube_id: str,
        *,
        expected_version: int | None,
        kinds: tuple[Kind, ...],
    ) -> MemCube:
        principal.require("write")
        check_id(cube_id)
        now = utcnow()

        def change(latest: MemCube) -> MemCube:
            self._ensure_visible(latest, cube_id, now)
            if latest.kind not in kinds:
                raise FailedPrecondition(_how_to_delete(latest))
            return latest.model_copy(
                update={"version": latest.version + 1, "updated_at": now, "state": State.TOMBSTONE}
            )

        cube = self.plaintext.update(
            principal.tenant, cube_id, change, expected_version=expected_version
        )
        self.events.publish(ChangeEvent(ChangeType.DELETE, cube, now))
        return cube

    # ------------------------------------------------------------------ reads

    def get(
        self,
        principal: Principal,
        cube_id: str,
        *,
        version: int | None = None,
        hint: Hint | None = None,
    ) -> MemCube:
        """The latest visible version, or a given version (history, tombstones included)."""
        principal.require("read")
        check_id(cube_id)
        if version is not None and version < 1:
            raise InvalidArgument(f"version must be >= 1, got {version}")
        cube = self.plaintext.get(principal.tenant, cube_id, version)
        if cube is None:
            if version is not None and self.plaintext.get(principal.tenant, cube_id) is not None:
                raise NotFound(f"cube {cube_id} has no version {version}")
            raise NotFound(f"no cube {cube_id} for tenant {principal.tenant!r}")
        if version is None:
            self._ensure_visible(cube, cube_id, utcnow())
            if self.manager is not None:
                self.manager.record(principal.tenant, (cube,), "get", hint)
        return cube

    def history(self, principal: Principal, cube_id: str) -> list[MemCube]:
        principal.require("read")
        check_id(cube_id)
        versions = self.plaintext.history(principal.tenant, cube_id)
        if not versions:
            raise NotFound(f"no cube {cube_id} for tenant {principal.tenant!r}")
        return versions

    def search(
        self,
        principal: Principal,
        query: str,
        *,
        k: int = DEFAULT_K,
        flt: CubeFilter | None = None,
        query_vector: Sequence[float] | None = None,
        mode: SearchMode | None = None,
        exact: bool = False,
        hint: Hint | None = None,
    ) -> list[SearchHit]:
        """The k best cubes for the query by ``mode`` (None: the configured default, hybrid
        unless changed): ``dense`` (cosine similarity of embeddings), ``lexical`` (BM25 over
        the indexed text) or ``hybrid`` (both, fused as ``plaintext.fusion`` says). A query
        embedding, when given, replaces the embedded query text; hybrid without a query text is
        dense."""
        principal.require("read")
        limits = self.settings.limits
        if not 1 <= k <= limits.max_k:
            raise InvalidArgument(f"k={k} is out of range 1..{limits.max_k}")
        chosen: SearchMode = mode or self.settings.plaintext.search_mode
        if chosen not in SEARCH_MODES:
            raise InvalidArgument(
                f"unknown search mode {chosen!r}: use one of {', '.join(SEARCH_MODES)}"
            )
        flt = flt or CubeFilter()
        self._check_filter(flt)
        has_vector = query_vector is not None and len(query_vector) > 0
        if query.strip():
            check_text(query, limits)
        elif not has_vector:
            raise InvalidArgument("the query is empty: send a query text or a query embedding")
        if chosen == "lexical" and not query.strip():
            raise InvalidArgument(
                "lexical search needs a query text; a query embedding alone suits dense search"
            )
        vector: np.ndarray | None = None
        if has_vector:
            assert query_vector is not None
            vector = np.asarray(query_vector, dtype=np.float32)  # the store checks it
        elif chosen != "lexical":
            vector = self.plaintext.embed_query(query)
        hits = self.plaintext.find(
            principal.tenant, k, flt, mode=chosen, text=query, vector=vector, exact=exact
        )
        if self.manager is not None:
            self.manager.record(principal.tenant, (cube for cube, _ in hits), "search", hint)
        return [SearchHit(cube, score) for cube, score in hits]

    def list(
        self,
        principal: Principal,
        flt: CubeFilter | None = None,
        *,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> tuple[list[MemCube], str | None]:
        principal.require("read")
        limits = self.settings.limits
        if not 1 <= page_size <= limits.max_page_size:
            raise InvalidArgument(
                f"page_size={page_size} is out of range 1..{limits.max_page_size}"
            )
        flt = flt or CubeFilter()
        self._check_filter(flt)
        return self.plaintext.list(
            principal.tenant, flt, page_size=page_size, page_token=page_token or None
        )

    def stats(self, principal: Principal) -> PlaintextStats:
        principal.require("read")
        return self.plaintext.stats(principal.tenant)

    def watch(self, principal: Principal, namespaces: Sequence[str] = ()) -> Subscription:
        principal.require("read")
        for ns in namespaces:
            check_namespace(ns)
        return self.events.subscribe(principal.tenant, frozenset(namespaces))

    # ------------------------------------------------------------------ jobs

    def refresh_index(self) -> bool:
        return self.plaintext.refresh_index()

    def compact(self) -> None:
        self.plaintext.compact()

    def reindex(
        self,
        principal: Principal,
        namespaces: Sequence[str] = (),
        *,
        everything: bool = False,
    ) -> Iterator[tuple[int, int]]:
        """Re-embed the caller's cubes (in ``namespaces``, or all) whose vector is stale after
        a model or template change (every one with ``everything``); yields (done, total),
        (0, total) first. Needs the admin scope: it rewrites every version it visits."""
        principal.require("admin")
        for ns in namespaces:
            check_namespace(ns)
        return self.plaintext.reindex(principal.tenant, namespaces, everything=everything)

    # ------------------------------------------------------------------ checks

    def _check_embedding(self, embedding: Sequence[float] | None) -> None:
        # Checked here, before the write queues, so a bad batch fails as a whole at once.
        if embedding is not None:
            self.plaintext.check_vector(embedding, "embedding")

    def _check_filter(self, flt: CubeFilter) -> None:
        for ns in flt.namespaces:
            check_namespace(ns)
        check_tags(flt.tags, self.settings.limits)
        check_metadata(dict(flt.metadata), self.settings.limits)
        if (
            flt.created_after is not None
            and flt.created_before is not None
            and flt.created_after >= flt.created_before
        ):
            raise InvalidArgument("created_after must be earlier than created_before")

    @staticmethod
    def _ensure_visible(cube: MemCube, cube_id: str, now: datetime) -> None:
        if cube.state == State.TOMBSTONE:
            raise NotFound(f"cube {cube_id} was deleted (version {cube.version} is a tombstone)")
        if cube.is_expired(now):
            raise NotFound(f"cube {cube_id} expired at {cube.expires_at:%Y-%m-%dT%H:%M:%SZ}")


def _how_to_delete(cube: MemCube) -> str:
    if cube.kind == Kind.ACTIVATION:
        return (
            f"cube {cube.id} is an activation cube: demote it with "
            f"`memosctl migrate {cube.id} --to plaintext` (its plaintext stays)"
        )
    return (
        f"cube {cube.id} is an adapter: delete it with `memosctl adapters rm NAME`, "
        "which removes its weights too"
    )
