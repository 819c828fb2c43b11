"""Migration between tiers: a plaintext memory promoted to a precomputed KV cache, and back.

Promotion (``to=activation``) tokenizes the plaintext cube's text with the daemon's engine,
prefills it, stores every full chunk under the tenant's namespace and the tenant's cache salt,
and records an activation cube: kind ``activation``, its ``ActivationPayload`` (model
fingerprint, token count, chunk tokens, chunk keys in hex, cache salt), ``parent_ids`` =
[the plaintext id], and metadata naming the parent, its version and the model. Only full chunks
have keys (as in vLLM), so a trailing partial chunk is recomputed by whoever uses the cache.

With ``engine="vllm"`` a vLLM OpenAI server prefills instead: the daemon sends it the text as
a prefill-only request (``max_tokens=1``, the tenant's cache salt) and that server's
``MemCubeKVConnector`` stores the blocks here, under its own token's tenant (which must be the
caller's) and its own layout fingerprint; the daemon waits until it holds every block the
engine reported, then records the activation cube with the engine's keys, block size and
served model. Requests reuse those blocks when they start with the same text and carry the
same cache salt.

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
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from memos.cube import ActivationPayload, Kind, MemCube, Source, State, check_id, utcnow
from memos.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
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
ENGINES = ("", "hf", "vllm")
#: How long a vLLM prefill may take (a long text on a CPU engine is slow).
VLLM_PREFILL_TIMEOUT_S = 600.0
#: How long the daemon waits for the engine's connector to store what it reported: its saves
#: are sent in the background, after the response.
VLLM_STORE_WAIT_S = 60.0
_LOCK_STRIPES = 64


@dataclass(frozen=True, slots=True)
class _Prefill:
    """What an engine made of a cube's text: its stored chunks' keys and the layout."""

    token_count: int
    keys: tuple[bytes, ...]
    fingerprint: str  # hex
    chunk_tokens: int
    model_id: str
    prefilled: int  # chunks computed and stored by this call
    reused: int  # chunks that were stored already


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
    def __init__(
        self,
        plaintext: PlaintextStore,
        tier: ActivationTier,
        events: EventHub,
        *,
        vllm_store_wait_s: float = VLLM_STORE_WAIT_S,
        vllm_hosts: Sequence[str] = ("127.0.0.1", "localhost", "::1"),
    ) -> None:
        self._plaintext = plaintext
        self._vllm_hosts = frozenset(h.lower() for h in vllm_hosts)
        self._tier = tier
        self._events = events
        self._vllm_store_wait_s = vllm_store_wait_s
        # Striped: migrations of one cube serialise, of different cubes mostly do not.
        self._locks = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))

    def migrate(
        self, caller: Caller, cube_id: str, to: Kind, *, engine: str = "", engine_url: str = ""
    ) -> Migration:
        caller.require("write")
        check_id(cube_id)
        if engine not in ENGINES:
            raise InvalidArgument(
                f"engine {engine!r} is not available: use 'hf' (the daemon's own Hugging Face "
                "model, the default) or 'vllm' (a vLLM server running MemCubeKVConnector "
                "against this daemon, at engine_url)"
            )
        if engine_url and engine != "vllm":
            raise InvalidArgument("engine_url is for engine 'vllm' only")
        if to == Kind.ACTIVATION:
            if engine == "vllm":
                url = _check_url(engine_url, self._vllm_hosts)
                return self.promote(caller, cube_id, vllm_url=url)
            return self.promote(caller, cube_id)
        if to == Kind.PLAINTEXT:
            return self.demote(caller, cube_id)
        raise InvalidArgument(f"cannot migrate to {to}: choose activation or plaintext")

    # -- promotion ---------------------------------------------------------------------------

    def promote(self, caller: Caller, cube_id: str, *, vllm_url: str = "") -> Migration:
        """Promote with the daemon's engine, or with the vLLM server at ``vllm_url``."""
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
        salt = self._tier.cache_salt(tenant)
        with self._lock(tenant, cube.id):
            if vllm_url:
                done = self._prefill_vllm(tenant, cube, vllm_url, salt)
            else:
                done = self._prefill_hf(tenant, cube)
            return self._record(tenant, cube, done, salt)

    def _prefill_hf(self, tenant: str, cube: MemCube) -> _Prefill:
        engine = self._tier.engine()
        layout = engine.layout
        salt = self._tier.cache_salt(tenant)
        namespace = self._tier.namespace(tenant)
        tokens = engine.tokenize(cube.text)
        keys = engine.keys(tokens, cache_salt=salt)
        if not keys:
            raise FailedPrecondition(
                f"cube {cube.id} is {len(tokens)} tokens long, shorter than one chunk "
                f"({layout.chunk_tokens} tokens, activation.chunk_tokens): a KV cache "
                "is stored in whole chunks only, and this one would hold none"
            )
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
        return _Prefill(
            token_count=len(tokens),
            keys=tuple(keys),
            fingerprint=layout.fingerprint.hex(),
            chunk_tokens=layout.chunk_tokens,
            model_id=layout.model_id,
            prefilled=prefilled,
            reused=have,
        )

    def _prefill_vllm(self, tenant: str, cube: MemCube, url: str, salt: str) -> _Prefill:
        # The daemon never needs vLLM: warmup speaks HTTP with the standard library.
        from memos.integrations.vllm.warmup import (
            EngineUnreachable,
            WarmupError,
            served_model,
            warm,
        )

        try:
            model = served_model(url)
            warmed = warm(url, model, cube.text, cache_salt=salt, timeout_s=VLLM_PREFILL_TIMEOUT_S)
        except EngineUnreachable as exc:
            raise Unavailable(f"{exc}: start the server or fix engine_url") from None
        except WarmupError as exc:
            raise FailedPrecondition(str(exc)) from None
        keys = warmed.keys
        if not keys:
            raise FailedPrecondition(
                f"cube {cube.id} is {warmed.prompt_tokens} tokens long for {model!r} at {url}, "
                f"shorter than one of its KV blocks ({warmed.block_size} tokens): a KV cache "
                "is stored in whole blocks only, and this one would hold none"
            )
        namespace = self._tier.namespace(tenant)
        deadline = time.monotonic() + self._vllm_store_wait_s
        while (held := self._tier.store.lookup(keys, namespace=namespace)) < len(keys):
            if time.monotonic() > deadline:
                raise FailedPrecondition(
                    f"vLLM at {url} prefilled cube {cube.id} ({len(keys)} blocks), but this "
                    f"daemon holds {held} of them for tenant {tenant!r} after "
                    f"{self._vllm_store_wait_s:g} s: its MemCubeKVConnector must point at this "
                    f"daemon with a token of tenant {tenant!r}, and have room to store "
                    "(memosctl kv stats)"
                )
            time.sleep(0.05)
        saved = min(warmed.saved_blocks, len(keys))
        return _Prefill(
            token_count=warmed.prompt_tokens,
            keys=tuple(keys),
            fingerprint=warmed.fingerprint.hex(),
            chunk_tokens=warmed.block_size,
            model_id=model,
            prefilled=saved,
            reused=len(keys) - saved,
        )

    def _record(self, tenant: str, cube: MemCube, done: _Prefill, salt: str) -> Migration:
        """The activation cube of ``cube`` holding ``done``'s keys: found, updated or new."""
        key_hex = tuple(key.hex() for key in done.keys)
        existing = self._activation_cubes(tenant, cube.id, done.fingerprint)
        current = next((c for c in existing if _keys_of(c) == key_hex), None)
        prefilled, have = done.prefilled, done.reused
        if current is not None:
            return Migration(current, prefilled_chunks=prefilled, reused_chunks=have)
        payload = ActivationPayload(
            model_fingerprint=done.fingerprint,
            token_count=done.token_count,
            chunk_tokens=done.chunk_tokens,
            chunk_keys=key_hex,
            cache_salt=salt,
        )
        metadata = {
            META_PARENT: cube.id,
            META_PARENT_VERSION: str(cube.version),
            META_MODEL: done.model_id,
            META_FINGERPRINT: done.fingerprint,
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
        return prefill(self._tier, tokens, keys, have, namespace)

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


def _check_url(url: str, hosts: frozenset[str]) -> str:
    """``url`` if it is an http(s) base URL on an allowed host; else INVALID_ARGUMENT or
    PERMISSION_DENIED saying so."""
    if not url:
        raise InvalidArgument(
            "engine 'vllm' needs engine_url, the vLLM OpenAI server's base URL (http://host:port)"
        )
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(
            f"engine_url {url!r} is not an http(s) URL: give the vLLM OpenAI server's base "
            "URL, e.g. http://127.0.0.1:8000"
        )
    if parts.hostname.lower() not in hosts:
        raise PermissionDenied(
            f"engine_url host {parts.hostname!r} is not in this daemon's engine.vllm_hosts "
            f"({', '.join(sorted(hosts))}): an operator adds the vLLM server's host there"
        )
    return url


def _parent_of(cube: MemCube) -> str:
    if not cube.parent_ids:
        raise FailedPrecondition(f"activation cube {cube.id} names no plaintext parent")
    return cube.parent_ids[0]


def _keys_of(cube: MemCube) -> tuple[str, ...]:
    return cube.activation.chunk_keys if cube.activation is not None else ()


def prefill(
    tier: ActivationTier, tokens: Sequence[int], keys: Sequence[bytes], have: int, namespace: bytes
) -> int:
    """Compute and store chunks ``have..`` of ``keys``, restarting from the stored prefix;
    the number of chunks stored."""
    engine = tier.engine()
    layout = engine.layout
    store = tier.store
    # Only whole chunks are stored: the tokens after the last one are not worth computing.
    covered = list(tokens[: len(keys) * layout.chunk_tokens])
    with tier.prefill_lock:
        prefix = store.fetch(keys[:have], layout, namespace=namespace) if have else []
        cache = engine.rebuild(prefix) if prefix else None
        step = engine.feed(covered, cache)
        tensors = engine.cut(step.cache, len(keys), first=len(prefix))
    items = [
        (key, encode(key, layout, kv)) for key, kv in zip(keys[len(prefix) :], tensors, strict=True)
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
