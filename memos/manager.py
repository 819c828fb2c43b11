"""The tier manager: every managed cache is paging with a capacity, decided by ``scheduler``.

The cache managed here is the *activated set*: the plaintext cubes that hold a precomputed
KV cache (an activation cube). Every Get and every Search hit is a page request for the cube,
with its size and miss cost in tokens (what a prefill of its text costs); the bit comes from
the online learned predictor, or from the client's hint when one is sent ("will need again
soon" is a 0, "done with this" a 1). The policy (``robust-mark0`` by default: Mark0 on the
bits, falling back to LRU whenever the bits do worse) decides which cubes belong in the set.

The policy runs on metadata only. The ``migrate`` job (``place``) then makes the tiers match
it: it promotes resident cubes that hold no KV yet, within a prefill budget per run, and
demotes the cubes the policy evicted. A cube that was promoted by hand and never requested
since is left alone: the manager only undoes what it can explain.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from memos.config import ManagerSettings
from memos.cube import Kind, MemCube, State, utcnow
from memos.errors import FailedPrecondition, NotFound, ResourceExhausted
from memos.metrics import (
    CACHE_EVICTIONS,
    CACHE_REQUESTS,
    MIGRATIONS,
    PREDICTOR_ERROR_RATE,
    PREDICTOR_LABELS,
    PREFILL_TOKENS,
)
from memos.tiers.plaintext.store import CubeFilter
from scheduler import BitPredictor, LearnedConfig, Policy, make_policy
from scheduler.registry import policy_info

if TYPE_CHECKING:
    from memos.coretrieval import CoRetrieval
    from memos.kernel import MemoryOS
    from memos.tiers.activation.tier import Caller
    from memos.tiers.parameter.slots import AdapterSlots

log = logging.getLogger(__name__)

ACTIVATED = "activated"
SLOTS = "lora-slots"
DEFAULT_POLICY = "robust-mark0"
JOB_WRITER = "memos-jobs"

Key = tuple[str, str]  # (tenant, plaintext cube id)


class Hint(StrEnum):
    """What a client may say about the memory it reads."""

    REUSE = "reuse"  # will need it again soon: bit 0, keep
    DONE = "done"  # done with it: bit 1, safe to evict

    @property
    def bit(self) -> int:
        return 1 if self is Hint.DONE else 0


@dataclass(frozen=True, slots=True)
class JobPrincipal:
    """The jobs act on one tenant's cubes with write rights there (fits ``Caller``)."""

    tenant: str
    name: str = JOB_WRITER

    def require(self, scope: str) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Access:
    at: datetime
    op: str
    bit: int
    source: str  # "predictor" or "hint"
    hit: bool


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One read of a plaintext cube (or of the activation cube made from it)."""

    tenant: str
    cube_id: str
    size: int  # tokens
    expires_at: datetime | None
    op: str  # "get", "search", "kv-lookup", ...
    hint: Hint | None = None


@dataclass(slots=True)
class Page:
    """What the manager knows about one plaintext cube."""

    tenant: str
    cube_id: str
    size: int  # tokens (estimated from the text; fixed at the first request)
    expires_at: datetime | None
    count: int = 0
    last: datetime | None = None
    bit: int | None = None
    source: str = ""
    resident: bool = False
    #: Why it left the set (or cannot join it); empty while resident.
    reason: str = ""
    recent: deque[Access] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class Decision:
    """``explain``'s answer about one cube, as far as the manager goes."""

    policy: str
    resident: bool
    decision: str
    page: Page | None


@dataclass
class _Cache:
    """One managed cache: its policy, its predictor, and the residents the policy keeps."""

    name: str
    policy_name: str
    policy: Policy
    predictor: BitPredictor
    config: LearnedConfig
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen_labels: tuple[int, int, int] = (0, 0, 0)  # labelled, false evicts, false keeps
    requests: int = 0
    hits: int = 0
    evictions: int = 0


@dataclass(frozen=True, slots=True)
class CacheStats:
    """One managed cache at a glance (``memosctl top``, the benchmark)."""

    name: str
    policy: str
    budget: int  # tokens for the activated set
    used: int
    residents: int
    known: int  # pages the manager has seen since start
    requests: int
    hits: int
    evictions: int
    labelled: int  # matured predictor labels
    false_evicts: int
    false_keeps: int
    threshold: float
    promoted: int = 0  # by the migrate job, since start
    demoted: int = 0
    prefilled_tokens: int = 0

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class _Logged:
    seq: int
    key: Key
    size: int
    hint: int | None


