"""An adapter's page requests (AdapterService.Request) decide its slot, and explain says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from memos.cli.top import fetch_tier_stats
from memos.client import JobsClient, MemosClient
from memos.client_adapters import AdapterClient
from memos.tiers.parameter.fingerprint import BaseModelSpec
from tests.adapter_api.helpers import files_of
from tests.fixtures.adapters import random_adapter
from tests.fixtures.daemon import ServerHandle, start_server


@pytest.fixture
def one_slot(tmp_path: Path, tiny_model_dir: Path) -> Iterator[ServerHandle]:
    handle = start_server(
        tmp_path / "data",
        tokens=True,
        engine={"model_path": tiny_model_dir},
        parameter={"slots": 1, "policy": "lru"},
    )
    yield handle
    handle.server.stop(grace_s=1)


def test_explain_follows_an_adapter_in_and_out_of_the_engine_slots(
    one_slot: ServerHandle, lora_base_spec: BaseModelSpec
) -> None:
    with MemosClient(one_slot.addr, token=one_slot.tokens["acme"]) as memos:
        adapters, jobs = AdapterClient(memos), JobsClient(memos)
        a, b = (
            adapters.register_files(n, files_of(random_adapter(lora_base_spec, seed=i))).adapter.id
            for i, n in enumerate(("a", "b"))
        )
        before = jobs.explain(a)
        assert (before.tier, before.cache, before.policy) == ("parameter", "lora-slots", "lru")
        assert not before.resident and "next request for it loads it" in before.decision
        assert adapters.request("a").load
        loaded = jobs.explain(a)
        assert loaded.resident and "loaded in one of the engine's 1 LoRA slots" in loaded.decision
        assert adapters.request("b").unload == (a,)
        assert not jobs.explain(a).resident and jobs.explain(b).resident
        (slots,) = [c for c in fetch_tier_stats(memos).caches if c.name == "lora-slots"]
        assert (slots.requests, slots.hits, slots.loads, slots.unloads) == (2, 0, 2, 1)
        assert (slots.budget, slots.used, slots.policy) == (1, 1, "lru")
    # Prometheus has them too (the latest daemon of this process feeds the collector).
    misses = REGISTRY.get_sample_value(
        "memos_lora_slot_requests_total", {"cache": "lora-slots", "outcome": "miss"}
    )
    assert misses == 2
