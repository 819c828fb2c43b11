"""LoRA slots: adapter loads under the robust one-bit policy versus LRU (vLLM's policy).

``python -m benchmarks.lora_slots [--quick] [--json] [--k 4,8,16] [--requests N]``

The trace: a multi-adapter serving workload. ``--adapters`` adapters (per-customer or
per-task LoRAs) with Zipf(``--alpha``) popularity; ``--sessions`` concurrent sessions, each
a burst of requests to one adapter (geometric length, mean ``--burst``), interleaved at
random; a finished session is replaced by a new one on a freshly drawn adapter. The serving
stack knows when a session ends: its last request may carry a client hint (discard bit 1).

Every request is replayed against k engine slots through
:class:`memos.tiers.parameter.slots.AdapterSlots`, the class the daemon uses:

- ``lru``: least recently used, what vLLM's ``LRUCacheWorkerLoRAManager`` does;
- ``robust-mark0``, learned bits: the scheduler's robust one-bit policy fed by the online
  learned predictor (past requests only, never the future), no client hints;
- ``robust-mark0``, learned bits + hints: the same, with the session-end hint as a feature;
- ``opt``: Belady's offline optimum (knows the future): the lower bound, for reference.

Load latency is measured for real: a LoRA adapter (rank 16 on q, k, v, o) registered in an
:class:`~memos.tiers.parameter.store.AdapterStore` is read, digest-checked, validated and
injected with peft into a locally built Llama (the ~0.1M-parameter test model with
``--quick``, the ~52M-parameter benchmark model otherwise) and unloaded again, many times;
each policy's total load time is its loads x the mean. The target: fewer loads than LRU.
"""

from __future__ import annotations

import bisect
import itertools
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers.utils import logging as hf_logging

from benchmarks.common import Target, base_parser, emit_json, percentile, print_table, print_targets
from memos.engines.hf import HFEngine
from memos.engines.lora import LoRAEngine
from memos.engines.tiny import BENCH_SPEC, TinyLlamaSpec, build_tiny_llama
from memos.tiers.parameter.slots import AdapterSlots
from memos.tiers.parameter.store import AdapterStore
from memos.tiers.parameter.weights import LoraModule, LoraWeights, lora_config, scale_of

TARGET_K = 8


@dataclass(frozen=True, slots=True)
class TraceConfig:
    requests: int = 100_000
    adapters: int = 1000
    alpha: float = 1.0
    sessions: int = 4
    burst: float = 2.0
    seed: int = 0


DEFAULT_TRACE = TraceConfig()


def adapter_trace(cfg: TraceConfig) -> tuple[list[str], list[int | None]]:
    """The adapter named by each request, and the client hint it carries (1 = session ends)."""
    rng = random.Random(cfg.seed)
    cum = list(itertools.accumulate(1.0 / (r + 1) ** cfg.alpha for r in range(cfg.adapters)))
    # Popularity rank and adapter id are unrelated, as with real adapter names.
    names = [f"lora-{i:04d}" for i in rng.sample(range(cfg.adapters), cfg.adapters)]
    stop = 1.0 / cfg.burst

    def session() -> list[Any]:
        rank = min(bisect.bisect_left(cum, rng.random() * cum[-1]), cfg.adapters - 1)
        length = 1
        while rng.random() > stop:
            length += 1
        return [names[rank], length]

    live = [session() for _ in range(cfg.sessions)]
    keys: list[str] = []
    hints: list[int | None] = []
    while len(keys) < cfg.requests:
        i = rng.randrange(cfg.sessions)
        adapter, left = live[i]
        keys.append(adapter)
        hints.append(1 if left == 1 else None)
        if left == 1:
            live[i] = session()
        else:
            live[i][1] = left - 1
    return keys, hints


@dataclass(frozen=True, slots=True)
class Row:
    policy: str
    bits: str
    hit_ratio: float
    loads: int
    us_per_request: float


def replay(k: int, keys: list[str], hints: list[int | None], policy: str, bits: str) -> Row:
    kwargs: dict[str, Any] = {"trace": keys} if policy == "opt" else {}
    slots = AdapterSlots(k, policy, learned=bits.startswith("learned"), **kwargs)
    use_hints = bits.endswith("hints")
    request = slots.request
    start = time.perf_counter()
    for key, hint in zip(keys, hints, strict=True):
        request(key, hint if use_hints else None)
    elapsed = time.perf_counter() - start
    stats = slots.stats
    return Row(policy, bits, stats.hit_ratio, stats.loads, elapsed / len(keys) * 1e6)


RUNS = (
    ("lru", "none"),
    ("robust-mark0", "learned"),
    ("robust-mark0", "learned + hints"),
    ("opt", "oracle (offline)"),
)


@dataclass(frozen=True, slots=True)
class Latency:
    model: str
    params: int
    adapter_rank: int
    adapter_modules: int
    adapter_bytes: int
    load_mean_ms: float
    #: Of which: reading the files, checking the digest and validating against the model.
    read_mean_ms: float
    load_p50_ms: float
    load_p95_ms: float
    unload_mean_ms: float
    samples: int


def bench_adapter(spec_linear: dict[str, tuple[int, int]], rank: int) -> LoraWeights:
    import torch

    generator = torch.Generator().manual_seed(0)
    modules = {}
    targets = ("q_proj", "k_proj", "v_proj", "o_proj")
    for name, (fan_in, fan_out) in spec_linear.items():
        if name.rsplit(".", 1)[-1] in targets:
            a = torch.randn(rank, fan_in, generator=generator) * 0.01
            b = torch.randn(fan_out, rank, generator=generator) * 0.01
            modules[name] = LoraModule(a, b, scale_of(rank, 2.0 * rank, False))
    return LoraWeights(lora_config(rank=rank, alpha=2.0 * rank, target_modules=targets), modules)