class TierManager:
    def __init__(self, settings: ManagerSettings, *, chunk_tokens: int = 256) -> None:
        self.settings = settings
        self.chunk_tokens = chunk_tokens
        budget = settings.activated_budget_tokens
        name = settings.policies.get(ACTIVATED, DEFAULT_POLICY)
        config = LearnedConfig(
            kind="discard",
            k=settings.activated_items,
            budget=budget,
            fk_cost=settings.fk_over_fe,
        )
        self.activated = _Cache(
            ACTIVATED, name, make_policy(name, budget), BitPredictor(config), config
        )
        self._pages: dict[Key, Page] = {}
        self._tenants: set[str] = set()
        self._log: deque[_Logged] = deque(maxlen=settings.log_size)
        self._seq = 0
        #: What ``place`` did since start: promotions, demotions, tokens prefilled.
        self.placed = [0, 0, 0]
        #: Fed each Search's top-k (per tenant): the co-retrieval tracker, when one runs.
        self.on_search: Callable[[str, list[str]], None] | None = None
        self.coretrieval: CoRetrieval | None = None
        #: Called after each local page request (outside the lock): the cluster's access log.
        self.on_access: Callable[[PageRequest], None] | None = None

    # ------------------------------------------------------------------ requests

    def saw_tenant(self, tenant: str) -> None:
        self._tenants.add(tenant)

    def tenants(self) -> list[str]:
        return sorted(self._tenants)

    def record(
        self, tenant: str, cubes: Iterable[MemCube], op: str, hint: Hint | None = None
    ) -> None:
        """One page request per cube read (an activation cube counts for its plaintext)."""
        read: list[str] = []
        for cube in cubes:
            key = _key_of(cube)
            if key is None:
                continue
            expires = cube.expires_at if cube.kind == Kind.PLAINTEXT else None
            self.request_page(
                PageRequest(key[0], key[1], self._tokens(cube), expires, op, hint),
            )
            read.append(key[1])
        if op == "search" and len(read) > 1 and self.on_search is not None:
            self.on_search(tenant, read)

    def request_page(self, req: PageRequest, *, local: bool = True) -> None:
        """One page request for a plaintext cube, from this replica or (``local=False``) another.

        Local requests are handed to ``on_access`` (the cluster's shared access log publishes
        them) after they count here; remote ones only count, so nothing echoes.
        """
        self._tenants.add(req.tenant)
        now = utcnow()
        cache = self.activated
        key = (req.tenant, req.cube_id)
        with cache.lock:
            page = self._pages.get(key)
            if page is None:
                page = Page(
                    req.tenant,
                    req.cube_id,
                    req.size,
                    req.expires_at,
                    recent=deque(maxlen=self.settings.recent_per_cube),
                )
                self._pages[key] = page
            page.count += 1
            page.last = now
            if req.expires_at is not None:
                page.expires_at = req.expires_at
            if page.reason.startswith("unpromotable"):
                page.recent.append(Access(now, req.op, 1, "", False))
            else:
                hint_bit = None if req.hint is None else req.hint.bit
                self._seq += 1
                self._log.append(_Logged(self._seq, key, page.size, hint_bit))
                bit, hit = self._request(cache, key, page.size, req.tenant, hint_bit)
                page.bit = bit
                page.source = "predictor" if req.hint is None else "hint"
                page.recent.append(Access(now, req.op, bit, page.source, hit))
            self._count_labels(cache)
        if local and self.on_access is not None:
            self.on_access(req)

    def _request(
        self, cache: _Cache, key: Key, size: int, tenant: str, hint: int | None
    ) -> tuple[int, bool]:
        # The miss cost is the prefill of the cube's tokens: proportional to its size.
        bit = cache.predictor.bit(key, size=size, cost=float(size), tenant=tenant, hint=hint)
        outcome = cache.policy.request(key, size, float(size), bit)
        cache.requests += 1
        cache.hits += outcome.hit
        cache.evictions += len(outcome.evicted)
        CACHE_REQUESTS.labels(cache.name, "set", "hit" if outcome.hit else "miss").inc()
        page = self._pages[key]
        page.resident = outcome.admitted
        page.reason = "" if outcome.admitted else "larger than the activated set's budget"
        for gone in outcome.evicted:
            evicted = self._pages.get(gone)  # type: ignore[call-overload]
            if evicted is not None:
                evicted.resident = False
                evicted.reason = (
                    f"evicted by {cache.policy_name} (its latest bit was {evicted.bit})"
                )
            CACHE_EVICTIONS.labels(cache.name, "policy").inc()
        return bit, outcome.hit

    def _tokens(self, cube: MemCube) -> int:
        if cube.activation is not None:
            return max(1, cube.activation.token_count)
        text = cube.plaintext.text if cube.plaintext is not None else ""
        return max(1, int(len(text.encode()) / self.settings.bytes_per_token))

    def _count_labels(self, cache: _Cache) -> None:
        p = cache.predictor
        labelled, fe, fk = p.labelled, p.errors[0], p.errors[1]
        was_l, was_fe, was_fk = cache.seen_labels
        if labelled == was_l:
            return
        d_fe, d_fk = fe - was_fe, fk - was_fk
        PREDICTOR_LABELS.labels(cache.name, "false_evict").inc(max(0, d_fe))
        PREDICTOR_LABELS.labels(cache.name, "false_keep").inc(max(0, d_fk))
        PREDICTOR_LABELS.labels(cache.name, "correct").inc(max(0, labelled - was_l - d_fe - d_fk))
        PREDICTOR_ERROR_RATE.labels(cache.name, "false_evict").set(fe / labelled)
        PREDICTOR_ERROR_RATE.labels(cache.name, "false_keep").set(fk / labelled)
        cache.seen_labels = (labelled, fe, fk)

    # ------------------------------------------------------------------ decisions

    def stats(self) -> CacheStats:
        cache = self.activated
        with cache.lock:
            p = cache.predictor
            return CacheStats(
                name=cache.name,
                policy=cache.policy_name,
                budget=cache.policy.budget,
                used=cache.policy.used,
                residents=len(cache.policy),
                known=len(self._pages),
                requests=cache.requests,
                hits=cache.hits,
                evictions=cache.evictions,
                labelled=p.labelled,
                false_evicts=p.errors[0],
                false_keeps=p.errors[1],
                threshold=p.threshold,
                promoted=self.placed[0],
                demoted=self.placed[1],
                prefilled_tokens=self.placed[2],
            )

    @property
    def uses_bits(self) -> bool:
        return policy_info(self.activated.policy_name).bit_kind != "none"

    def wanted(self, tenant: str) -> list[Page]:
        """The tenant's cubes worth a KV cache, most recent first: those the policy keeps,
        less those whose latest bit says they go before their next use (prefilling a cube
        that is evicted unread is pure cost), where that bit can be trusted: a client's
        hint, or a predictor that has matured a block of labels with few false evicts."""
        cache = self.activated
        with cache.lock:
            trust_model = self.uses_bits and _trusted(cache.predictor)
            pages = [
                p
                for p in self._pages.values()
                if p.tenant == tenant
                and p.resident
                and not (p.bit == 1 and self.uses_bits and (p.source == "hint" or trust_model))
            ]
        return sorted(pages, key=lambda p: p.last or utcnow(), reverse=True)

    def unwanted(self, tenant: str) -> set[str]:
        """The tenant's cubes the manager evicted (or cannot place): their KV should go."""
        with self.activated.lock:
            return {
                p.cube_id
                for p in self._pages.values()
                if p.tenant == tenant and not p.resident and p.count
            }

    def forget(self, tenant: str, cube_id: str, reason: str) -> None:
        """The cube left the plaintext tier's active set (fused, expired, deleted)."""
        cache = self.activated
        with cache.lock:
            page = self._pages.pop((tenant, cube_id), None)
            if page is not None and cache.policy.remove((tenant, cube_id)):
                CACHE_EVICTIONS.labels(cache.name, reason).inc()

    def unplaceable(self, tenant: str, cube_id: str, why: str) -> None:
        """The cube cannot hold a KV cache: stop spending the set's budget on it."""
        cache = self.activated
        with cache.lock:
            page = self._pages.get((tenant, cube_id))
            if page is None:
                return
            page.resident = False
            page.reason = f"unpromotable: {why}"
            if cache.policy.remove((tenant, cube_id)):
                CACHE_EVICTIONS.labels(cache.name, "unpromotable").inc()

    def drop_expired(self, now: datetime) -> int:
        with self.activated.lock:
            gone = [k for k, p in self._pages.items() if p.expires_at and p.expires_at <= now]
        for tenant, cube_id in gone:
            self.forget(tenant, cube_id, "expired")
        return len(gone)

    def decide(self, tenant: str, cube_id: str) -> Decision:
        cache = self.activated
        with cache.lock:
            page = self._pages.get((tenant, cube_id))
            resident = (tenant, cube_id) in cache.policy
        if page is None:
            what = "no reads since this daemon started: not a candidate for the activated set"
        elif resident:
            what = (
                f"in the activated set ({cache.policy_name}): it keeps (or the next migrate "
                "run gives it) a precomputed KV cache"
            )
        else:
            what = page.reason or "not in the activated set"
        return Decision(cache.policy_name, resident, what, page)

    # ------------------------------------------------------------------ retraining

    def retrain(self) -> str:
        """Refit the predictor on the logged accesses (two passes), then swap it in.

        The online model already learns from each label as it matures; this pass also lets
        the threshold replay start from the whole log, and matures what a fresh window can.
        """
        cache = self.activated
        with cache.lock:
            logged = list(self._log)
        if not logged:
            return "no accesses logged"
        fresh = BitPredictor(cache.config)
        for _ in range(2):
            fresh.new_trace()
            for e in logged:
                fresh.bit(e.key, size=e.size, cost=float(e.size), tenant=e.key[0], hint=e.hint)
        with cache.lock:
            for e in self._log:
                if e.seq > logged[-1].seq:  # arrived during the refit
                    fresh.bit(e.key, size=e.size, cost=float(e.size), tenant=e.key[0], hint=e.hint)
            if fresh.labelled == 0:
                return f"{len(logged)} accesses: too few for a label to mature; model kept"
            cache.predictor = fresh
            cache.seen_labels = (0, 0, 0)
            fe, fk = fresh.errors
            n = fresh.labelled
            PREDICTOR_ERROR_RATE.labels(cache.name, "false_evict").set(fe / n)
            PREDICTOR_ERROR_RATE.labels(cache.name, "false_keep").set(fk / n)
        return (
            f"refit on {len(logged)} accesses, {n} labels: false evicts {fe / n:.3f}, "
            f"false keeps {fk / n:.3f}, threshold {fresh.threshold:.3f}"
        )


