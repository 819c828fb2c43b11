"""The shared access log and the Redis level's evictor, against a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import cast

import pytest
import redis
from prometheus_client import REGISTRY

from memos.cluster.accesses import (
    AccessLog,
    EvictorRun,
    RedisEvictor,
    RedisPolicy,
    chunks_stream,
    decode_chunk,
)
from memos.cluster.connection import open_client
from memos.cluster.leader import _CURRENT, LeaderLease, LostLease
from memos.config import ActivationSettings, ClusterSettings, ManagerSettings
from memos.coretrieval import CoRetrieval
from memos.manager import Hint, PageRequest, TierManager
from memos.tiers.activation.levels import RedisLevel
from tests.activation._chunks import make_chunks
from tests.cluster.helpers import fast_settings
from tests.fixtures.redis_server import RedisServer
from tests.plaintext.helpers import cube

PREFIX = b"memos:kv:"


def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Replica:
    """One replica's share of the log: a manager, a Redis level, its own clients."""

    def __init__(self, url: str, name: str, settings: ClusterSettings) -> None:
        self.manager = TierManager(ManagerSettings())
        self.level = RedisLevel(url, retry_after_s=0.1, connect_timeout_s=0.2)
        self.ops = open_client(url, settings)
        self.reader = open_client(url, settings, blocking_ms=settings.read_block_ms)
        self.log = AccessLog(self.ops, self.reader, name, settings)
        self.log.attach(self.manager, self.level)
        self.log.start()
        assert self.log.reading.wait(5)

    def close(self) -> None:
        self.log.close()
        self.level.close()
        self.ops.close()
        self.reader.close()


@pytest.fixture
def pair(redis_url: str) -> Iterator[tuple[Replica, Replica]]:
    settings = fast_settings()
    a, b = Replica(redis_url, "a", settings), Replica(redis_url, "b", settings)
    yield a, b
    a.close()
    b.close()


def count(manager: TierManager, tenant: str, cube: str) -> int:
    page = manager.decide(tenant, cube).page
    return page.count if page is not None else 0


def test_page_requests_reach_the_other_replicas_manager_once(
    pair: tuple[Replica, Replica],
) -> None:
    a, b = pair
    applied = metric("memos_cluster_accesses_total", kind="page", outcome="applied")
    for _ in range(3):
        a.manager.request_page(PageRequest("acme", "cube-1", 40, None, "get", Hint.DONE))
    b.manager.request_page(PageRequest("acme", "cube-2", 10, None, "search"))

    assert wait_for(lambda: count(b.manager, "acme", "cube-1") == 3)
    assert wait_for(lambda: count(a.manager, "acme", "cube-2") == 1)
    time.sleep(0.3)  # an echo, if there were one, would have come back by now
    assert count(a.manager, "acme", "cube-1") == 3, "a replica skips its own entries"
    assert count(b.manager, "acme", "cube-2") == 1
    page = b.manager.decide("acme", "cube-1").page
    assert page is not None and page.size == 40 and page.source == "hint" and page.bit == 1
    assert [r.op for r in page.recent] == ["get"] * 3
    assert a.log.applied == 1 and b.log.applied == 3
    assert metric("memos_cluster_accesses_total", kind="page", outcome="applied") == applied + 4


