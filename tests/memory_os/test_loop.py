"""The memory OS loop end to end: a multi-tenant session workload replayed through gRPC
against a daemon with small budgets and the tiny engine model, jobs triggered over gRPC."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from memos.cli.app import app
from memos.client import JobsClient, MemosClient
from memos.client_activation import ActivationClient
from memos.cube import State
from memos.errors import NotFound, PermissionDenied
from tests.fixtures.daemon import ServerHandle, start_server
from tests.fixtures.tiny_model import TINY_CHUNK_TOKENS

TENANTS = ("acme", "globex")
TOPICS = 10
_VOCAB_TEXT = (
    "apple breeze candle desert engine falcon garden harbor island jungle kettle lantern "
    "meadow needle orchard pepper quartz river saddle timber umbrella valley walnut yarrow "
    "zephyr anchor bakery canyon dolphin ember forest glacier hollow ivory jasmine kayak "
    "lemon marble nectar oyster pillow quiver ribbon summit thunder urchin violet willow "
    "yonder zinnia acorn beacon cobalt dune eagle fjord granite hazel iris juniper koala "
    "lilac mango nutmeg olive pebble quince raven sparrow tulip upland velvet wander "
    "badger cedar dahlia elm fern gecko heron indigo jade kelp lotus maple nickel onyx "
    "parrot quail reef sage tundra unicorn vapor wren yucca zebra almond basil clover "
    "daisy egret flint ginger hemlock iceberg jackal kiwi lynx mist newt otter plum "
    "quokka rowan sorrel thistle umber vine walrus yak zest amber birch coral drift "
    "elk fig grove hawk inlet jay knoll larch moss north oak pine quarry rush sand tide "
    "urn vale wolf yew zenith arch bloom crest dew echo flame gust haze isle"
)
VOCAB = _VOCAB_TEXT.split()
WORDS_PER_TOPIC = 14


def topic_text(t: int) -> str:
    words = VOCAB[t * WORDS_PER_TOPIC : (t + 1) * WORDS_PER_TOPIC]
    half = len(words) // 2
    return (
        " ".join(words[:half]).capitalize()
        + " are remembered together. "
        + " ".join(words[half:]).capitalize()
        + " complete the record of this memory."
    )


@pytest.fixture
def daemon(tmp_path: Path, tiny_model_dir: Path) -> Iterator[ServerHandle]:
    handle = start_server(
        tmp_path / "data",
        tokens=True,
        engine={"model_path": tiny_model_dir},
        activation={"chunk_tokens": TINY_CHUNK_TOKENS},
        # Room for five of the ~50-token cubes (estimated), for both tenants together.
        manager={"activated_budget_tokens": 260, "activated_items": 4},
        # The test triggers every job itself; long intervals keep the scheduler out of it.
        jobs={
            "lifecycle_interval_s": 3600,
            "fuse_interval_s": 3600,
            "migrate_interval_s": 3600,
            "retrain_interval_s": 3600,
            "fuse_similarity": 0.9,
            "fuse_lexical": 0.6,
        },
    )
    yield handle
    handle.server.stop(grace_s=1)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def replay(
    clients: dict[str, MemosClient],
    ids: dict[str, list[str]],
    topics: list[int],
    rng: random.Random,
    sessions: int,
    finale: list[int],
) -> None:
    """Sessions: each picks a topic (Zipf over ``topics``) and reads it in a burst, by id or
    by a search for its words; the tenants' sessions interleave. Ends on ``finale``."""
    weights = [1.0 / (r + 1) ** 1.2 for r in range(len(topics))]
    for _ in range(sessions):
        tenant = rng.choice(TENANTS)
        t = rng.choices(topics, weights)[0]
        for _ in range(rng.randint(1, 4)):
            read(clients[tenant], ids[tenant][t], t, rng)
    for tenant in TENANTS:
        for t in finale:
            read(clients[tenant], ids[tenant][t], t, rng)


def read(client: MemosClient, cube_id: str, t: int, rng: random.Random) -> None:
    if rng.random() < 0.5:
        client.get(cube_id)
    else:
        (hit,) = client.search(topic_text(t), k=1)
        assert hit.cube.id == cube_id


def tier(jobs: JobsClient, cube_id: str) -> str:
    return jobs.explain(cube_id).tier


