"""The plaintext store in-process: Put throughput, and Search latency and recall at 10k/100k.

``python -m benchmarks.plaintext_store [--quick] [--json] [--sizes 10000,100000]``

No gRPC here: this is the storage side of ``benchmarks.daemon``'s targets, measured on the
``PlaintextStore`` itself, so that a regression can be placed in the store or in the layers
above it. In one run:

- the embedding model's own batch throughput (``memos.embed.measure_throughput``);
- text-only Puts from concurrent threads, one cube per call (the store embeds, grouped),
  as a share of that throughput;
- Puts that carry their embedding, from concurrent threads, 64 cubes and one cube per call;
- for each size: the table filled with vectors, the ANN index built by ``refresh_index``
  (timed), then top-10 Search latency p50/p99 (store only, and with the query embedded) and
  recall@10 against the exact (brute-force, prefiltered) top-10 of the same filter.

Vectors: real MiniLM embeddings of LoCoMo dialogue turns (``../shared/data/locomo_dev.json``,
read in place; generated sentences when it is absent), and for the rest of each size, mixtures
of two real embeddings plus noise, renormalised: they keep the anisotropic shape of real
sentence embeddings, which random vectors lack. Queries are real embeddings of LoCoMo
questions. 90% of the rows belong to the benchmark tenant, 10% to another one; search is also
measured for that small tenant, where the filter is selective and LanceDB prefilters.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    SHARED,
    Target,
    base_parser,
    emit_json,
    percentile,
    print_table,
    print_targets,
)
from memos.config import EmbedSettings, PlaintextSettings
from memos.cube import MemCube, PlaintextPayload, utcnow
from memos.embed import Embedder, load_embedder, measure_throughput
from memos.ids import new_id
from memos.tiers.plaintext import CubeFilter, PlaintextStore

NAME = "plaintext_store"
TENANT = "bench"
SMALL_TENANT = "small"
LOCOMO = SHARED / "data" / "locomo_dev.json"


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def corpus() -> tuple[list[str], list[str]]:
    """Sentences to store and questions to ask: LoCoMo when it is at hand."""
    if LOCOMO.exists():
        data = json.loads(LOCOMO.read_text())
        turns: list[str] = []
        questions: list[str] = []
        for conv in data:
            for value in conv["conversation"].values():
                if isinstance(value, list):
                    turns.extend(t["text"] for t in value if t.get("text"))
            questions.extend(q["question"] for q in conv["qa"] if q.get("question"))
        return turns, questions
    rng = random.Random(0)
    who = ["Alice", "Bob", "Carol", "Dmitri", "Elena", "Farid", "Grace", "Hiro"]
    what = ["a trip to Lisbon", "the new job", "a marathon", "the dentist", "a birthday party"]
    when = ["last week", "yesterday", "in May", "next Friday", "this morning"]
    turns = [
        f"{rng.choice(who)} talked about {rng.choice(what)} {rng.choice(when)} (note {i})."
        for i in range(3000)
    ]
    questions = [f"What did {rng.choice(who)} say about {rng.choice(what)}?" for _ in range(300)]
    return turns, questions


def synthetic(real: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n vectors shaped like sentence embeddings: two real ones mixed, plus noise."""
    rng = np.random.default_rng(seed)
    a = real[rng.integers(0, len(real), n)]
    b = real[rng.integers(0, len(real), n)]
    w = rng.uniform(0.3, 0.7, (n, 1)).astype(np.float32)
    v = w * a + (1 - w) * b + rng.normal(0, 0.025, (n, real.shape[1])).astype(np.float32)
    out: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out.astype(np.float32)


def make_cube(text: str, vector: np.ndarray | None, tenant: str = TENANT) -> MemCube:
    now = utcnow()
    return MemCube(
        id=new_id(),
        tenant=tenant,
        namespace="bench",
        created_at=now,
        updated_at=now,
        plaintext=PlaintextPayload(
            text=text, embedding=tuple(vector.tolist()) if vector is not None else None
        ),
    )


def concurrent_puts(store: PlaintextStore, batches: Sequence[list[MemCube]], clients: int) -> float:
    """Cubes/s acknowledged when ``clients`` threads put ``batches``."""
    total = sum(len(b) for b in batches)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for result in pool.map(store.put, batches):
            assert result
    return total / (time.perf_counter() - start)


