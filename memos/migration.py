"""Migration between tiers: a plaintext memory promoted to a precomputed KV cache, and back.

Promotion (``to=activation``) tokenizes the plaintext cube's text with the daemon's engine,
prefills it, stores every full chunk under the tenant's namespace and the tenant's cache salt,
and records an activation cube: kind ``activation``, its ``ActivationPayload`` (model
fingerprint, token count, chunk tokens, chunk keys in hex, cache salt), ``parent_ids`` =
[the plaintext id], and metadata naming the parent, its version and the model. Only full chunks
have keys (as in vLLM), so a trailing partial chunk is recomputed by whoever uses the cache.

It is idempotent: promoting again returns the same activation cube, computing nothing, while
its chunks are all stored. Chunks that were evicted meanwhile are computed again (from the
ones still stored, when a prefix survived) and the same cube is returned. A plaintext whose
text changed since gets its activation cube updated to the new keys.

Demotion (``to=plaintext``, given the activation cube or its plaintext parent) drops the
chunks from every level (keeping those another active activation cube of the tenant still
lists: chunks are shared by identical prefixes) and archives the activation cube.

Neither direction, nor any eviction of chunks, changes or deletes the plaintext cube: it is
the source of truth, and an activation cube can always be rebuilt from it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from memos.cube import ActivationPayload, Kind, MemCube, Source, State, check_id, utcnow
from memos.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from memos.events import ChangeEvent, ChangeType, EventHub
from memos.ids import new_id
from memos.tiers.activation.chunk import encode
from memos.tiers.activation.tier import ActivationTier, Caller
from memos.tiers.plaintext.store import CubeFilter, PlaintextStore

META_PARENT = "memos.parent"
META_PARENT_VERSION = "memos.parent_version"
META_MODEL = "memos.model"
META_FINGERPRINT = "memos.fingerprint"
WRITER = "memos-migrate"
ENGINES = ("", "hf")
_LOCK_STRIPES = 64


@dataclass(frozen=True, slots=True)
class Migration:
    """What a migration did. ``cube`` is the activation cube (promotion) or the plaintext
    (demotion)."""

    cube: MemCube
    created: bool = False  # a new activation cube was written
    prefilled_chunks: int = 0  # chunks computed and stored by this call
    reused_chunks: int = 0  # chunks that were stored already
    dropped_chunks: int = 0  # (chunk, level) copies removed by a demotion
    archived: tuple[MemCube, ...] = ()


class Migrator:
    def __init__(self, plaintext: PlaintextStore, tier: ActivationTier, events: EventHub) -> None:
        self._plaintext = plaintext
        self._tier = tier
        self._events = events
        # Striped: migrations of one cube serialise, of different cubes mostly do not.
        self._locks = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))

    def migrate(self, caller: Caller, cube_id: str, to: Kind, *, engine: str = "") -> Migration:
        caller.require("write")
        check_id(cube_id)
        if engine not in ENGINES:
            raise InvalidArgument(
                f"engine {engine!r} is not available: this daemon migrates with its own "
                "Hugging Face engine ('hf', the default)"
            )
        if to == Kind.ACTIVATION:
            return self.promote(caller, cube_id)
        if to == Kind.PLAINTEXT:
            return self.demote(caller, cube_id)
        raise InvalidArgument(f"cannot migrate to {to}: choose activation or plaintext")

    # -- promotion ---------------------------------------------------------------------------

    def promote(self, caller: Caller, cube_id: str) -> Migration:
        caller.require("write")
        tenant = caller.tenant
        cube = self._visible(tenant, cube_id)
        if cube.kind == Kind.ACTIVATION:
            cube = self._visible(tenant, _parent_of(cube))
        if cube.kind != Kind.PLAINTEXT:
            raise FailedPrecondition(
                f"cube {cube_id} is a {cube.kind} cube: only plaintext cubes migrate to activation"
            )
        if cube.state != State.ACTIVE:
            raise FailedPrecondition(f"cube {cube.id} is {cube.state}: only active cubes migrate")
        engine = self._tier.engine()
        layout = engine.layout
        salt = self._tier.cache_salt(tenant)
        namespace = self._tier.namespace(tenant)
        with self._lock(tenant, cube.id):
            tokens = engine.tokenize(cube.text)
            keys = engine.keys(tokens, cache_salt=salt)
            if not keys:
                raise FailedPrecondition(
                    f"cube {cube.id} is {len(tokens)} tokens long, shorter than one chunk "
                    f"({layout.chunk_tokens} tokens, activation.chunk_tokens): a KV cache "
                    "is stored in whole chunks only, and this one would hold none"
                )
            key_hex = tuple(key.hex() for key in keys)
            fingerprint = layout.fingerprint.hex()
            existing = self._activation_cubes(tenant, cube.id, fingerprint)
            current = next((c for c in existing if _keys_of(c) == key_hex), None)
            have = self._tier.store.lookup(keys, namespace=namespace)
            prefilled = 0
            if have < len(keys):
                prefilled = self._prefill(tokens, keys, have, namespace)
                held = self._tier.store.lookup(keys, namespace=namespace)
                if held < len(keys):
                    # Accepted, then evicted by this cube's own later chunks (or a burst of
                    # other writes): a cube whose chunks are gone would be a broken promise.
                    raise ResourceExhausted(
                        f"the activation levels hold {held} of cube {cube.id}'s {len(keys)} "
                        f"chunks ({len(keys) * layout.chunk_bytes} bytes of KV) right after "
                        "storing them: raise activation.ram_budget_bytes or "
                        "disk_budget_bytes, or add Redis"
                    )
            if current is not None:
                return Migration(current, prefilled_chunks=prefilled, reused_chunks=have)
            payload = ActivationPayload(
                model_fingerprint=fingerprint,
                token_count=len(tokens),
                chunk_tokens=layout.chunk_tokens,
                chunk_keys=key_hex,
                cache_salt=salt,
            )
            metadata = {
                META_PARENT: cube.id,
                META_PARENT_VERSION: str(cube.version),
                META_MODEL: layout.model_id,
                META_FINGERPRINT: fingerprint,
            }
            if existing:
                # The plaintext changed since: the same activation cube now holds the new keys.
                stale = existing[0]
                updated = self._replace_payload(stale, payload, metadata)
                archived = tuple(self._archive(c) for c in existing[1:])
                self._drop_unreferenced(tenant, existing, keep=set(key_hex))
                return Migration(
                    updated, prefilled_chunks=prefilled, reused_chunks=have, archived=archived
                )
            now = utcnow()
            record = MemCube(
                id=new_id(),
                tenant=tenant,
                namespace=cube.namespace,
                kind=Kind.ACTIVATION,
                state=State.ACTIVE,
                version=1,
                parent_ids=(cube.id,),
                source=Source(writer=WRITER),
                tags=cube.tags,
                created_at=now,
                updated_at=now,
                expires_at=cube.expires_at,
                pinned=cube.pinned,
                priority=cube.priority,
                metadata=metadata,
                activation=payload,
            )
            (stored,) = self._plaintext.put([record])
            self._events.publish(ChangeEvent(ChangeType.PUT, stored, now))
            return Migration(stored, created=True, prefilled_chunks=prefilled, reused_chunks=have)

    def _prefill(
        self, tokens: Sequence[int], keys: Sequence[bytes], have: int, namespace: bytes
    ) -> int:
        """Compute and store chunks ``have..``, restarting from the stored prefix."""
        engine = self._tier.engine()
        layout = engine.layout
        store = self._tier.store
        # Only whole chunks are stored: the tokens after the last one are not worth computing.
        covered = list(tokens[: len(keys) * layout.chunk_tokens])
        with self._tier.prefill_lock:
            prefix = store.fetch(keys[:have], layout, namespace=namespace) if have else []
            cache = engine.rebuild(prefix) if prefix else None
            step = engine.feed(covered, cache)
            tensors = engine.cut(step.cache, len(keys), first=len(prefix))
        items = [
            (key, encode(key, layout, kv))
            for key, kv in zip(keys[len(prefix) :], tensors, strict=True)
        ]
        accepted = store.put_many(items, namespace=namespace)
        refused = sum(1 for n in accepted if not n)
        if refused:
            raise ResourceExhausted(
                f"{refused} of {len(items)} chunks were accepted by no activation level "
                "(RAM and disk full of pinned chunks or over budget, Redis unreachable): "
                "raise the activation budgets, or retry once leases expire"
            )
        return len(items)

    # -- demotion ----------------------------------------------------------------------------

    def demote(self, caller: Caller, cube_id: str) -> Migration:
        caller.require("write")
        tenant = caller.tenant
        cube = self._plaintext.get(tenant, cube_id)
        if cube is None:
            raise NotFound(f"no cube {cube_id} for tenant {tenant!r}")
        # A deleted plaintext still demotes: the KV derived from it must go with it.
        if cube.kind == Kind.ACTIVATION:
            parent_id = _parent_of(cube)
            targets = [cube] if cube.state == State.ACTIVE else []
        elif cube.kind == Kind.PLAINTEXT:
            parent_id = cube.id
            targets = self._activation_cubes(tenant, cube.id, None)
        else:
            raise FailedPrecondition(
                f"cube {cube_id} is a {cube.kind} cube: only activation cubes (or the "
                "plaintext cubes they came from) demote to plaintext"
            )
        with self._lock(tenant, parent_id):
            dropped = self._drop_unreferenced(tenant, targets, keep=set())
            archived = tuple(self._archive(c) for c in targets)
        parent = self._plaintext.get(tenant, parent_id)
        result = parent if parent is not None else (archived[0] if archived else cube)
        return Migration(result, dropped_chunks=dropped, archived=archived)

    def _drop_unreferenced(self, tenant: str, cubes: Sequence[MemCube], keep: set[str]) -> int:
        """Drop the chunks of ``cubes`` that no other active activation cube lists."""
        leaving = {c.id for c in cubes}
        wanted = {k for c in cubes for k in _keys_of(c)} - keep
        if not wanted:
            return 0
        for other in self._all_activation_cubes(tenant):
            if other.id not in leaving:
                wanted -= set(_keys_of(other))
        keys = [bytes.fromhex(k) for k in sorted(wanted)]
        return self._tier.store.drop(keys, namespace=self._tier.namespace(tenant))

    def _archive(self, cube: MemCube) -> MemCube:
        now = utcnow()

        def change(latest: MemCube) -> MemCube:
            if latest.state != State.ACTIVE:
                return latest
            return latest.model_copy(
                update={"version": latest.version + 1, "updated_at": now, "state": State.ARCHIVED}
            )

        archived = self._plaintext.update(cube.tenant, cube.id, change)
        self._events.publish(ChangeEvent(ChangeType.ARCHIVE, archived, now))
        return archived

    def _replace_payload(
        self, cube: MemCube, payload: ActivationPayload, metadata: dict[str, str]
    ) -> MemCube:
        now = utcnow()

        def change(latest: MemCube) -> MemCube:
            return MemCube.model_validate(
                {
                    **latest.model_dump(),
                    "version": latest.version + 1,
                    "updated_at": now,
                    "activation": payload,
                    "metadata": {**latest.metadata, **metadata},
                }
            )

        updated = self._plaintext.update(cube.tenant, cube.id, change)
        self._events.publish(ChangeEvent(ChangeType.UPDATE, updated, now))
        return updated

    # -- records -----------------------------------------------------------------------------

    def _visible(self, tenant: str, cube_id: str) -> MemCube:
        cube = self._plaintext.get(tenant, cube_id)
        if cube is None:
            raise NotFound(f"no cube {cube_id} for tenant {tenant!r}")
        if cube.state == State.TOMBSTONE:
            raise NotFound(f"cube {cube_id} was deleted (version {cube.version} is a tombstone)")
        if cube.is_expired():
            raise NotFound(f"cube {cube_id} expired")
        return cube

    def _activation_cubes(
        self, tenant: str, parent_id: str, fingerprint: str | None
    ) -> list[MemCube]:
        """The active activation cubes made from ``parent_id`` (by one model, if given)."""
        metadata = {META_PARENT: parent_id}
        if fingerprint is not None:
            metadata[META_FINGERPRINT] = fingerprint
        return list(self._pages(tenant, CubeFilter(kind=Kind.ACTIVATION, metadata=metadata)))

    def _all_activation_cubes(self, tenant: str) -> Iterator[MemCube]:
        return self._pages(tenant, CubeFilter(kind=Kind.ACTIVATION, include_expired=True))

    def _pages(self, tenant: str, flt: CubeFilter) -> Iterator[MemCube]:
        token: str | None = None
        while True:
            cubes, token = self._plaintext.list(tenant, flt, page_size=500, page_token=token)
            yield from cubes
            if not token:
                return

    def _lock(self, tenant: str, cube_id: str) -> threading.Lock:
        return self._locks[hash((tenant, cube_id)) % _LOCK_STRIPES]


def _parent_of(cube: MemCube) -> str:
    if not cube.parent_ids:
        raise FailedPrecondition(f"activation cube {cube.id} names no plaintext parent")
    return cube.parent_ids[0]


def _keys_of(cube: MemCube) -> tuple[str, ...]:
    return cube.activation.chunk_keys if cube.activation is not None else ()