def test_the_jobs_place_fuse_and_expire_memories_and_lose_none(daemon: ServerHandle) -> None:
    clients = {t: MemosClient(daemon.addr, token=daemon.tokens[t]) for t in TENANTS}
    admin = JobsClient(MemosClient(daemon.addr, token=daemon.tokens["admin"]))
    jobs = {t: JobsClient(c) for t, c in clients.items()}
    rng = random.Random(7)
    before = {
        "requests": metric(
            "memos_cache_requests_total", cache="activated", level="set", outcome="hit"
        ),
        "promotions": metric("memos_migrations_total", direction="promote", outcome="ok"),
        "demotions": metric("memos_migrations_total", direction="demote", outcome="ok"),
        "fused": metric("memos_fused_cubes_total"),
        "swept": metric("memos_swept_cubes_total"),
        "runs": metric("memos_job_runs_total", job="migrate", outcome="ok"),
    }
    ids = {
        tenant: [c.put(topic_text(t), tags=[f"topic-{t}"]).id for t in range(TOPICS)]
        for tenant, c in clients.items()
    }
    acked = {tenant: list(v) for tenant, v in ids.items()}

    # The jobs are listed, and only an admin may run one.
    names = {j.name for j in jobs["acme"].list_jobs()}
    assert {"expire", "fuse", "migrate", "retrain", "index", "compact"} <= names
    with pytest.raises(PermissionDenied):
        jobs["acme"].run_job("migrate")

    # Phase 1: topics 0 and 1 are hot.
    replay(clients, ids, list(range(TOPICS)), rng, sessions=80, finale=[0, 1])
    run = admin.run_job("migrate")
    assert run.ok and run.detail.startswith("promoted "), run.detail
    for tenant in TENANTS:
        for t in (0, 1):
            e = jobs[tenant].explain(ids[tenant][t])
            assert e.tier == "plaintext+activation", (tenant, t, run.detail, e.decision)
    phase1_kv = {
        tenant: [jobs[tenant].explain(ids[tenant][t]).activation_ids[0] for t in (0, 1)]
        for tenant in TENANTS
    }

    # Phase 2: the sessions move on to topics 3..9; 0 and 1 go cold.
    replay(clients, ids, list(range(3, TOPICS)), rng, sessions=80, finale=[5, 6])
    assert admin.run_job("migrate").ok
    for tenant in TENANTS:
        for t in (5, 6):
            e = jobs[tenant].explain(ids[tenant][t])
            assert e.tier == "plaintext+activation", (tenant, t, run.detail, e.decision)
        for t, kv_id in zip((0, 1), phase1_kv[tenant], strict=True):
            e = jobs[tenant].explain(ids[tenant][t])
            assert e.tier == "plaintext" and not e.resident, (tenant, t, e.decision)
            assert "evicted by robust-mark0" in e.decision
            assert clients[tenant].get(kv_id).state == State.ARCHIVED
            assert clients[tenant].get(ids[tenant][t]).state == State.ACTIVE

    # An engine loads a promoted cube's KV: the activation levels count the hits.
    kv_cube = clients["acme"].get(jobs["acme"].explain(ids["acme"][5]).activation_ids[0])
    assert kv_cube.activation is not None
    keys = [bytes.fromhex(k) for k in kv_cube.activation.chunk_keys]
    assert len(ActivationClient(clients["acme"]).fetch(keys)) == len(keys)

    # A near-duplicate of topic 2 is fused with it: one successor naming both.
    acme = clients["acme"]
    dup = acme.put(topic_text(2) + " Also noted on a second occasion.", tags=["dup"])
    acked["acme"].append(dup.id)
    fused = admin.run_job("fuse")
    assert fused.ok and fused.detail.startswith("1 fused cubes from 2 archived"), fused.detail
    original = acme.get(ids["acme"][2])
    assert original.state == State.ARCHIVED and acme.get(dup.id).state == State.ARCHIVED
    (hit,) = acme.search(topic_text(2), k=1)
    assert set(hit.cube.parent_ids) == {ids["acme"][2], dup.id}
    assert set(hit.cube.tags) == {"topic-2", "dup"}
    assert "second occasion" in hit.cube.text

    # Memories with a TTL disappear once the expire job runs.
    globex = clients["globex"]
    short = [globex.put(f"A fleeting note {i} about lunch.", ttl_seconds=1).id for i in (1, 2)]
    globex.get(short[0])
    time.sleep(1.2)
    swept = admin.run_job("expire")
    assert swept.ok and swept.detail.startswith("removed 2 "), swept.detail
    for cube_id in short:
        with pytest.raises(NotFound):
            globex.history(cube_id)

    # The predictor refits on what it saw.
    assert admin.run_job("retrain").ok

    # No acknowledged plaintext is lost: active, or archived with an active successor.
    for tenant, client in clients.items():
        successors = [h.cube for h in client.search("remembered together record memory", k=50)]
        for cube_id in acked[tenant]:
            cube = client.get(cube_id)
            assert cube.state in (State.ACTIVE, State.ARCHIVED)
            if cube.state == State.ARCHIVED:
                assert any(cube_id in s.parent_ids for s in successors), cube_id

    # What the jobs did is in the metrics.
    hits = metric("memos_cache_requests_total", cache="activated", level="set", outcome="hit")
    assert hits > before["requests"]
    promoted = metric("memos_migrations_total", direction="promote", outcome="ok")
    assert promoted - before["promotions"] >= 8
    demoted = metric("memos_migrations_total", direction="demote", outcome="ok")
    assert demoted - before["demotions"] >= 4
    assert metric("memos_fused_cubes_total") - before["fused"] == 2
    assert metric("memos_swept_cubes_total") - before["swept"] == 2
    assert metric("memos_job_runs_total", job="migrate", outcome="ok") - before["runs"] == 2
    assert metric("memos_prefill_tokens_total") > 0
    kv_levels = [
        sample
        for family in REGISTRY.collect()
        if family.name == "memos_kv_level_requests"
        for sample in family.samples
    ]
    assert any(s.labels["outcome"] == "hit" and s.value > 0 for s in kv_levels), kv_levels

    # And from the command line.
    runner = CliRunner(env={"MEMOS_ADDR": None, "MEMOS_TOKEN": None, "MEMOS_TENANT": None})
    flags = ["--addr", daemon.addr]
    ls = runner.invoke(app, ["jobs", "ls", *flags, "--token", daemon.tokens["acme"]])
    assert ls.exit_code == 0 and "migrate" in ls.output, ls.output
    out = runner.invoke(
        app, ["explain", ids["acme"][5], *flags, "--token", daemon.tokens["acme"], "--json"]
    )
    assert out.exit_code == 0, out.output
    assert '"tier": "plaintext+activation"' in out.output or '"plaintext+activation"' in out.output
    ran = runner.invoke(app, ["jobs", "run", "retrain", *flags, "--token", daemon.tokens["admin"]])
    assert ran.exit_code == 0 and "retrain" in ran.output, ran.output
    for c in clients.values():
        c.close()
