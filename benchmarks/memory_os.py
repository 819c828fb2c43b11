"""The memory OS loop: a multi-tenant session workload through gRPC, three placement policies.

``python -m benchmarks.memory_os [--quick] [--json] [--seed N] [--sessions N]``

Each configuration gets its own ``memosd`` process (small budgets, the tiny Llama built into a
temp dir as its engine) and the same workload, replayed through the gRPC API:

- per tenant, topics of shared memories (knowledge several sessions read), chosen by Zipf;
- sessions, several at once, interleaved across tenants: a session writes a note of its own
  (its context so far), then in each turn searches its topic (top-k within the topic's tag)
  and reads its note again; on its last turn the client says it is done with the note
  (``hint="done"``: a serving stack knows when a conversation ends);
- one-off lookups: now and then a turn also reads a random memory from a large cold pool,
  which is almost never read again.

After every read the "engine" (this process, with the daemon's tokenizer, key chain and the
tenant's cache salt) looks the memory's KV chunks up (ActivationService.Lookup): the tokens
covered by stored chunks are reused, the rest must be prefilled. The daemon's ``migrate`` job
(run every ``--migrate-every`` reads, so runs are deterministic) promotes what the activated
set's policy keeps, within its prefill budget, and demotes what it evicted.

Configurations: the manager's learned one-bit policy (``robust-mark0``, the default), LRU
everywhere (``manager.policies.activated``, ``activation.policy`` and ``parameter.policy`` set
to ``lru``), and no promotion (the migrate job never runs). Prefill tokens count both the
recomputation at reads and the daemon's own prefill when it promotes: promoting a memory
nobody reads again is pure cost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from benchmarks.common import (
    Target,
    base_parser,
    emit_json,
    free_port,
    machine,
    percentile,
    print_table,
    print_targets,
)
from benchmarks.daemon import OBJECTS, SUBJECTS, VERBS, WHENS, Daemon

if TYPE_CHECKING:
    from memos.embed import Embedder

CHUNK_TOKENS = 16
TOP_K = 2

Hint = Literal["reuse", "done"]


# ---------------------------------------------------------------------- the workload


@dataclass(frozen=True, slots=True)
class Read:
    tenant: str
    kind: Literal["search", "get"]
    ref: str  # search: the topic tag; get: the memory's workload name
    hint: Hint | None = None


@dataclass(frozen=True, slots=True)
class Write:
    tenant: str
    ref: str
    text: str


Op = Read | Write


@dataclass
class Workload:
    tenants: list[str]
    memories: dict[str, dict[str, tuple[str, str]]]  # tenant -> ref -> (text, tag)
    topics: dict[str, list[str]]  # tenant -> topic tags
    queries: dict[str, str]  # topic tag -> query text
    ops: list[Op] = field(default_factory=list)

    @property
    def reads(self) -> int:
        return sum(1 for op in self.ops if isinstance(op, Read))


def _sentence(rng: random.Random, topic: int | None = None) -> str:
    subject = SUBJECTS[topic % len(SUBJECTS)] if topic is not None else rng.choice(SUBJECTS)
    return f"{subject} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(WHENS)}."


def _text(rng: random.Random, sentences: int, topic: int | None, ref: str) -> str:
    body = " ".join(_sentence(rng, topic) for _ in range(sentences))
    return f"{body} ({ref})"


def build_workload(
    seed: int,
    *,
    tenants: int,
    topics: int,
    per_topic: int,
    cold: int,
    sessions: int,
    concurrent: int,
    zipf: float = 1.1,
    one_off_p: float = 0.35,
) -> Workload:
    """A deterministic trace for ``seed``: the same memories and the same operations."""
    rng = random.Random(seed)
    names = [f"tenant-{i}" for i in range(tenants)]
    w = Workload(names, {t: {} for t in names}, {t: [] for t in names}, {})
    for t in names:
        for z in range(topics):
            tag = f"{t}-topic-{z}"
            w.topics[t].append(tag)
            w.queries[tag] = _sentence(rng, z)
            for j in range(per_topic):
                ref = f"{tag}-m{j}"
                w.memories[t][ref] = (_text(rng, rng.randint(3, 5), z, ref), tag)
        for j in range(cold):
            ref = f"{t}-cold-{j}"
            w.memories[t][ref] = (_text(rng, rng.randint(3, 5), None, ref), f"{t}-cold")
    weights = [1.0 / (r + 1) ** zipf for r in range(topics)]

    def session(n: int) -> Iterator[list[Op]]:
        tenant = rng.choice(names)
        tag = rng.choices(w.topics[tenant], weights)[0]
        note = f"{tenant}-session-{n}"
        turns = rng.randint(3, 6)
        yield [Write(tenant, note, _text(rng, rng.randint(3, 5), None, note))]
        for turn in range(turns):
            last = turn == turns - 1
            ops: list[Op] = [
                Read(tenant, "search", tag),
                Read(tenant, "get", note, "done" if last else None),
            ]
            if rng.random() < one_off_p:
                ops.append(Read(tenant, "get", f"{tenant}-cold-{rng.randrange(cold)}"))
            yield ops

    started = 0
    live: list[Iterator[list[Op]]] = []
    while started < sessions or live:
        while len(live) < concurrent and started < sessions:
            live.append(session(started))
            started += 1
        i = rng.randrange(len(live))
        step = next(live[i], None)
        if step is None:
            live.pop(i)
        else:
            w.ops.extend(step)
    return w


# ---------------------------------------------------------------------- one run


@dataclass(frozen=True, slots=True)
class Config:
    name: str
    activated_policy: str | None  # None: no promotion at all
    classical: bool  # LRU for the activation levels and the adapter slots as well


CONFIGS = (
    Config("robust-mark0, learned bits", "robust-mark0", False),
    Config("LRU everywhere", "lru", True),
    Config("no promotion", None, False),
)


@dataclass
class Outcome:
    config: str
    reads: int = 0
    kv_hits: int = 0
    tokens_read: int = 0
    tokens_reused: int = 0
    promoted: int = 0
    demoted: int = 0
    promotion_tokens: int = 0
    set_requests: int = 0
    set_hits: int = 0
    migrate_runs: int = 0
    search_s: list[float] = field(default_factory=list)
    get_s: list[float] = field(default_factory=list)
    lookup_s: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def misses(self) -> int:
        return self.reads - self.kv_hits

    @property
    def recomputed(self) -> int:
        return self.tokens_read - self.tokens_reused

    @property
    def prefill_tokens(self) -> int:
        return self.recomputed + self.promotion_tokens

    def row(self) -> list[object]:
        return [
            self.config,
            self.reads,
            self.kv_hits / max(1, self.reads),
            self.set_hits / max(1, self.set_requests),
            self.promoted,
            self.tokens_reused,
            self.promotion_tokens,
            self.prefill_tokens,
            1000 * percentile(self.search_s, 50),
            1000 * percentile(self.search_s, 99),
            1000 * percentile(self.lookup_s, 99),
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "reads": self.reads,
            "kv_hits": self.kv_hits,
            "kv_misses": self.misses,
            "kv_hit_ratio": round(self.kv_hits / max(1, self.reads), 4),
            "activated_set_requests": self.set_requests,
            "activated_set_hit_ratio": round(self.set_hits / max(1, self.set_requests), 4),
            "promoted": self.promoted,
            "demoted": self.demoted,
            "migrate_runs": self.migrate_runs,
            "tokens_read": self.tokens_read,
            "prefill_tokens_saved": self.tokens_reused,
            "prefill_tokens_at_reads": self.recomputed,
            "prefill_tokens_promoting": self.promotion_tokens,
            "prefill_tokens_total": self.prefill_tokens,
            "search_p50_ms": round(1000 * percentile(self.search_s, 50), 2),
            "search_p99_ms": round(1000 * percentile(self.search_s, 99), 2),
            "get_p99_ms": round(1000 * percentile(self.get_s, 99), 2),
            "kv_lookup_p50_ms": round(1000 * percentile(self.lookup_s, 50), 2),
            "kv_lookup_p99_ms": round(1000 * percentile(self.lookup_s, 99), 2),
            "seconds": round(self.seconds, 1),
        }


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    """The daemon helper passes this process's environment on: set its settings there."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class InProcess:
    """memosd's server in this process (``--quick``): the same gRPC API and code, without
    a minute of start-up per configuration; the client shares its cores and its GIL, so its
    latencies are not the daemon's."""

    def __init__(self, data_dir: Path, env: dict[str, str], embedder: Embedder) -> None:
        from memos.api.server import Server
        from memos.config import load_settings

        self.addr = f"127.0.0.1:{free_port()}"
        with _env({**env, "MEMOS_LOG_LEVEL": "WARNING"}):
            settings = load_settings(data_dir=data_dir, listen=self.addr)
        self.server = Server(settings, embedder=embedder)
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace_s=1)


