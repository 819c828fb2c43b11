"""The Hugging Face engine on a tiny random Llama: restored KV gives recompute's logits, exactly."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from memos.engines.hf import HFEngine, layer_kv
from memos.engines.tiny import BENCH_SPEC, TinyLlamaSpec, build_tiny_llama
from memos.tiers.activation.chunk import HEADER_BYTES, decode
from memos.tiers.activation.keys import Adapter
from memos.tiers.activation.levels import DiskLevel, Level, RamLevel, RedisLevel
from memos.tiers.activation.store import ActivationStore
from tests.activation._chunks import flip_byte
from tests.fixtures.tiny_model import TINY_CHUNK_TOKENS

TEXT = (
    "A memory operating system keeps the key-value cache of what it has read, so that the "
    "next request that starts the same way skips the prefill. "
)
ATOL = 1e-5


@pytest.fixture
def prompt(tiny_engine: HFEngine) -> list[int]:
    tokens = tiny_engine.tokenize(TEXT)
    assert len(tokens) > 6 * TINY_CHUNK_TOKENS and len(tokens) % TINY_CHUNK_TOKENS
    return tokens


@pytest.fixture(params=["ram", "disk", "redis"])
def level_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ActivationStore]:
    level: Level
    if request.param == "ram":
        level = RamLevel(1 << 24)
    elif request.param == "disk":
        level = DiskLevel(tmp_path, 1 << 24)
    else:
        level = RedisLevel(request.getfixturevalue("redis_url"))
    store = ActivationStore([level])
    yield store
    store.close()


def test_restored_logits_equal_full_recompute_from_each_level(
    tiny_engine: HFEngine, prompt: list[int], level_store: ActivationStore
) -> None:
    full = tiny_engine.prefill(prompt)
    saved = tiny_engine.save(level_store, prompt, step=full)
    assert saved.written == len(prompt) // TINY_CHUNK_TOKENS
    restored = tiny_engine.restore(level_store, prompt)
    assert restored.chunks == saved.written
    assert restored.tokens == saved.written * TINY_CHUNK_TOKENS
    step = tiny_engine.feed(prompt, restored.cache)
    assert torch.allclose(step.logits, full.logits, atol=ATOL, rtol=0)
    # Every layer's restored KV is the prefill's, bit for bit.
    for layer in range(len(full.cache.layers)):
        fresh, back = layer_kv(full.cache, layer), layer_kv(step.cache, layer)
        assert torch.equal(fresh[0], back[0]) and torch.equal(fresh[1], back[1])


def test_generation_from_restored_kv_equals_generation_from_scratch(
    tiny_engine: HFEngine, prompt: list[int]
) -> None:
    store = ActivationStore([RamLevel(1 << 24)])
    tiny_engine.save(store, prompt)
    restored = tiny_engine.restore(store, prompt)
    continued = tiny_engine.generate(prompt, 12, restored.cache)
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        reference = tiny_engine.model.generate(  # type: ignore[operator]
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False
        )
    assert continued == reference[0, len(prompt) :].tolist()
    assert continued == tiny_engine.generate(prompt, 12)


def test_a_prompt_of_whole_chunks_leaves_its_last_token_to_compute(
    tiny_engine: HFEngine, prompt: list[int]
) -> None:
    exact = prompt[: 4 * TINY_CHUNK_TOKENS]
    store = ActivationStore([RamLevel(1 << 24)])
    tiny_engine.save(store, exact)
    restored = tiny_engine.restore(store, exact)
    assert (restored.chunks, restored.tokens) == (4, 4 * TINY_CHUNK_TOKENS - 1)
    step = tiny_engine.feed(exact, restored.cache)
    assert torch.allclose(step.logits, tiny_engine.prefill(exact).logits, atol=ATOL, rtol=0)


def test_a_partial_prefix_is_reused_and_the_rest_computed(
    tiny_engine: HFEngine, prompt: list[int]
) -> None:
    store = ActivationStore([RamLevel(1 << 24)])
    saved = tiny_engine.save(store, prompt)
    store.drop(saved.keys[2:])
    restored = tiny_engine.restore(store, prompt)
    assert restored.tokens == 2 * TINY_CHUNK_TOKENS
    step = tiny_engine.feed(prompt, restored.cache)
    assert torch.allclose(step.logits, tiny_engine.prefill(prompt).logits, atol=ATOL, rtol=0)
    again = tiny_engine.save(store, prompt)
    assert (again.already_stored, again.written) == (2, len(saved.keys) - 2)


def test_corrupt_chunk_is_never_injected(tiny_engine: HFEngine, prompt: list[int]) -> None:
    ram = RamLevel(1 << 24)
    store = ActivationStore([ram])
    saved = tiny_engine.save(store, prompt)
    victim = saved.keys[3]
    (blob,) = ram.get_many([victim])
    assert blob is not None
    ram.put(victim, flip_byte(blob, HEADER_BYTES + 99))
    restored = tiny_engine.restore(store, prompt)
    assert restored.chunks == 3, "only the chunks before the corrupt one"
    assert store.stats().corrupt == 1
    step = tiny_engine.feed(prompt, restored.cache)
    assert torch.allclose(step.logits, tiny_engine.prefill(prompt).logits, atol=ATOL, rtol=0)


def test_restored_kv_is_really_used(tiny_engine: HFEngine, prompt: list[int]) -> None:
    """Negative control: noise in the restored tensors changes the logits."""
    store = ActivationStore([RamLevel(1 << 24)])
    saved = tiny_engine.save(store, prompt)
    chunks = store.fetch(list(saved.keys))
    cache = tiny_engine.rebuild(chunks, len(chunks) * TINY_CHUNK_TOKENS)
    for layer in range(len(cache.layers)):
        keys, _ = layer_kv(cache, layer)
        keys.add_(torch.randn_like(keys))
    noisy = tiny_engine.feed(prompt, cache)
    assert not torch.allclose(noisy.logits, tiny_engine.prefill(prompt).logits, atol=1e-3)


def test_other_adapter_salt_or_model_never_reuses_chunks(
    tiny_engine: HFEngine, prompt: list[int], tmp_path: Path
) -> None:
    store = ActivationStore([RamLevel(1 << 24)])
    tiny_engine.save(store, prompt)
    n = len(prompt) // TINY_CHUNK_TOKENS
    assert store.lookup(tiny_engine.keys(prompt)) == n
    adapter = Adapter("sql", "/adapters/sql/v1")
    assert store.lookup(tiny_engine.keys(prompt, adapter=adapter)) == 0
    assert store.lookup(tiny_engine.keys(prompt, cache_salt="tenant-b")) == 0
    assert tiny_engine.restore(store, prompt, cache_salt="tenant-b").chunks == 0

    other_dir = build_tiny_llama(tmp_path / "other", TinyLlamaSpec(seed=1))
    other = HFEngine.load(other_dir, chunk_tokens=TINY_CHUNK_TOKENS)
    assert other.layout.fingerprint != tiny_engine.layout.fingerprint
    assert other.restore(store, prompt).chunks == 0
    # Saved under the adapter, the chain is the adapter's own.
    tiny_engine.save(store, prompt, adapter=adapter)
    assert store.lookup(tiny_engine.keys(prompt, adapter=adapter)) == n
    assert store.lookup(tiny_engine.keys(prompt, adapter=Adapter("sql", "/v2"))) == 0


def test_no_deprecation_warnings(tiny_engine: HFEngine, prompt: list[int]) -> None:
    store = ActivationStore([RamLevel(1 << 24)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_engine.save(store, prompt)
        restored = tiny_engine.restore(store, prompt)
        tiny_engine.generate(prompt, 3, restored.cache)
    bad = [w for w in caught if issubclass(w.category, DeprecationWarning | FutureWarning)]
    assert not bad, [str(w.message) for w in bad]


def test_chunks_carry_the_engine_layout(tiny_engine: HFEngine, prompt: list[int]) -> None:
    store = ActivationStore([RamLevel(1 << 24)])
    saved = tiny_engine.save(store, prompt)
    (blob,) = store.level("ram").get_many([saved.keys[0]])
    assert blob is not None
    header = decode(blob, saved.keys[0]).header
    assert header.matches(tiny_engine.layout)
    assert header.shape == (2, 2, 2, TINY_CHUNK_TOKENS, 16)


def test_tiny_models_are_deterministic_and_sized_as_specified(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    again = build_tiny_llama(tmp_path / "again", TinyLlamaSpec(seed=0))
    a = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    b = AutoModelForCausalLM.from_pretrained(again)
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)
    assert a.num_parameters() == TinyLlamaSpec().parameter_count()
    assert 50e6 <= BENCH_SPEC.parameter_count() <= 55e6
    # Identity is content: the same model elsewhere shares chunks, another seed does not.
    assert HFEngine.load(again).layout == HFEngine.load(tiny_model_dir).layout
    other = build_tiny_llama(tmp_path / "other", TinyLlamaSpec(seed=1))
    assert HFEngine.load(other).layout.model_id != HFEngine.load(again).layout.model_id
