"""The leader lease against a real redis-server: one leader, fencing, exclusive job runs."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from memos.cluster.connection import open_client
from memos.cluster.leader import LeaderLease, LostLease, current_fence
from memos.jobs import Jobs, NotLeader
from tests.cluster.helpers import TTL_S, assert_no_overlap, fast_settings, read_runs
from tests.fixtures.redis_server import RedisServer


def lease(url: str, replica: str) -> LeaderLease:
    settings = fast_settings()
    return LeaderLease(open_client(url, settings), replica, settings)


def test_one_leader_and_a_stale_leader_cannot_commit(redis_url: str) -> None:
    a, b = lease(redis_url, "a"), lease(redis_url, "b")
    a.tick()
    b.tick()
    assert a.is_leader() and not b.is_leader()
    assert b.holder == "a"
    stale = a.fence()
    assert stale is not None
    stale.call("SET", "memos:test:result", "from-a-term-1")

    # A stalls (no renewals): its lease expires in Redis and B takes over with a newer token.
    time.sleep(TTL_S + 0.1)
    b.tick()
    fresh = b.fence()
    assert fresh is not None and fresh.token > stale.token
    assert a.fence() is None  # A's own clock already ended its term

    with pytest.raises(LostLease):
        stale.call("SET", "memos:test:result", "from-a-stale")
    with pytest.raises(LostLease):
        stale.check()
    fresh.call("SET", "memos:test:result", "from-b")
    client = redis.Redis.from_url(redis_url)
    assert client.get("memos:test:result") == b"from-b"
    a.tick()  # A's next try finds B's lease
    assert not a.is_leader() and a.holder == "b"
    with pytest.raises(NotLeader, match="b leads"):
        a.run_if_leader("job", lambda: None)


def test_a_job_that_loses_its_lease_mid_run_cannot_commit(redis_url: str) -> None:
    a, b = lease(redis_url, "a"), lease(redis_url, "b")
    a.tick()
    committed: list[str] = []

    def slow_job() -> None:
        time.sleep(TTL_S + 0.1)  # A's process stalls mid-run; nobody renews its lease
        b.tick()  # B takes over
        fence = current_fence()
        assert fence is not None
        fence.call("SET", "memos:test:output", "stale result")
        committed.append("stale result")

    jobs = Jobs()
    jobs.leader = a
    jobs.add("slow", 3600, slow_job, cluster=True)
    run = jobs.run("slow")
    assert not run.ok and "LostLease" in run.detail
    assert committed == []
    client = redis.Redis.from_url(redis_url)
    assert client.get("memos:test:output") is None
    assert b.is_leader()
    [record] = read_runs(client)
    assert record.replica == "a" and record.end_us is None  # started, never committed


def test_racing_replicas_never_run_a_job_twice_at_once(redis_url: str) -> None:
    leases = {name: lease(redis_url, name) for name in ("a", "b")}
    for one in leases.values():
        one.start()
    active = threading.Semaphore(1)
    overlaps: list[str] = []

    def job() -> None:
        # Checked inside this process too: both replicas here share one semaphore.
        if not active.acquire(blocking=False):
            overlaps.append("overlap")
            return
        try:
            time.sleep(0.02)
        finally:
            active.release()

    stop = threading.Event()
    runners: list[threading.Thread] = []
    skipped: dict[str, int] = {"a": 0, "b": 0}
    for name, one in leases.items():
        jobs = Jobs()
        jobs.leader = one
        jobs.add("tick", 3600, job, cluster=True)

        def race(jobs: Jobs = jobs, name: str = name) -> None:
            while not stop.is_set():
                if jobs.run("tick").detail.startswith("skipped: not leader"):
                    skipped[name] += 1

        runners.append(threading.Thread(target=race))
    for t in runners:
        t.start()
    time.sleep(1.0)
    # The leader "crashes": its renewals stop, the lease is not released.
    first = next(n for n, one in leases.items() if one.is_leader())
    leases[first]._stop.set()
    leases[first]._thread.join(5)
    time.sleep(TTL_S + 1.0)
    stop.set()
    for t in runners:
        t.join(10)
    other = "b" if first == "a" else "a"
    leases[other].close()

    runs = read_runs(redis.Redis.from_url(redis_url))
    assert overlaps == []
    assert {r.replica for r in runs} == {"a", "b"}  # both led, one after the other
    assert runs[-1].replica == other and skipped[other] > 0
    assert_no_overlap(runs)


def test_redis_outage_stops_cluster_jobs_everywhere_then_recovers(
    fresh_redis_server: RedisServer,
) -> None:
    a = lease(fresh_redis_server.url, "a")
    a.tick()
    first = a.fence()
    assert first is not None
    ran: list[int] = []
    jobs = Jobs()
    jobs.leader = a
    jobs.add("work", 3600, lambda: ran.append(1), cluster=True)
    assert jobs.run("work").ok and ran == [1]

    fresh_redis_server.stop()
    deadline = time.monotonic() + TTL_S + 1
    while a.is_leader() and time.monotonic() < deadline:
        a.tick()
        time.sleep(0.1)
    assert not a.is_leader()
    run = jobs.run("work")
    assert run.detail.startswith("skipped: not leader") and ran == [1]

    fresh_redis_server.start()  # empty: the lease and the fencing counter are gone
    a.tick()
    again = a.fence()
    assert again is not None and again.token > first.token  # tokens still only grow
    assert jobs.run("work").ok and ran == [1, 1]