def latencies(
    fn: Callable[[np.ndarray], Any], queries: np.ndarray
) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU milliseconds per call. CPU time counts every thread of this
    process and none of the neighbours': on a shared machine it is the steadier figure."""
    wall, cpu = [], []
    for q in queries:
        t0, c0 = time.perf_counter(), time.process_time()
        fn(q)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return wall, cpu


def measure_size(
    n: int,
    embedder: Embedder,
    real: np.ndarray,
    texts: Sequence[str],
    queries: np.ndarray,
    question_texts: Sequence[str],
    workdir: Path,
) -> dict[str, float]:
    settings = PlaintextSettings()
    store = PlaintextStore(str(workdir / f"size-{n}"), embedder=embedder, settings=settings)
    try:
        vectors = np.concatenate([real, synthetic(real, max(0, n - len(real)), seed=n)])[:n]
        rng = np.random.default_rng(n)
        order = rng.permutation(n)
        progress(f"{n:,} cubes: filling")
        t0 = time.perf_counter()
        batch: list[MemCube] = []
        for j, i in enumerate(order):
            tenant = SMALL_TENANT if j % 10 == 0 else TENANT
            batch.append(make_cube(texts[i % len(texts)], vectors[i], tenant))
            if len(batch) == 1000:
                store.put(batch)
                batch = []
        if batch:
            store.put(batch)
        fill_rate = n / (time.perf_counter() - t0)
        progress(f"{n:,} cubes: building the ANN index")
        t0 = time.perf_counter()
        store.compact()
        built = store.refresh_index()
        build_s = time.perf_counter() - t0
        assert built or n < settings.ann_min_rows

        flt = CubeFilter()
        results: dict[str, float] = {"fill_per_s": fill_rate, "index_build_s": build_s}
        for label, tenant in (("", TENANT), ("small_tenant_", SMALL_TENANT)):

            def ann(q: np.ndarray, tenant: str = tenant) -> list[str]:
                return [c.id for c, _ in store.search(tenant, q, 10, flt)]

            def exact(q: np.ndarray, tenant: str = tenant) -> list[str]:
                return [c.id for c, _ in store.search(tenant, q, 10, flt, exact=True)]

            for q in queries[:5]:
                ann(q)  # warm the caches
            lat, cpu = latencies(ann, queries)
            truth = [exact(q) for q in queries]
            found = [ann(q) for q in queries]
            recall = float(
                np.mean(
                    [
                        len(set(f) & set(t)) / max(1, len(t))
                        for f, t in zip(found, truth, strict=True)
                    ]
                )
            )
            exact_lat, _ = latencies(exact, queries[: min(30, len(queries))])
            results[f"{label}search_p50_ms"] = percentile(lat, 50)
            results[f"{label}search_cpu_p50_ms"] = percentile(cpu, 50)
            results[f"{label}search_p99_ms"] = percentile(lat, 99)
            results[f"{label}recall_at_10"] = recall
            results[f"{label}exact_p50_ms"] = percentile(exact_lat, 50)

        def embedded(i: np.ndarray) -> None:
            q = store.embed_query(question_texts[int(i[0])])
            store.search(TENANT, q, 10, flt)

        idx = np.arange(len(queries), dtype=np.float32).reshape(-1, 1)
        lat, cpu = latencies(embedded, idx)
        results["search_embedded_cpu_p50_ms"] = percentile(cpu, 50)
        results["search_embedded_p50_ms"] = percentile(lat, 50)
        results["search_embedded_p99_ms"] = percentile(lat, 99)
        return results
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = base_parser(NAME, __doc__ or "")
    parser.add_argument("--sizes", default="", help="comma-separated table sizes")
    parser.add_argument("--clients", type=int, default=16, help="concurrent put threads")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s] or (
        [10_000] if args.quick else [10_000, 100_000]
    )
    n_text = 400 if args.quick else 2000
    n_queries = 60 if args.quick else 200

    progress("loading the model and the corpus")
    embedder = load_embedder(EmbedSettings())
    turns, questions = corpus()
    rng = random.Random(0)
    put_texts = [rng.choice(turns) + f" ({i})" for i in range(n_text)]
    real_n = min(len(turns), 1500 if args.quick else len(turns))
    progress(f"embedding {real_n} real sentences and {n_queries} questions")
    real = embedder.embed(turns[:real_n])
    question_texts = questions[:n_queries]
    queries = embedder.embed(question_texts)

    # The 1-minute load average: on a shared machine, it says how far to trust the figures.
    results: dict[str, Any] = {"loadavg_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="memos-bench-") as tmp:
        work = Path(tmp)
        store = PlaintextStore(str(work / "puts"), embedder=embedder, settings=PlaintextSettings())
        try:
            # The model alone and the text-only puts alternate, in rounds: on a shared
            # machine the neighbours' load drifts, and the share is taken within a round.
            model_rates: list[float] = []
            text_rates: list[float] = []
            shares: list[float] = []
            per_round = len(put_texts) // 2
            for r in range(2):
                chunk = put_texts[r * per_round : (r + 1) * per_round]
                progress(f"round {r + 1}: model batch throughput, then text-only puts")
                model_rate = measure_throughput(embedder, chunk, batch_size=64)
                text_rate = concurrent_puts(
                    store, [[make_cube(t, None)] for t in chunk], args.clients
                )
                model_rates.append(model_rate)
                text_rates.append(text_rate)
                shares.append(text_rate / model_rate)
                progress(f"  model {model_rate:.0f}/s, puts {text_rate:.0f}/s")
            vecs = synthetic(real, 20_000 if not args.quick else 5_000, seed=1)
            progress(f"puts with embedding: {len(vecs)} cubes in calls of 64")
            batches = [
                [
                    make_cube(put_texts[i % n_text], vecs[i])
                    for i in range(s, min(s + 64, len(vecs)))
                ]
                for s in range(0, len(vecs), 64)
            ]
            emb_rate = concurrent_puts(store, batches, args.clients)
            singles = [[make_cube(put_texts[i % n_text], vecs[i])] for i in range(2000)]
            progress("puts with embedding: 2000 single-cube calls")
            single_rate = concurrent_puts(store, singles, args.clients * 2)
        finally:
            store.close()
        model_rate = float(np.median(model_rates))
        text_rate = float(np.median(text_rates))
        results.update(
            {
                "model_sentences_per_s": model_rate,
                "put_text_per_s": text_rate,
                "put_text_share_of_model": float(np.median(shares)),
                "put_with_embedding_per_s": emb_rate,
                "put_with_embedding_single_per_s": single_rate,
            }
        )
        for n in sizes:
            results[str(n)] = measure_size(n, embedder, real, turns, queries, question_texts, work)

    print_table(
        "puts (in-process, durable acknowledgement)",
        ["what", "per second"],
        [
            ["model batch throughput (sentences)", model_rate],
            ["text-only puts, 1 cube/call", text_rate],
            ["  share of the model's throughput", results["put_text_share_of_model"]],
            ["puts with embedding, 64 cubes/call", emb_rate],
            ["puts with embedding, 1 cube/call", single_rate],
        ],
    )
    header = [
        "cubes",
        "fill/s",
        "index s",
        "p50 ms",
        "p99 ms",
        "cpu p50",
        "recall@10",
        "exact p50",
        "+embed p50",
        "+embed p99",
        "small p99",
        "small recall",
    ]
    rows = []
    for n in sizes:
        r = results[str(n)]
        rows.append(
            [
                n,
                r["fill_per_s"],
                r["index_build_s"],
                r["search_p50_ms"],
                r["search_p99_ms"],
                r["search_cpu_p50_ms"],
                r["recall_at_10"],
                r["exact_p50_ms"],
                r["search_embedded_p50_ms"],
                r["search_embedded_p99_ms"],
                r["small_tenant_search_p99_ms"],
                r["small_tenant_recall_at_10"],
            ]
        )
    print_table("search, top-10 (store only unless noted)", header, rows)

    results["loadavg_at_end"] = os.getloadavg()[0]
    print(
        f"\nload average (1 min): {results['loadavg_at_start']:.1f} at start, "
        f"{results['loadavg_at_end']:.1f} at the end, on {os.cpu_count()} cores"
    )
    largest = results[str(max(sizes))]
    targets = {
        "put_text_share_of_model": Target(results["put_text_share_of_model"], 0.8),
        "put_with_embedding_per_s": Target(emb_rate, 2000.0),
        f"search_p99_ms_at_{max(sizes)}": Target(
            largest["search_embedded_p99_ms"], 25.0, higher_is_better=False
        ),
        f"recall_at_10_at_{max(sizes)}": Target(largest["recall_at_10"], 0.95),
    }
    print_targets(targets)
    if args.json:
        emit_json(NAME, results, targets)


if __name__ == "__main__":
    main()