#: A predictor's discard bits decide promotions once it has this many matured labels and
#: at most this share of them were false evicts (a needed cube called safe to drop).
_TRUST_LABELS_PER_K = 8
_TRUST_FALSE_EVICTS = 0.1


def _trusted(p: BitPredictor) -> bool:
    if p.labelled < _TRUST_LABELS_PER_K * p.config.k:
        return False
    return p.errors[0] / p.labelled <= _TRUST_FALSE_EVICTS


def _key_of(cube: MemCube) -> Key | None:
    if cube.state != State.ACTIVE:
        return None
    if cube.kind == Kind.PLAINTEXT:
        return (cube.tenant, cube.id)
    # A fused activation cube (several parents, memos.coretrieval) is no one parent's page.
    if cube.kind == Kind.ACTIVATION and len(cube.parent_ids) == 1:
        return (cube.tenant, cube.parent_ids[0])
    return None


# ---------------------------------------------------------------------- the migrate job


@dataclass(frozen=True, slots=True)
class Placement:
    promoted: int = 0
    demoted: int = 0
    prefilled_tokens: int = 0
    skipped: int = 0
    stopped: str = ""

    def __str__(self) -> str:
        s = (
            f"promoted {self.promoted}, demoted {self.demoted}, prefilled "
            f"{self.prefilled_tokens} tokens, skipped {self.skipped}"
        )
        return f"{s}; stopped: {self.stopped}" if self.stopped else s