def test_search_sets_reach_every_replicas_co_retrieval_tracker_once(redis_url: str) -> None:
    """The leader fuses what searches return together; with the sets shared, it counts the
    searches made on every replica, not only its own."""
    settings = fast_settings()
    trackers = {name: CoRetrieval(min_count=2, max_set=4) for name in ("a", "b")}
    managers = {name: TierManager(ManagerSettings()) for name in trackers}
    logs: dict[str, AccessLog] = {}
    clients: list[redis.Redis] = []
    for name, manager in managers.items():
        manager.on_search = trackers[name].observe  # as the daemon wires it, before attach
        ops = open_client(redis_url, settings)
        reader = open_client(redis_url, settings, blocking_ms=settings.read_block_ms)
        clients += [ops, reader]
        logs[name] = AccessLog(ops, reader, name, settings)
        logs[name].attach(manager, None)
        logs[name].start()
        assert logs[name].reading.wait(5)
    try:
        first, second = cube("alpha"), cube("beta")
        managers["a"].record("acme", [first, second], "search")
        managers["a"].record("acme", [second, first], "search")
        managers["b"].record("acme", [first, second], "search")
        managers["b"].record("acme", [first], "search")  # one cube: no set
        members = sorted([first.id, second.id])
        assert wait_for(lambda: trackers["a"].count("acme", members) == 3)
        assert wait_for(lambda: trackers["b"].count("acme", members) == 3)
        time.sleep(0.3)  # an echo, if there were one, would have come back by now
        assert trackers["a"].count("acme", members) == 3
        assert trackers["b"].count("acme", members) == 3
        assert logs["a"].applied_sets == 1 and logs["b"].applied_sets == 2
        assert [tuple(m) for m in trackers["b"].due("acme")] == [tuple(members)]
    finally:
        for name, log in logs.items():
            log.close()
            assert managers[name].on_search == trackers[name].observe  # unhooked on close
        for client in clients:
            client.close()


def test_chunk_accesses_are_published_with_their_sizes(
    pair: tuple[Replica, Replica], redis_url: str
) -> None:
    a, _ = pair
    chunks = make_chunks(3)
    a.level.put_many(chunks)
    a.level.get_many([chunks[0][0], b"absent-key"])
    a.level.delete(chunks[1][0])
    client = redis.Redis.from_url(redis_url)
    stream = chunks_stream(fast_settings())
    assert wait_for(lambda: client.xlen(stream) == 5)
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(stream))
    seen = [decode_chunk(fields) for _, fields in entries]
    assert {replica for replica, _ in seen} == {"a"}
    assert [(x.op, x.key, x.size) for _, x in seen] == [
        *(("write", key, len(blob)) for key, blob in chunks),
        ("hit", chunks[0][0], len(chunks[0][1])),
        ("delete", chunks[1][0], 0),
    ]


def test_redis_down_requests_succeed_and_accesses_are_dropped_and_counted(
    fresh_redis_server: RedisServer,
) -> None:
    replica = Replica(fresh_redis_server.url, "a", fast_settings())
    try:
        fresh_redis_server.stop()
        dropped = metric("memos_cluster_accesses_total", kind="page", outcome="dropped")
        started = time.monotonic()
        for i in range(50):
            replica.manager.request_page(PageRequest("acme", f"c{i}", 5, None, "get"))
        assert time.monotonic() - started < 2.0, "a request never waits on Redis"
        assert count(replica.manager, "acme", "c0") == 1, "requests count locally"
        assert wait_for(lambda: replica.log.dropped["page"] == 50)
        assert replica.log.published["page"] == 0
        assert (
            metric("memos_cluster_accesses_total", kind="page", outcome="dropped") == dropped + 50
        )
    finally:
        replica.close()


# ---------------------------------------------------------------------- the evictor


def activation(budget: int, policy: str = "robust-mark0") -> ActivationSettings:
    return ActivationSettings(redis_budget_bytes=budget, redis_policy=policy, redis_policy_items=8)


def leader_of(url: str, name: str, settings: ClusterSettings) -> LeaderLease:
    lease = LeaderLease(open_client(url, settings), name, settings)
    lease.tick()
    return lease


def run(lease: LeaderLease, evictor: RedisEvictor) -> EvictorRun:
    return cast(EvictorRun, lease.run_if_leader("redis-evict", evictor.run))


def replay(client: redis.Redis, settings: ClusterSettings, act: ActivationSettings) -> RedisPolicy:
    """The policy's state after every logged chunk access, computed here independently."""
    state = RedisPolicy(act.redis_policy, act.redis_budget_bytes, act.redis_policy_items)
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(chunks_stream(settings)))
    for _, fields in entries:
        state.apply(decode_chunk(fields)[1])
    return state


