"""Two daemons (real gRPC servers) on one real redis-server share their access log: the
predictor of each learns from both, and the leader evicts from the shared Redis level by
the scheduler's policy over both daemons' accesses."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import redis
from prometheus_client import REGISTRY

from memos.client import JobsClient, MemosClient
from memos.client_activation import ActivationClient
from memos.cluster.accesses import RedisPolicy, chunks_stream, decode_chunk
from memos.config import ActivationSettings
from tests.activation._chunks import make_chunks
from tests.cluster.helpers import fast_settings
from tests.fixtures.daemon import ServerHandle, start_server
from tests.fixtures.redis_server import RedisServer

PREFIX = b"memos:kv:"
SETTINGS = fast_settings()


def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


Spawn = Callable[..., ServerHandle]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Spawn]:
    """``daemon(name, redis_url, **activation)``: an in-process memosd in cluster mode. The
    daemons share one plaintext table, as replicas do."""
    handles: list[ServerHandle] = []

    def spawn(name: str, redis_url: str, **activation: object) -> ServerHandle:
        handle = start_server(
            tmp_path / name,
            tokens=False,
            redis_url=redis_url,
            plaintext={"uri": str(tmp_path / "plaintext")},
            cluster=fast_settings(replica_id=name),
            activation=activation,
        )
        handles.append(handle)
        return handle

    yield spawn
    for handle in handles:
        handle.server.stop(grace_s=1)


def clients(handle: ServerHandle) -> tuple[MemosClient, JobsClient, ActivationClient]:
    client = MemosClient(handle.addr, tenant="acme")
    return client, JobsClient(client), ActivationClient(client)


def test_a_get_on_one_daemon_is_an_access_in_the_others_manager(
    daemon: Spawn, redis_url: str
) -> None:
    b = daemon("b", redis_url)
    on_b, jobs_b, _ = clients(b)
    # Written before A opens the shared table, so that A reads it.
    cube = on_b.put("the quarterly review moved to Thursday")
    a = daemon("a", redis_url)
    on_a, jobs_a, _ = clients(a)
    for handle in (a, b):  # both readers know the stream's tail: they read from there
        assert handle.server.cluster is not None and handle.server.cluster.accesses is not None
        assert handle.server.cluster.accesses.reading.wait(5)

    assert jobs_b.explain(cube.id).accesses == 0
    for _ in range(2):
        on_a.get(cube.id, hint="reuse")
    assert wait_for(lambda: jobs_b.explain(cube.id).accesses == 2, timeout_s=5)
    seen = jobs_b.explain(cube.id)
    assert seen.bit_source == "hint" and seen.latest_bit == 0
    assert [r.op for r in seen.recent] == ["get", "get"]
    assert jobs_a.explain(cube.id).accesses == 2, "A counts its own reads once"


def test_the_leader_evicts_exactly_the_policys_victims_from_redis(
    daemon: Spawn, redis_url: str
) -> None:
    chunks = make_chunks(16, seed=21)
    size = len(chunks[0][1])
    levels = {
        "ram_budget_bytes": 0,  # Redis alone, so that a chunk Redis lost is a miss everywhere
        "disk_budget_bytes": 0,
        "redis_budget_bytes": 6 * size,
        "redis_evict_interval_s": 0.2,
    }
    a, b = daemon("a", redis_url, **levels), daemon("b", redis_url, **levels)
    _, _, kv_a = clients(a)
    _, _, kv_b = clients(b)
    client = redis.Redis.from_url(redis_url)

    def logged() -> list[tuple[bytes, dict[bytes, bytes]]]:
        return cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(chunks_stream(SETTINGS)))

    for i in range(0, len(chunks), 2):
        kv_a.store(chunks[i : i + 2])
        assert len(kv_b.fetch([chunks[0][0]])) <= 1  # B keeps reading the first chunk

    def expected() -> set[bytes]:
        act = ActivationSettings(redis_budget_bytes=6 * size)
        state = RedisPolicy(act.redis_policy, act.redis_budget_bytes, act.redis_policy_items)
        for _, fields in logged():
            state.apply(decode_chunk(fields)[1])
        return set(state.resident)

    def stored() -> set[bytes]:
        return {cast(bytes, k)[len(PREFIX) :] for k in client.scan_iter(match=PREFIX + b"*")}

    assert wait_for(lambda: len(stored()) <= 6 and stored() == expected(), timeout_s=15), (
        "the leader deletes exactly the policy's victims"
    )
    victims = [k for k, _ in chunks if not any(s.endswith(k) for s in stored())]
    assert victims, "the budget forced evictions"
    assert any(s.endswith(chunks[0][0]) for s in stored()), "the chunk B reads stays"
    for kv in (kv_a, kv_b):  # a miss on both daemons, never an error
        assert kv.lookup(victims[:1]).matched == 0
        assert kv.fetch(victims[:1]) == []
    leader = client.get("memos:cluster:leader")
    assert isinstance(leader, bytes)
    holder = {"a": a, "b": b}[leader.decode().rpartition(":")[0]]
    evictions = holder.server.kernel().activation.store.level("redis").stats().evictions  # type: ignore[union-attr]
    assert evictions >= len(victims)


def test_with_redis_down_requests_succeed_and_dropped_accesses_are_counted(
    daemon: Spawn, fresh_redis_server: RedisServer
) -> None:
    a = daemon("a", fresh_redis_server.url)
    on_a, _, _ = clients(a)
    cube = on_a.put("kept while Redis is away")
    fresh_redis_server.stop()
    dropped = metric("memos_cluster_accesses_total", kind="page", outcome="dropped")
    for _ in range(5):
        assert on_a.get(cube.id).id == cube.id
    assert wait_for(
        lambda: (
            metric("memos_cluster_accesses_total", kind="page", outcome="dropped") >= dropped + 5
        )
    )