def job_tenants(kernel: MemoryOS) -> list[str]:
    """The tenants a job covers: those seen since start and every tenant in the table."""
    seen = kernel.manager.tenants() if kernel.manager is not None else []
    return sorted({*seen, *kernel.plaintext.tenants()})


def activation_parents(kernel: MemoryOS, tenant: str) -> dict[str, MemCube]:
    """The tenant's active activation cubes, by the plaintext cube they came from."""
    out: dict[str, MemCube] = {}
    token: str | None = None
    flt = CubeFilter(kind=Kind.ACTIVATION, include_expired=True)
    while True:
        cubes, token = kernel.plaintext.list(tenant, flt, page_size=500, page_token=token)
        for c in cubes:
            if len(c.parent_ids) == 1:  # fused cubes (several parents) are no one's KV
                out[c.parent_ids[0]] = c
        if not token:
            return out


def place(kernel: MemoryOS, manager: TierManager, budget_tokens: int) -> Placement:
    """Make the activation tier match the policy: demote the evicted, promote the kept."""
    migrator = kernel.migrator
    if migrator is None:
        return Placement(stopped="no activation tier")
    promoted = demoted = prefilled = skipped = 0
    stopped = ""
    for tenant in manager.tenants():
        who = JobPrincipal(tenant)
        actual = activation_parents(kernel, tenant)
        for parent_id in sorted(manager.unwanted(tenant) & set(actual)):
            if actual[parent_id].pinned:
                continue
            try:
                migrator.demote(who, parent_id)
                demoted += 1
                MIGRATIONS.labels("demote", "ok").inc()
            except Exception:
                log.exception("demotion failed", extra={"id": parent_id})
                MIGRATIONS.labels("demote", "error").inc()
        for page in manager.wanted(tenant):
            if page.cube_id in actual:
                continue
            if prefilled + page.size > budget_tokens and prefilled:
                stopped = f"prefill budget of {budget_tokens} tokens spent"
                break
            try:
                done = migrator.promote(who, page.cube_id)
            except NotFound:
                manager.forget(tenant, page.cube_id, "gone")
                skipped += 1
                continue
            except FailedPrecondition as exc:
                manager.unplaceable(tenant, page.cube_id, str(exc))
                skipped += 1
                continue
            except ResourceExhausted as exc:
                stopped = str(exc)
                MIGRATIONS.labels("promote", "error").inc()
                break
            promoted += 1
            tokens = done.prefilled_chunks * manager.chunk_tokens
            prefilled += tokens
            PREFILL_TOKENS.inc(tokens)
            MIGRATIONS.labels("promote", "ok").inc()
        if stopped:
            break
    with manager.activated.lock:
        manager.placed[0] += promoted
        manager.placed[1] += demoted
        manager.placed[2] += prefilled
    return Placement(promoted, demoted, prefilled, skipped, stopped)


