"""Cubes retrieved together again and again become one activation cube, in canonical order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memos.cli.top import fetch_tier_stats
from memos.client import JobsClient, MemosClient
from memos.client_activation import ActivationClient
from memos.coretrieval import META_FUSED_VERSIONS, CoRetrieval, fused_text
from memos.cube import Kind, State
from memos.engines.hf import HFEngine
from memos.integrations.vllm.prompts import build_prompt
from memos.tiers.activation.keys import none_hash
from tests.fixtures.daemon import ServerHandle, start_server
from tests.fixtures.tiny_model import TINY_CHUNK_TOKENS

TEXTS = (
    "The staging cluster runs in eu-west-1 and is rebuilt every night at two.",
    "Staging deploys need a green build and a second reviewer on the change.",
    "A lunch menu for the team offsite: soup, bread, cheese and apples.",
)


def test_the_tracker_counts_sets_per_tenant_and_forgets_rare_ones() -> None:
    t = CoRetrieval(min_count=3, max_set=3, capacity=4)
    for _ in range(3):
        t.observe("acme", ["b", "a"])
    t.observe("acme", ["a", "b", "c", "d"])  # larger than max_set: not tracked
    t.observe("acme", ["a"])  # one cube: nothing retrieved together
    t.observe("globex", ["a", "b"])
    assert t.due("acme") == [("a", "b")]
    assert t.due("globex") == []
    assert t.count("acme", ["b", "a"]) == 3
    for i in range(4):  # past capacity: counts halve, sets seen once go
        t.observe("acme", [f"x{i}", f"y{i}"])
    assert t.count("acme", ["a", "b"]) == 1
    assert t.counts()[0] <= 4


@pytest.fixture
def daemon(tmp_path: Path, tiny_model_dir: Path) -> Iterator[ServerHandle]:
    handle = start_server(
        tmp_path / "data",
        tokens=True,
        engine={"model_path": tiny_model_dir},
        activation={"chunk_tokens": TINY_CHUNK_TOKENS},
        jobs={
            "lifecycle_interval_s": 3600,
            "fuse_interval_s": 3600,
            "migrate_interval_s": 3600,
            "retrain_interval_s": 3600,
            "coretrieval_interval_s": 3600,
            "coretrieval_min_count": 3,
        },
    )
    yield handle
    handle.server.stop(grace_s=1)


def test_a_set_searched_together_becomes_one_activation_cube_and_the_originals_stay(
    daemon: ServerHandle, tiny_model_dir: Path
) -> None:
    with (
        MemosClient(daemon.addr, token=daemon.tokens["acme"]) as acme,
        MemosClient(daemon.addr, token=daemon.tokens["admin"]) as ops,
    ):
        admin = JobsClient(ops)
        cubes = [
            acme.put(text, tags=["staging"] if i < 2 else ["food"]) for i, text in enumerate(TEXTS)
        ]
        pair = {cubes[0].id, cubes[1].id}
        for _ in range(2):
            hits = acme.search("how does staging work?", k=2, tags=["staging"])
            assert {h.cube.id for h in hits} == pair
        # Seen twice: below the threshold of three, nothing is built; the run halves the count.
        assert admin.run_job("fuse-coretrieved").detail.startswith("built 0 ")
        search_pair(acme, 2)  # 1 + 2 = 3
        run = admin.run_job("fuse-coretrieved")
        assert run.ok and run.detail.startswith("built 1 fused"), run.detail

        fused = [
            c
            for c in acme.list(kind=Kind.ACTIVATION)
            if META_FUSED_VERSIONS in c.metadata and c.state == State.ACTIVE
        ]
        assert len(fused) == 1
        cube = fused[0]
        # Provenance: the plaintext cubes, in canonical (id) order.
        assert cube.parent_ids == tuple(sorted(pair))
        assert cube.metadata[META_FUSED_VERSIONS] == "1,1"
        # Its KV covers exactly the memory part of a prompt that holds both cubes, whichever
        # order the search returned them in: an engine derives the same keys.
        kv = ActivationClient(acme)
        stats = kv.stats()
        engine = HFEngine.load(
            tiny_model_dir,
            chunk_tokens=TINY_CHUNK_TOKENS,
            none_hash=none_hash(stats.none_hash_seed),
        )
        by_id = {c.id: c for c in cubes}
        text = build_prompt("", [by_id[i] for i in reversed(sorted(pair))], "")
        assert text == fused_text([by_id[i] for i in sorted(pair)])
        keys = engine.keys(engine.tokenize(text), cache_salt=stats.cache_salt)
        assert cube.activation is not None and len(keys) > 1
        assert tuple(k.hex() for k in keys) == cube.activation.chunk_keys
        assert kv.lookup(keys).matched == len(keys)
        # The originals are untouched.
        for c in cubes:
            assert acme.get(c.id).state == State.ACTIVE and acme.get(c.id).version == 1
        tiers = fetch_tier_stats(acme)
        assert tiers.fused_sets == 1 and tiers.coretrieved_sets >= 1

        # Running again builds nothing new; a parent that changes makes the fused cube stale:
        # it is dropped, and the set (still retrieved together) is built again from the new
        # version.
        assert "built 0 fused" in admin.run_job("fuse-coretrieved").detail
        acme.update(cubes[1].id, text="Since May, s" + TEXTS[1][1:])
        search_pair(acme, 3)
        again = admin.run_job("fuse-coretrieved")
        assert again.detail.startswith("built 1 fused"), again.detail
        assert "1 stale or cold dropped" in again.detail, again.detail
        assert acme.get(cube.id).state == State.ARCHIVED
        (rebuilt,) = [
            c for c in acme.list(kind=Kind.ACTIVATION) if META_FUSED_VERSIONS in c.metadata
        ]
        assert rebuilt.id != cube.id and rebuilt.metadata[META_FUSED_VERSIONS] == "1,2"
        # The old chain's chunks after the changed text are gone; the shared prefix is kept.
        assert 0 < kv.lookup(keys).matched < len(keys)

        # No longer retrieved together: after a few runs the fused cube is dropped as cold.
        runs = [admin.run_job("fuse-coretrieved").detail for _ in range(3)]
        assert any("1 stale or cold dropped" in r for r in runs), runs
        assert acme.get(rebuilt.id).state == State.ARCHIVED
        assert fetch_tier_stats(acme).fused_sets == 0
        for c in cubes:  # the plaintext originals were never touched by any of it
            assert acme.get(c.id).state == State.ACTIVE


def search_pair(client: MemosClient, times: int) -> None:
    for _ in range(times):
        client.search("staging deploys", k=2, tags=["staging"])