def stored(client: redis.Redis) -> set[bytes]:
    return {cast(bytes, k)[len(PREFIX) :] for k in client.scan_iter(match=PREFIX + b"*")}


@pytest.mark.parametrize("policy", ["robust-mark0", "lru"])
def test_the_leaders_evictor_deletes_exactly_the_policys_victims(
    pair: tuple[Replica, Replica], redis_url: str, policy: str
) -> None:
    a, b = pair
    settings = fast_settings()
    chunks = make_chunks(24, seed=5)
    size = len(chunks[0][1])
    act = activation(8 * size, policy)
    lease = leader_of(redis_url, "a", settings)
    evictor = RedisEvictor(a.ops, a.level, settings, act)
    assert run(lease, evictor).rebuilt  # a new term: built from an empty Redis
    client = redis.Redis.from_url(redis_url)

    # Both replicas write and read; some chunks are read again and again.
    hot = [k for k, _ in chunks[:3]]
    total = 0
    for i, item in enumerate(chunks):
        (a if i % 2 else b).level.put_many([item])
        hits = b.level.get_many(hot)
        total += 1 + sum(blob is not None for blob in hits)
    assert wait_for(lambda: client.xlen(chunks_stream(settings)) == total)

    done = run(lease, evictor)
    assert not done.rebuilt and done.replayed == total
    expected = replay(client, settings, act)
    assert set(expected.resident) == stored(client), "exactly the policy's victims are gone"
    assert done.deleted == len(chunks) - len(expected.resident) > 0
    assert sum(expected.resident.values()) <= act.redis_budget_bytes
    assert set(hot) <= stored(client), "the chunks read again and again stay"
    victim = next(k for k, _ in chunks if k not in expected.resident)
    assert a.level.get_many([victim]) == [None] and b.level.get_many([victim]) == [None]
    assert a.level.stats().errors == 0 and b.level.stats().errors == 0
    lease.close()


def test_a_new_leader_rebuilds_the_policy_from_the_retained_window(
    pair: tuple[Replica, Replica], redis_url: str
) -> None:
    a, b = pair
    settings = fast_settings()
    chunks = make_chunks(20, seed=9)
    act = activation(6 * len(chunks[0][1]))
    first = leader_of(redis_url, "a", settings)
    evict_a = RedisEvictor(a.ops, a.level, settings, act)
    run(first, evict_a)
    for i, item in enumerate(chunks):
        a.level.put_many([item])
        b.level.get_many([chunks[i // 2][0]])
    client = redis.Redis.from_url(redis_url)
    assert wait_for(lambda: client.xlen(chunks_stream(settings)) == 2 * len(chunks))
    run(first, evict_a)
    kept = set(stored(client))
    assert evict_a.state is not None and set(evict_a.state.resident) == kept

    assert 0 < len(kept) < len(chunks), "the window holds writes of chunks evicted since"
    stale = first.fence()
    assert stale is not None

    first.close()  # a clean hand-over: the lease is released
    second = leader_of(redis_url, "b", settings)
    evict_b = RedisEvictor(b.ops, b.level, settings, act)
    took_over = run(second, evict_b)
    assert took_over.rebuilt and took_over.deleted == 0, "the new leader evicts nothing more"
    assert evict_b.state is not None and set(evict_b.state.resident) == kept
    assert stored(client) == kept

    # More traffic; the deposed leader's evictor, still running its old term, cannot delete.
    more = make_chunks(6, seed=10)
    a.level.put_many(more)
    assert wait_for(lambda: client.xlen(chunks_stream(settings)) == 2 * len(chunks) + len(more))
    reset = _CURRENT.set(stale)
    try:
        with pytest.raises(LostLease):
            evict_a.run()
    finally:
        _CURRENT.reset(reset)
    assert stored(client) == kept | {k for k, _ in more}
    done = run(second, evict_b)
    assert done.deleted == len(more)
    assert stored(client) == set(replay(client, settings, act).resident)
    second.close()


def test_a_unit_size_policy_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="sized policy"):
        RedisPolicy("marker", 1 << 20, 8)