# ---------------------------------------------------------------------- explain


@dataclass(frozen=True, slots=True)
class Explanation:
    cube: MemCube
    tier: str
    activation_ids: tuple[str, ...]
    cache: str
    policy: str
    resident: bool
    decision: str
    accesses: int
    last_access: datetime | None
    latest_bit: int | None
    bit_source: str
    size_tokens: int
    recent: tuple[Access, ...]


def explain(kernel: MemoryOS, who: Caller, cube_id: str) -> Explanation:
    """Why a cube is where it is: its tier, its accesses, its latest bit, the decision."""
    who.require("read")
    cube = kernel.plaintext.get(who.tenant, cube_id)
    if cube is None:
        raise NotFound(f"no cube {cube_id} for tenant {who.tenant!r}")
    target = cube.id
    if cube.kind == Kind.ACTIVATION and cube.parent_ids:
        target = cube.parent_ids[0]
    kv = activation_parents(kernel, who.tenant).get(target) if kernel.migrator is not None else None
    if cube.state != State.ACTIVE:
        tier = cube.state.value
    elif cube.kind == Kind.PLAINTEXT:
        tier = (
            "plaintext+activation" if kv is not None and kv.state == State.ACTIVE else "plaintext"
        )
    else:
        tier = cube.kind.value
    manager = kernel.manager
    cache_name = ACTIVATED if manager is not None else ""
    if cube.kind == Kind.PARAMETER and kernel.parameter is not None:
        # An adapter's cache is the engine's LoRA slots: AdapterService.Request pages it.
        decision = _slot_decision(kernel.parameter.slots, cube.id)
        cache_name = SLOTS
    elif manager is None:
        decision = Decision("", False, "no tier manager runs in this process", None)
    else:
        decision = manager.decide(who.tenant, target)
    page = decision.page
    if cube.state == State.ARCHIVED:
        note = "archived"
        if cube.source.writer == "memos-migrate":
            note = "archived: its KV cache was demoted"
        what = note
    elif cube.state == State.TOMBSTONE:
        what = "deleted: a tombstone until retention purges it"
    else:
        what = decision.decision
    return Explanation(
        cube=cube,
        tier=tier,
        activation_ids=(kv.id,) if kv is not None else (),
        cache=cache_name,
        policy=decision.policy,
        resident=decision.resident,
        decision=what,
        accesses=page.count if page else 0,
        last_access=page.last if page else None,
        latest_bit=page.bit if page else None,
        bit_source=page.source if page else "",
        size_tokens=page.size if page else 0,
        recent=tuple(page.recent) if page else (),
    )


def _slot_decision(slots: AdapterSlots, adapter_id: str) -> Decision:
    resident = adapter_id in slots
    st = slots.stats
    seen = f"the slots answered {st.requests} requests since start, {st.hits} of them hits"
    if resident:
        what = (
            f"loaded in one of the engine's {slots.k} LoRA slots ({slots.policy_name}): "
            f"a request for it is a hit; {seen}"
        )
    else:
        what = (
            f"not in the engine's {slots.k} LoRA slots ({slots.policy_name}): the next "
            f"request for it loads it, unloading what the policy evicts; {seen}"
        )
    return Decision(slots.policy_name, resident, what, None)
