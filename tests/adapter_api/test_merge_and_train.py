"""Merge and Train over gRPC: new adapters whose cubes carry their provenance."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch

from memos.client_adapters import Trained, TrainProgress, TrainStarted
from memos.engines.lora import LoRAEngine
from memos.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from memos.tiers.parameter.fingerprint import BaseModelSpec
from memos.tiers.parameter.train import mean_log_likelihood
from memos.tiers.parameter.weights import LoraWeights
from tests.adapter_api.conftest import Clients
from tests.adapter_api.helpers import adapters_of, files_of, read_back, store_tree
from tests.fixtures.adapters import random_adapter
from tests.fixtures.daemon import start_server

ATOL = 1e-5
MEMORIES = [
    "Alice's cat is called Miso and sleeps on the piano.",
    "The staging database moved to port 6543 in March.",
    "Bob prefers green tea without sugar, never coffee.",
    "Our team offsite is in Lisbon on the 14th of June.",
]


def weighted_deltas(
    parts: list[tuple[LoraWeights, float]],
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for adapter, weight in parts:
        for name, delta in adapter.deltas().items():
            out[name] = out.get(name, torch.zeros_like(delta)) + weight * delta
    return out


def test_a_merge_equals_the_weighted_sum_of_the_deltas(
    clients: Clients, lora_base_spec: BaseModelSpec
) -> None:
    adapters, memos = clients.adapters(), clients.memos()
    a = random_adapter(lora_base_spec, ("q_proj", "v_proj"), rank=4, alpha=8.0, seed=1)
    b = random_adapter(lora_base_spec, ("v_proj", "down_proj"), rank=2, alpha=1.0, seed=2)
    ra = adapters.register_files("a", files_of(a)).adapter
    rb = adapters.register_files("b", files_of(b)).adapter

    merged = adapters.merge("ab", [("a", 0.3), ("b", -0.7)])
    m = merged.adapter
    assert m.origin == "merge" and m.parent_ids == (ra.id, rb.id) == merged.cube.parent_ids
    assert merged.rank == 6 == m.rank and merged.error == 0.0
    assert m.metadata["merge.inputs"] == "a@v1*0.3,b@v1*-0.7"
    assert memos.get(m.id).metadata["merge.method"] == "linear"
    expected = weighted_deltas([(a, 0.3), (b, -0.7)])
    got = read_back(m.path, clients.handle).deltas()
    assert set(got) == set(expected) and len(got) == 6
    for name, delta in expected.items():
        assert torch.allclose(got[name], delta, atol=ATOL), name

    # Dense deltas re-factored to a smaller rank: the result states its rank and its error.
    low = adapters.merge("ab-low", [("a", 0.5), ("b", 0.5)], space="dense", rank=2)
    assert low.rank == 2 == low.adapter.rank and 0.0 < low.error < 1.0
    ties = adapters.merge("ab-ties", [("a", 1.0), ("b", 1.0)], method="ties", space="dense")
    assert ties.rank == 4 and ties.adapter.parent_ids == (ra.id, rb.id)

    with pytest.raises(InvalidArgument, match="space='dense'"):
        adapters.merge("bad", [("a", 1.0)], method="ties")
    with pytest.raises(NotFound):
        adapters.merge("bad", [("a", 1.0), ("missing", 1.0)])
    with pytest.raises(InvalidArgument, match="at least one"):
        adapters.merge("bad", [])
    assert {x.name for x in adapters.list()} == {"a", "b", "ab", "ab-low", "ab-ties"}


def test_training_lowers_the_loss_and_registers_a_cube_whose_parents_are_the_memories(
    clients: Clients, one_thread: None, lora_engine: LoRAEngine
) -> None:
    ids = [clients.memos().put(text).id for text in MEMORIES]
    steps = 30
    with clients.adapters().train(
        "memories", ids, steps=steps, learning_rate=1e-2, max_tokens=64
    ) as run:
        events = list(run)
    started, *middle, trained = events
    progress = [e for e in middle if isinstance(e, TrainProgress)]
    assert isinstance(started, TrainStarted) and isinstance(trained, Trained)
    assert started.memories == 4 and started.steps == steps and len(progress) == len(middle)
    assert [p.step for p in progress] == list(range(1, steps + 1))
    result = run.result
    assert result is not None and result is trained
    losses = result.losses
    assert [p.loss for p in progress] == list(losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2
    a = result.adapter
    assert a.origin == "train" and a.parent_ids == tuple(ids) and a.rank == 8
    cube = clients.memos().get(a.id)
    assert cube.parent_ids == tuple(ids) and cube.metadata["train.steps"] == str(steps)
    assert clients.adapters().get("memories") == a
    # The stored adapter raises the memories' likelihood against the base model.
    model, tokenizer = lora_engine.engine.model, lora_engine.engine.tokenizer
    base = mean_log_likelihood(model, tokenizer, MEMORIES)
    lora_engine.load(a.ref, read_back(a.path, clients.handle), path=a.path)
    with lora_engine.use(a.ref):
        tuned = mean_log_likelihood(model, tokenizer, MEMORIES)
    assert tuned > base + 0.3


def test_training_reads_only_the_callers_plaintext_memories(
    clients: Clients, lora_base_spec: BaseModelSpec
) -> None:
    adapters = clients.adapters()
    mine = clients.memos().put("A memory of acme's.").id
    theirs = clients.memos("globex").put("A memory of globex's.").id
    gone = clients.memos().put("Deleted soon.").id
    clients.memos().delete(gone)
    param = adapters.register_files("p", files_of(random_adapter(lora_base_spec))).adapter
    before = store_tree(clients.handle)
    for ids in ([mine, theirs], [gone], ["01JDZ8Q3V2X7G4M5N6P7R8S9T0"]):
        with pytest.raises(NotFound):
            adapters.train("x", ids, steps=1).wait()
    with pytest.raises(InvalidArgument, match="plaintext"):
        adapters.train("x", [mine, param.id], steps=1).wait()
    with pytest.raises(InvalidArgument, match="over the limit"):
        adapters.train("x", [mine], steps=10**9).wait()
    with pytest.raises(InvalidArgument, match="path traversal"):
        adapters.train("../x", [mine], steps=1).wait()
    with pytest.raises(InvalidArgument, match="'c_attn' does not exist"):
        adapters.train("x", [mine], steps=1, target_modules=["q_proj", "c_attn"]).wait()
    assert store_tree(clients.handle) == before
    assert [a.name for a in adapters.list()] == ["p"]


def test_cancelling_the_stream_cancels_the_run_and_registers_nothing(
    clients: Clients, one_thread: None
) -> None:
    ids = [clients.memos().put(text).id for text in MEMORIES]
    tier = adapters_of(clients.handle)
    before = store_tree(clients.handle)
    steps = 100_000  # far more than can run before the cancel arrives
    run = clients.adapters().train("endless", ids, steps=steps, max_tokens=32)
    seen = 0
    for event in run:
        if isinstance(event, TrainProgress) and event.step >= 2:
            seen = event.step
            break
    assert tier.training == 1
    # Only one run at a time: a second one is refused while this one holds the model.
    with pytest.raises(ResourceExhausted, match="in progress"):
        clients.adapters().train("second", ids, steps=1).wait()
    run.cancel()
    deadline = time.monotonic() + 30
    while tier.training and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tier.training == 0 and seen >= 2
    assert list(run) == [] and run.result is None
    assert clients.adapters().list(all_versions=True) == []
    assert store_tree(clients.handle) == before
    # The daemon is free for the next run.
    done = clients.adapters().train("after", ids, steps=2, max_tokens=32).wait()
    assert done.adapter.parent_ids == tuple(ids)


def test_a_daemon_without_model_weights_validates_adapters_but_does_not_train(
    tmp_path: Path, tiny_model_dir: Path, lora_base_spec: BaseModelSpec
) -> None:
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(tiny_model_dir / "config.json", config_only / "config.json")
    handle = start_server(tmp_path / "data", tokens=True, engine={"model_path": config_only})
    c = Clients(handle)
    try:
        added = c.adapters().register_files("v", files_of(random_adapter(lora_base_spec)))
        assert added.adapter.base_model.startswith("hf-config:")
        memory = c.memos().put("Nothing to learn here without weights.")
        with pytest.raises(FailedPrecondition, match="cannot train"):
            c.adapters().train("t", [memory.id], steps=1).wait()
    finally:
        c.close()
        handle.server.stop(grace_s=1)