def measure_load(work: Path, spec: TinyLlamaSpec, samples: int) -> Latency:
    """Mean time to read, verify, validate and inject one adapter with peft, and to unload it."""
    name = f"llama-{spec.parameter_count() / 1e6:.1f}M"
    engine = LoRAEngine(HFEngine.load(build_tiny_llama(work / name, spec)))
    store = AdapterStore(work / "adapters", engine.spec)
    rank = 16
    record = store.register_weights(
        "bench", "adapter", bench_adapter(dict(engine.spec.linear), rank), origin="upload"
    )
    loads, reads, unloads = [], [], []
    for i in range(samples + 2):
        t0 = time.perf_counter()
        weights = store.load(record)
        t_read = time.perf_counter()
        engine.load(f"a{i}", weights, path=record.path)
        t1 = time.perf_counter()
        engine.unload(f"a{i}")
        t2 = time.perf_counter()
        if i >= 2:  # the first loads warm peft's and torch's code paths
            loads.append((t1 - t0) * 1e3)
            reads.append((t_read - t0) * 1e3)
            unloads.append((t2 - t1) * 1e3)
    return Latency(
        model=name,
        params=spec.parameter_count(),
        adapter_rank=rank,
        adapter_modules=record.modules,
        adapter_bytes=record.size_bytes,
        load_mean_ms=statistics.fmean(loads),
        read_mean_ms=statistics.fmean(reads),
        load_p50_ms=percentile(loads, 50),
        load_p95_ms=percentile(loads, 95),
        unload_mean_ms=statistics.fmean(unloads),
        samples=samples,
    )


def main() -> None:
    parser = base_parser("lora_slots", __doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--k", default=None, help="slot counts, e.g. 4,8,16")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--adapters", type=int, default=DEFAULT_TRACE.adapters)
    parser.add_argument("--alpha", type=float, default=DEFAULT_TRACE.alpha)
    parser.add_argument("--sessions", type=int, default=DEFAULT_TRACE.sessions)
    parser.add_argument("--burst", type=float, default=DEFAULT_TRACE.burst)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ks = (
        [int(k) for k in args.k.split(",")]
        if args.k
        else ([TARGET_K] if args.quick else [4, 8, 16])
    )
    cfg = TraceConfig(
        requests=args.requests or (20_000 if args.quick else 100_000),
        adapters=args.adapters,
        alpha=args.alpha,
        sessions=args.sessions,
        burst=args.burst,
        seed=args.seed,
    )
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]

    with tempfile.TemporaryDirectory(prefix="memos-lora-bench-") as tmp:
        if args.quick:
            latency = measure_load(Path(tmp), TinyLlamaSpec(), 20)
        else:
            latency = measure_load(Path(tmp), BENCH_SPEC, 30)

    keys, hints = adapter_trace(cfg)
    results: dict[str, dict[str, Any]] = {}
    table = []
    for k in ks:
        rows = [replay(k, keys, hints, policy, bits) for policy, bits in RUNS]
        lru = rows[0].loads
        results[str(k)] = {}
        for row in rows:
            seconds = row.loads * latency.load_mean_ms / 1e3
            results[str(k)][f"{row.policy} / {row.bits}"] = {
                **asdict(row),
                "load_seconds": seconds,
                "loads_vs_lru": row.loads / lru,
            }
            table.append(
                [k, row.policy, row.bits, row.hit_ratio, row.loads, f"{row.loads / lru:.3f}",
                 seconds, row.us_per_request]
            )  # fmt: skip
    print(
        f"trace: {cfg.requests:,} requests, {cfg.adapters} adapters (Zipf {cfg.alpha}), "
        f"{cfg.sessions} concurrent sessions, mean burst {cfg.burst}"
    )
    print_table(
        "adapter slots: loads per policy",
        ["k", "policy", "bits", "hit ratio", "loads", "vs LRU", "load s", "us/request"],
        table,
    )
    print_table(
        f"adapter load latency, measured ({latency.model}, rank {latency.adapter_rank}, "
        f"{latency.adapter_modules} modules, {latency.adapter_bytes / 1024:.0f} KiB)",
        ["load mean ms", "of which read+verify", "p50 ms", "p95 ms", "unload mean ms", "samples"],
        [[latency.load_mean_ms, latency.read_mean_ms, latency.load_p50_ms, latency.load_p95_ms,
          latency.unload_mean_ms, latency.samples]],
    )  # fmt: skip
    k = TARGET_K if TARGET_K in ks else ks[0]
    at_k = results[str(k)]
    lru_loads = at_k["lru / none"]["loads"]
    targets = {
        f"fewer_loads_than_lru_k{k}": Target(
            lru_loads - at_k["robust-mark0 / learned"]["loads"], 1.0
        ),
        f"fewer_loads_than_lru_k{k}_with_hints": Target(
            lru_loads - at_k["robust-mark0 / learned + hints"]["loads"], 1.0
        ),
    }
    print_targets(targets)
    if args.json:
        emit_json(
            "lora_slots",
            {"trace": asdict(cfg), "k": ks, "slots": results, "load_latency": asdict(latency)},
            targets,
        )


if __name__ == "__main__":
    main()
