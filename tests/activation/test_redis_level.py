"""The shared Redis level: outages degrade to misses; Redis evicts chunks and nothing else."""

from __future__ import annotations

import time

from memos.tiers.activation.keys import ModelLayout
from memos.tiers.activation.levels import RamLevel, RedisLevel
from memos.tiers.activation.store import ActivationStore
from tests.activation._chunks import make_chunks
from tests.fixtures.redis_server import RedisServer

CHUNKS = make_chunks(4)
BIG = ModelLayout("big", "float32", chunk_tokens=64, layers=4, kv_heads=4, head_dim=16)
KEYS = [k for k, _ in CHUNKS]


def test_outage_is_a_miss_and_recovery_is_automatic(fresh_redis_server: RedisServer) -> None:
    level = RedisLevel(fresh_redis_server.url, retry_after_s=0.2, connect_timeout_s=0.2)
    assert level.put_many(CHUNKS) == [True] * 4
    fresh_redis_server.stop()

    started = time.monotonic()
    assert level.get_many(KEYS) == [None] * 4
    assert level.contains_many(KEYS) == [False] * 4
    assert level.put(*CHUNKS[0]) is False
    assert level.delete(KEYS[0]) is False
    stats = level.stats()
    assert time.monotonic() - started < 2.0, "a dead Redis must not stall requests"
    assert not stats.available and stats.errors >= 1 and stats.put_failures == 1

    fresh_redis_server.restart()  # no persistence: it comes back empty
    time.sleep(0.25)
    assert level.get_many(KEYS[:1]) == [None]
    assert level.put(*CHUNKS[0]) is True
    assert level.get_many(KEYS[:1]) == [CHUNKS[0][1]]
    assert level.stats().available
    level.close()


def test_store_keeps_serving_from_ram_when_redis_stops_mid_run(
    fresh_redis_server: RedisServer,
) -> None:
    store = ActivationStore(
        [RamLevel(1 << 20), RedisLevel(fresh_redis_server.url, retry_after_s=0.2)]
    )
    store.put_many(CHUNKS[:2])
    assert store.lookup(KEYS) == 2
    fresh_redis_server.stop()
    assert [c.key for c in store.fetch(KEYS)] == KEYS[:2]
    assert store.lookup(KEYS) == 2
    assert store.put_many(CHUNKS[2:]) == [1, 1], "RAM accepts what Redis cannot"
    assert [c.key for c in store.fetch(KEYS)] == KEYS
    redis_stats = store.level("redis").stats()
    assert redis_stats.errors >= 1 and not redis_stats.available
    store.close()


def test_redis_evicts_chunks_within_budget_and_spares_other_keys(
    fresh_redis_server: RedisServer,
) -> None:
    client = fresh_redis_server.client()
    client.set("memos:cube:1", "plaintext metadata without a TTL")
    baseline = int(client.info("memory")["used_memory"])
    many = make_chunks(40, seed=3, layout=BIG)
    chunk_bytes = len(many[0][1])
    budget = baseline + (1 << 20) + 10 * chunk_bytes
    level = RedisLevel(fresh_redis_server.url, budget_bytes=budget, configure_server=True)
    for key, blob in many:
        level.put(key, blob)
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-lru"
    assert int(str(client.config_get("maxmemory")["maxmemory"])) == budget
    stats = level.stats()
    assert stats.evictions > 0, "Redis evicted chunks to stay in budget"
    assert stats.used_bytes <= budget
    assert client.get("memos:cube:1") == b"plaintext metadata without a TTL"
    present = level.contains_many([k for k, _ in many])
    assert 0 < sum(present) < len(many)
    assert present[-1], "the newest chunk is resident"
    level.close()


def test_maxmemory_is_a_safety_net_above_the_budget_and_accesses_are_told(
    fresh_redis_server: RedisServer,
) -> None:
    level = RedisLevel(
        fresh_redis_server.url,
        budget_bytes=1 << 20,
        maxmemory_bytes=5 << 20,
        configure_server=True,
    )
    told: list[tuple[str, list[tuple[bytes, int]]]] = []
    level.on_access = lambda op, items: told.append((op, list(items)))
    assert level.put_many(CHUNKS[:2]) == [True, True]
    assert level.get_many([KEYS[0], KEYS[3]]) == [CHUNKS[0][1], None]
    assert level.delete(KEYS[1]) and not level.delete(KEYS[3])
    client = fresh_redis_server.client()
    assert int(str(client.config_get("maxmemory")["maxmemory"])) == 5 << 20
    assert level.stats().budget_bytes == 1 << 20, "the budget is the policy's, not maxmemory"
    assert told == [
        ("write", [(k, len(blob)) for k, blob in CHUNKS[:2]]),
        ("hit", [(KEYS[0], len(CHUNKS[0][1]))]),
        ("delete", [(KEYS[1], 0)]),
    ]
    level.count_policy_evictions(3)
    assert level.stats().evictions == 3, "no maxmemory eviction yet, 3 by the policy"
    level.close()


def test_lookup_of_n_keys_is_one_round_trip(fresh_redis_server: RedisServer) -> None:
    # A private server: the session-shared one may hold other tests' connections and traffic.
    level = RedisLevel(fresh_redis_server.url)
    client = level._client
    connections = int(client.info("clients")["connected_clients"])  # the level's one, too
    level.put_many(CHUNKS)
    level.get_many(KEYS)

    def calls() -> dict[str, int]:
        stats = client.info("commandstats")
        return {
            name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
            for name in ("exists", "mget")
        }

    before = calls()
    level.contains_many(KEYS)
    level.get_many(KEYS)
    after = calls()
    # One pipeline of 4 EXISTS, then one MGET, over the level's one connection: no other
    # connection was opened for them (the fixture's own may since have closed).
    assert {name: after[name] - before[name] for name in after} == {"exists": 4, "mget": 1}
    assert int(client.info("clients")["connected_clients"]) <= connections
    level.close()