def daemon_env(config: Config, model_dir: Path, budget_tokens: int, items: int) -> dict[str, str]:
    policy = config.activated_policy or "robust-mark0"
    env = {
        "MEMOS_ENGINE__MODEL_PATH": str(model_dir),
        "MEMOS_ACTIVATION__CHUNK_TOKENS": str(CHUNK_TOKENS),
        # The tiny model's tokenizer is byte-level: a token per byte of text.
        "MEMOS_MANAGER__BYTES_PER_TOKEN": "1",
        "MEMOS_MANAGER__ACTIVATED_BUDGET_TOKENS": str(budget_tokens),
        "MEMOS_MANAGER__ACTIVATED_ITEMS": str(items),
        "MEMOS_MANAGER__POLICIES": json.dumps({"activated": policy}),
        "MEMOS_JOBS__PREFILL_BUDGET_TOKENS": str(budget_tokens // 2),
        "MEMOS_PLAINTEXT__INDEX_INTERVAL_S": "60",
        "MEMOS_PLAINTEXT__COMPACT_INTERVAL_S": "60",
        # The benchmark runs migrate itself; the other jobs stay out of the measurement.
        **{
            f"MEMOS_JOBS__{name}": "86400"
            for name in (
                "LIFECYCLE_INTERVAL_S",
                "FUSE_INTERVAL_S",
                "MIGRATE_INTERVAL_S",
                "RETRAIN_INTERVAL_S",
                "CORETRIEVAL_INTERVAL_S",
            )
        },
    }
    if config.classical:
        env["MEMOS_ACTIVATION__POLICY"] = "lru"
        env["MEMOS_PARAMETER__POLICY"] = "lru"
    return env


class _Engine:
    """The serving side: the daemon's tokenizer and key chain, this tenant's salt."""

    def __init__(self, model_dir: Path, none_hash_seed: str) -> None:
        from memos.engines.hf import HFEngine
        from memos.tiers.activation.keys import none_hash

        self.engine = HFEngine.load(
            model_dir, chunk_tokens=CHUNK_TOKENS, none_hash=none_hash(none_hash_seed)
        )
        self._keys: dict[tuple[str, str], tuple[int, list[bytes]]] = {}

    def keys(self, text: str, salt: str) -> tuple[int, list[bytes]]:
        got = self._keys.get((text, salt))
        if got is None:
            tokens = self.engine.tokenize(text)
            got = (len(tokens), self.engine.keys(tokens, cache_salt=salt))
            self._keys[(text, salt)] = got
        return got


def run_config(
    config: Config,
    work: Workload,
    model_dir: Path,
    data_dir: Path,
    *,
    budget_tokens: int,
    items: int,
    migrate_every: int,
    vectors: dict[str, tuple[float, ...]],
    embedder: Embedder | None,
) -> Outcome:
    from memos.cli.top import fetch_tier_stats
    from memos.client import JobsClient, MemosClient
    from memos.client_activation import ActivationClient
    from memos.cube import CubeInput

    out = Outcome(config.name)
    env = daemon_env(config, model_dir, budget_tokens, items)
    daemon: InProcess | Daemon
    if embedder is not None:
        daemon = InProcess(data_dir, env, embedder)
    else:
        with _env(env):
            # Index and compaction jobs run as in production (often: many small commits).
            daemon = Daemon(data_dir, index_interval_s=60)
    try:
        clients = {t: MemosClient(daemon.addr, tenant=t, timeout=120) for t in work.tenants}
        kv = {t: ActivationClient(c) for t, c in clients.items()}
        ids: dict[tuple[str, str], str] = {}
        for t, client in clients.items():
            refs = sorted(work.memories[t])
            for i in range(0, len(refs), 200):
                batch = refs[i : i + 200]
                cubes = client.put_batch(
                    CubeInput(
                        text=work.memories[t][r][0],
                        tags=(work.memories[t][r][1],),
                        embedding=vectors[work.memories[t][r][0]],
                    )
                    for r in batch
                )
                ids.update({(t, r): c.id for r, c in zip(batch, cubes, strict=True)})
        stats = {t: kv[t].stats() for t in work.tenants}
        engine = _Engine(model_dir, stats[work.tenants[0]].none_hash_seed)
        salts = {t: s.cache_salt for t, s in stats.items()}
        jobs = JobsClient(clients[work.tenants[0]])
        t0 = time.perf_counter()
        for n, op in enumerate(work.ops):
            if n and n % 1000 == 0:
                print(
                    f"  {config.name}: {n}/{len(work.ops)} operations, "
                    f"{time.perf_counter() - t0:.0f}s",
                    file=sys.stderr,
                    flush=True,
                )
            client = clients[op.tenant]
            if isinstance(op, Write):
                ids[(op.tenant, op.ref)] = client.put(op.text, tags=("session",)).id
                continue
            start = time.perf_counter()
            if op.kind == "search":
                hits = client.search(work.queries[op.ref], k=TOP_K, tags=[op.ref], hint=op.hint)
                out.search_s.append(time.perf_counter() - start)
                texts = [h.cube.text for h in hits]
            else:
                cube = client.get(ids[(op.tenant, op.ref)], hint=op.hint)
                out.get_s.append(time.perf_counter() - start)
                texts = [cube.text]
            for text in texts:
                n_tokens, keys = engine.keys(text, salts[op.tenant])
                start = time.perf_counter()
                matched = kv[op.tenant].lookup(keys).matched if keys else 0
                out.lookup_s.append(time.perf_counter() - start)
                out.reads += 1
                out.tokens_read += n_tokens
                out.tokens_reused += matched * CHUNK_TOKENS
                out.kv_hits += bool(keys) and matched == len(keys)
                if config.activated_policy is not None and out.reads % migrate_every == 0:
                    run = jobs.run_job("migrate")
                    if not run.ok:
                        raise RuntimeError(f"the migrate job failed: {run.detail}")
                    out.migrate_runs += 1
        out.seconds = time.perf_counter() - t0
        tiers = fetch_tier_stats(clients[work.tenants[0]])
        for cache in tiers.caches:
            if cache.name == "activated":
                out.set_requests, out.set_hits = cache.requests, cache.hits
                out.promoted, out.demoted = cache.promoted, cache.demoted
                out.promotion_tokens = cache.prefilled_tokens
        for c in clients.values():
            c.close()
    finally:
        daemon.stop()
    return out


# ---------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    p = base_parser("memory_os", __doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sessions", type=int, help="sessions in the trace (default 16 / 200)")
    p.add_argument("--migrate-every", type=int, default=20, help="reads between migrate runs")
    p.add_argument(
        "--in-process",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the server in this process (default with --quick: a memosd process "
        "takes about a minute to start on a busy 2-core machine, times three)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    in_process = quick if args.in_process is None else args.in_process
    sessions = args.sessions or (16 if quick else 200)
    work = build_workload(
        args.seed,
        tenants=2 if quick else 3,
        topics=8 if quick else 12,
        per_topic=TOP_K,
        cold=40 if quick else 300,
        sessions=sessions,
        concurrent=4 if quick else 6,
    )
    # The activated set holds about a dozen memories (~200 tokens each) for all tenants.
    budget_tokens, items = 2400, 12
    from memos.config import EmbedSettings
    from memos.embed import load_embedder
    from memos.engines.tiny import TinyLlamaSpec, build_tiny_llama

    # The memories' embeddings, once for all three runs (the setup is not what is measured).
    embedder = load_embedder(EmbedSettings())
    texts = sorted({text for mem in work.memories.values() for text, _ in mem.values()})
    vectors = {
        text: tuple(float(x) for x in row)
        for text, row in zip(texts, embedder.embed(texts), strict=True)
    }
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="memos-bench-os-") as tmp:
        root = Path(tmp)
        model_dir = build_tiny_llama(root / "tiny-llama", TinyLlamaSpec(seed=0))
        for i, config in enumerate(CONFIGS):
            outcomes.append(
                run_config(
                    config,
                    work,
                    model_dir,
                    root / f"data-{i}",
                    budget_tokens=budget_tokens,
                    items=items,
                    migrate_every=args.migrate_every,
                    vectors=vectors,
                    embedder=embedder if in_process else None,
                )
            )
    learned, lru, none = outcomes
    print(
        f"\n{len(work.tenants)} tenants, {sessions} sessions, {work.reads} Get/Search calls "
        f"({learned.reads} cube reads) "
        f"({machine()}); activated set {budget_tokens} tokens, migrate every "
        f"{args.migrate_every} reads; server "
        + ("in this process (latencies include the client's share)" if in_process else "memosd")
    )
    print_table(
        "memory OS loop: the same session workload, three placement policies",
        [
            "policy",
            "reads",
            "KV hit ratio",
            "set hit ratio",
            "promoted",
            "tokens reused",
            "prefill promoting",
            "prefill total",
            "search p50 ms",
            "search p99 ms",
            "KV lookup p99 ms",
        ],
        [o.row() for o in outcomes],
    )
    targets = {
        # "Fewer misses and fewer prefill tokens than LRU everywhere": at least one fewer.
        "kv_misses_fewer_than_lru": Target(float(lru.misses - learned.misses), 1.0),
        "prefill_tokens_fewer_than_lru": Target(
            float(lru.prefill_tokens - learned.prefill_tokens), 1.0
        ),
    }
    print_targets(targets)
    if args.json:
        emit_json(
            "memory_os",
            {
                "workload": {
                    "seed": args.seed,
                    "tenants": len(work.tenants),
                    "sessions": sessions,
                    "reads": work.reads,
                    "activated_budget_tokens": budget_tokens,
                    "migrate_every": args.migrate_every,
                    "quick": quick,
                    "server": "in-process" if in_process else "memosd process",
                },
                "learned": learned.as_json(),
                "lru": lru.as_json(),
                "no_promotion": none.as_json(),
                "miss_ratio_vs_lru": round(learned.misses / max(1, lru.misses), 4),
                "prefill_ratio_vs_lru": round(
                    learned.prefill_tokens / max(1, lru.prefill_tokens), 4
                ),
            },
            targets,
        )


if __name__ == "__main__":
    main()
