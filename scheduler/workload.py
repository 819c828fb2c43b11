"""A synthetic multi-tenant LLM-memory workload for the sized policies.

What it imitates: several tenants, each with a long-term memory of text items (Zipf
popularity), their embeddings, and chat sessions whose prompts reuse a chain of KV-cache
blocks. Three size classes, the KV blocks about 1000x a line of text:

| class | size | miss cost | what a miss means |
|---|---|---|---|
| ``text`` | ~1 KiB | 1 | re-read a memory from the store |
| ``embedding`` | 6 KiB | 5 | re-embed it |
| ``kv`` | ~1 MiB | 200 | recompute a prefill chunk |

- Sessions come in bursts: a session lives for a few turns; each turn re-reads its
  tenant's shared system-prompt KV blocks (prefix caching), then its own KV chain (one
  more block per turn), then a few Zipf-popular memories of its tenant.
- When a session ends its KV blocks are never requested again, and the serving stack
  knows it: the session's last turn carries a client hint (discard bit 1) on them.
- Periodic scans: every ``scan_every`` requests, a maintenance job reads a run of one
  tenant's text items once (a compaction / re-index pass), polluting recency.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a sized trace."""

    key: str
    size: int
    cost: float
    kind: str
    tenant: str
    #: A client hint in discard-bit convention (1 = "will not be needed"), or None.
    hint: int | None = None


@dataclass(slots=True)
class _Session:
    sid: int
    tenant: str
    turns: int
    done: int = 0


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    requests: int = 200_000
    tenants: int = 8
    memories_per_tenant: int = 5_000
    zipf_alpha: float = 0.9
    concurrent_sessions: int = 6
    system_prompt_blocks: int = 2
    turns: tuple[int, int] = (3, 12)
    memories_per_turn: int = 4
    embedding_reads: float = 0.5
    scan_every: int = 20_000
    scan_length: int = 2_000
    text_size: int = 1 * KIB
    embedding_size: int = 6 * KIB
    kv_size: int = 1 * MIB
    costs: tuple[float, float, float] = (1.0, 5.0, 200.0)
    seed: int = 0


def generate(config: WorkloadConfig | None = None) -> list[Request]:
    """The request sequence (deterministic for a given config)."""
    cfg = config or WorkloadConfig()
    rng = random.Random(cfg.seed)
    text_cost, emb_cost, kv_cost = cfg.costs
    cum = list(
        itertools.accumulate(
            1.0 / (r + 1) ** cfg.zipf_alpha for r in range(cfg.memories_per_tenant)
        )
    )
    total = cum[-1]
    # Text sizes vary a little per item (a line to a paragraph), fixed per item.
    text_sizes = [max(64, int(rng.lognormvariate(0.0, 0.5) * cfg.text_size)) for _ in range(997)]
    out: list[Request] = []
    session_ids = itertools.count()

    def new_session() -> _Session:
        return _Session(
            next(session_ids), f"t{rng.randrange(cfg.tenants)}", rng.randint(*cfg.turns)
        )

    sessions = [new_session() for _ in range(cfg.concurrent_sessions)]
    next_scan = cfg.scan_every
    while len(out) < cfg.requests:
        if len(out) >= next_scan:
            next_scan += cfg.scan_every
            tenant = f"t{rng.randrange(cfg.tenants)}"
            start = rng.randrange(cfg.memories_per_tenant)
            for j in range(cfg.scan_length):
                m = (start + j) % cfg.memories_per_tenant
                out.append(
                    Request(f"{tenant}/m{m}", text_sizes[m % 997], text_cost, "text", tenant)
                )
            continue
        s = rng.randrange(len(sessions))
        session = sessions[s]
        sid, tenant, done = session.sid, session.tenant, session.done
        last = done + 1 == session.turns
        for b in range(cfg.system_prompt_blocks):
            out.append(Request(f"{tenant}/sys/kv{b}", cfg.kv_size, kv_cost, "kv", tenant))
        for b in range(done + 1):
            out.append(
                Request(
                    f"{tenant}/s{sid}/kv{b}",
                    cfg.kv_size,
                    kv_cost,
                    "kv",
                    tenant,
                    1 if last else None,
                )
            )
        for _ in range(cfg.memories_per_turn):
            m = bisect.bisect_left(cum, rng.random() * total)
            m = min(m, cfg.memories_per_tenant - 1)
            out.append(Request(f"{tenant}/m{m}", text_sizes[m % 997], text_cost, "text", tenant))
            if rng.random() < cfg.embedding_reads:
                out.append(
                    Request(f"{tenant}/e{m}", cfg.embedding_size, emb_cost, "embedding", tenant)
                )
        if last:
            sessions[s] = new_session()
        else:
            session.done = done + 1
    return out[: cfg.requests]
