"""Two real memosd processes on one real redis-server: shared Watch, leader hand-over."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import redis

from memos.v1 import memcube_pb2 as pb
from memos.v1 import memcube_pb2_grpc as pb_grpc
from tests.cluster.helpers import assert_no_overlap, read_runs
from tests.fixtures.daemon import DaemonProcess

TTL_S = 2.0


def cluster_env(redis_url: str, replica: str) -> dict[str, str]:
    return {
        "MEMOS_REDIS_URL": redis_url,
        "MEMOS_CLUSTER__REPLICA_ID": replica,
        "MEMOS_CLUSTER__LEASE_TTL_S": str(TTL_S),
        "MEMOS_CLUSTER__RENEW_INTERVAL_S": "0.4",
        "MEMOS_CLUSTER__READ_BLOCK_MS": "200",
        "MEMOS_CLUSTER__RETRY_S": "0.2",
        # The cluster-wide jobs (index, compact) race on both replicas every fraction of a second.
        "MEMOS_PLAINTEXT__INDEX_INTERVAL_S": "0.2",
        "MEMOS_PLAINTEXT__COMPACT_INTERVAL_S": "0.3",
    }


def leader(client: redis.Redis) -> str | None:
    owner = client.get("memos:cluster:leader")
    if not isinstance(owner, bytes):
        return None
    return owner.decode().rpartition(":")[0]


def test_watch_across_replicas_and_leader_failover(
    tmp_path: Path, redis_url: str, spawn_daemon: Callable[..., DaemonProcess]
) -> None:
    daemons = {
        name: spawn_daemon(tmp_path / name, env=cluster_env(redis_url, name)) for name in "ab"
    }
    client = redis.Redis.from_url(redis_url)

    # A Watch on B sees a Put made through A.
    received: list[pb.ChangeEvent] = []
    with (
        grpc.insecure_channel(daemons["b"].addr) as ch_b,
        grpc.insecure_channel(daemons["a"].addr) as ch_a,
    ):
        stub_b = pb_grpc.MemCubeServiceStub(ch_b)  # type: ignore[no-untyped-call]
        stream = stub_b.Watch(pb.WatchRequest())

        def consume() -> None:
            with contextlib.suppress(grpc.RpcError):  # the cancel below ends the stream
                received.extend(stream)

        watcher = threading.Thread(target=consume, daemon=True)
        watcher.start()
        time.sleep(0.5)
        stub_a = pb_grpc.MemCubeServiceStub(ch_a)  # type: ignore[no-untyped-call]
        put = stub_a.Put(pb.PutRequest(cube=pb.CubeInput(text="written through replica a")))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not received:
            time.sleep(0.05)
        stream.cancel()
        watcher.join(5)
    assert [(e.id, e.type) for e in received] == [(put.cube.id, pb.CHANGE_TYPE_PUT)]
    assert received[0].cube.plaintext.text == "written through replica a"

    # Exactly one leader; only it runs the cluster-wide jobs.
    first = leader(client)
    assert first in daemons
    time.sleep(1.0)
    runs = read_runs(client)
    assert runs and {r.replica for r in runs} == {first}
    [follower] = set(daemons) - {first}
    assert "cluster leader: this replica" not in daemons[follower].log()

    # SIGKILL the leader: the follower holds the lease within the lease TTL.
    daemons[first].kill()
    killed = time.monotonic()
    while leader(client) != follower and time.monotonic() - killed < 3 * TTL_S:
        time.sleep(0.02)
    handover_s = time.monotonic() - killed
    assert leader(client) == follower
    assert handover_s <= TTL_S + 0.5, f"hand-over took {handover_s:.2f}s, lease is {TTL_S}s"

    time.sleep(1.0)  # the new leader runs the jobs
    runs = read_runs(client)
    assert runs[-1].replica == follower
    assert max(r.fence for r in runs if r.replica == follower) > max(
        r.fence for r in runs if r.replica == first
    )
    assert_no_overlap(runs)  # across both replicas, no job ran twice at once
    assert daemons[follower].terminate() == 0
    assert client.get("memos:cluster:leader") is None  # released on a clean shutdown
