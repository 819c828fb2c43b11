"""The event bridge against a real redis-server: Watch-level events cross replicas."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import cast

import pytest

from memos.cluster.connection import open_client
from memos.cluster.stream import EventBridge
from memos.config import ClusterSettings
from memos.cube import MemCube, PlaintextPayload, utcnow
from memos.events import ChangeEvent, ChangeType, EventHub, Subscription, SubscriptionLost
from memos.ids import new_id
from tests.cluster.helpers import fast_settings
from tests.fixtures.redis_server import RedisServer


def event(text: str, tenant: str = "acme", change: ChangeType = ChangeType.PUT) -> ChangeEvent:
    now = utcnow()
    cube = MemCube(
        id=new_id(),
        tenant=tenant,
        created_at=now,
        updated_at=now,
        tags=("t",),
        plaintext=PlaintextPayload(text=text),
    )
    return ChangeEvent(change, cube, now)


def drain(sub: Subscription, want: int, timeout_s: float = 5.0) -> list[ChangeEvent]:
    got: list[ChangeEvent] = []
    deadline = time.monotonic() + timeout_s
    for item in sub.events(poll_s=0.05):
        if item is not None:
            got.append(item)
        if len(got) >= want or time.monotonic() > deadline:
            break
    return got


class Replicas:
    def __init__(self, url: str, settings: ClusterSettings) -> None:
        self.hubs = {name: EventHub() for name in ("a", "b")}
        self.bridges = {
            name: EventBridge(
                open_client(url, settings),
                open_client(url, settings, blocking_ms=settings.read_block_ms),
                hub,
                name,
                settings,
            )
            for name, hub in self.hubs.items()
        }
        for bridge in self.bridges.values():
            bridge.start()

    def close(self) -> None:
        for bridge in self.bridges.values():
            bridge.close()


@pytest.fixture
def replicas(redis_url: str) -> Iterator[Replicas]:
    r = Replicas(redis_url, fast_settings())
    time.sleep(0.3)  # the readers find the stream's tail
    yield r
    r.close()


def test_a_change_on_a_reaches_watchers_on_b_once(replicas: Replicas) -> None:
    on_a = replicas.hubs["a"].subscribe("acme")
    on_b = replicas.hubs["b"].subscribe("acme")
    other_tenant = replicas.hubs["b"].subscribe("globex")
    sent = event("the launch moved to Friday", change=ChangeType.UPDATE)
    replicas.hubs["a"].publish(sent)

    [seen] = drain(on_b, 1)
    assert seen.type is ChangeType.UPDATE and seen.cube == sent.cube
    assert abs((seen.at - sent.at).total_seconds()) < 1e-5
    time.sleep(0.5)  # room for a wrong echo of A's own event back into A
    assert [e.cube.id for e in drain(on_a, 2, timeout_s=0.3)] == [sent.cube.id]
    assert drain(other_tenant, 1, timeout_s=0.3) == []
    assert replicas.bridges["a"].relayed == 0 and replicas.bridges["b"].relayed == 1


def test_a_reader_overrun_by_trimming_cuts_its_watches_off(redis_url: str) -> None:
    settings = fast_settings(stream_maxlen=100)
    hub_a, hub_b = EventHub(), EventHub()
    client = open_client(redis_url, settings)
    a = EventBridge(client, open_client(redis_url, settings, blocking_ms=100), hub_a, "a", settings)
    b = EventBridge(client, open_client(redis_url, settings, blocking_ms=100), hub_b, "b", settings)
    a.start()
    try:
        on_b = hub_b.subscribe("acme")
        b.position = b"0-0"  # B's reader is paused at the start of the stream ...
        for i in range(1000):
            hub_a.publish(event(f"fact {i}"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and client.xlen(b.stream) < 100:
            time.sleep(0.05)
        time.sleep(0.5)
        # Approximate trimming drops whole macro nodes only: the length is not exact.
        assert client.xlen(b.stream) < 1000
        b.start()  # ... and resumes after the entries it needed were trimmed
        with pytest.raises(SubscriptionLost, match="trimmed past"):
            drain(on_b, 10_000, timeout_s=5)
        assert b.overruns >= 1
        # B relays what is left of the backlog to new watches too: let it reach the tail.
        tail = cast(list[tuple[bytes, object]], client.xrevrange(b.stream, count=1))[0][0]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b.position != tail:
            time.sleep(0.02)
        assert b.position == tail
        time.sleep(0.1)  # the position moves just before that last entry is relayed
        late = hub_b.subscribe("acme")  # a new Watch works, from the current tail on
        sent = event("after the overrun")
        hub_a.publish(sent)
        assert [e.cube.id for e in drain(late, 1)] == [sent.cube.id]
    finally:
        a.close()
        b.close()


def test_local_events_survive_a_redis_outage_and_cross_after_it(
    fresh_redis_server: RedisServer,
) -> None:
    r = Replicas(fresh_redis_server.url, fast_settings())
    try:
        time.sleep(0.3)
        on_a = r.hubs["a"].subscribe("acme")
        on_b = r.hubs["b"].subscribe("acme")
        fresh_redis_server.stop()
        during = event("written while Redis was down")
        r.hubs["a"].publish(during)
        assert [e.cube.id for e in drain(on_a, 1)] == [during.cube.id]  # local Watch unaffected
        fresh_redis_server.start()
        after = event("written after Redis came back")
        r.hubs["a"].publish(after)
        # The outbox kept the event from the outage and sent it when Redis returned.
        got = drain(on_b, 2, timeout_s=10)
        assert [e.cube.id for e in got] == [during.cube.id, after.cube.id]
    finally:
        r.close()
