"""Two memosd processes share one Redis over gRPC: A migrates, B serves A's chunks; with Redis
stopped, each keeps serving what its own RAM and disk hold."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from memos.client import MemosClient
from memos.client_activation import ActivationClient
from memos.engines.hf import HFEngine
from memos.tiers.activation.chunk import decode
from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.redis_server import RedisServer

TEXT = "Replicas share what one of them prefilled: the second daemon reuses the first's KV. " * 2
LATER = "Stored on B while Redis is down, this one stays in B's own RAM and on B's own disk. " * 2


@dataclass
class Pair:
    memos_a: MemosClient
    kv_a: ActivationClient
    memos_b: MemosClient
    kv_b: ActivationClient


@pytest.fixture
def two_daemons(
    tmp_path: Path,
    spawn_daemon: Callable[..., DaemonProcess],
    fresh_redis_server: RedisServer,
    tiny_model_dir: Path,
) -> Iterator[Pair]:
    env = {
        "MEMOS_REDIS_URL": fresh_redis_server.url,
        "MEMOS_ENGINE__MODEL_PATH": str(tiny_model_dir),
        "MEMOS_ACTIVATION__CHUNK_TOKENS": "16",
        "MEMOS_ACTIVATION__REDIS_RETRY_AFTER_S": "0.1",
        "MEMOS_ACTIVATION__REDIS_CONNECT_TIMEOUT_S": "0.2",
        "MEMOS_DRAIN_NOTICE_S": "0",
    }
    a = spawn_daemon(tmp_path / "a", env=env)
    b = spawn_daemon(tmp_path / "b", env=env)
    with ExitStack() as stack:
        # Development mode (no tokens): the tenant is named in the metadata.
        client_a = stack.enter_context(MemosClient(a.addr, tenant="acme"))
        client_b = stack.enter_context(MemosClient(b.addr, tenant="acme"))
        yield Pair(client_a, ActivationClient(client_a), client_b, ActivationClient(client_b))


def hits(kv: ActivationClient) -> dict[str, int]:
    return {level.kind: level.hits for level in kv.stats().levels}


def test_b_serves_what_a_migrated_and_both_survive_redis_loss(
    two_daemons: Pair, fresh_redis_server: RedisServer, tiny_engine: HFEngine
) -> None:
    kv_a, memos_b, kv_b = two_daemons.kv_a, two_daemons.memos_b, two_daemons.kv_b
    plain = two_daemons.memos_a.put(TEXT)
    cube = kv_a.migrate(plain.id, to="activation").cube
    assert cube.activation is not None
    keys = [bytes.fromhex(k) for k in cube.activation.chunk_keys]
    n = len(keys)
    assert n >= 10

    # B never saw the cube: every chunk comes from Redis, byte for byte what A stored.
    before = hits(kv_b)
    assert kv_b.lookup(keys).matched == n
    from_b = kv_b.fetch(keys)
    assert from_b == kv_a.fetch(keys)
    assert hits(kv_b)["redis"] - before["redis"] == n
    tokens = tiny_engine.tokenize(TEXT)
    chunks = [decode(blob, key) for key, blob in zip(keys, from_b, strict=True)]
    step = tiny_engine.feed(tokens, tiny_engine.rebuild(chunks))
    assert torch.allclose(step.logits, tiny_engine.prefill(tokens).logits, atol=1e-5, rtol=0)

    fresh_redis_server.stop()
    # A from its own levels; B from what it promoted when Redis served it.
    assert kv_a.fetch(keys) == from_b
    before = hits(kv_b)
    assert kv_b.fetch(keys) == from_b
    after = hits(kv_b)
    assert after["ram"] - before["ram"] == n and after["redis"] == before["redis"]

    # Written on B while Redis is down: B keeps it, A cannot see it, nobody gets an error.
    later = memos_b.put(LATER)
    local = kv_b.migrate(later.id, to="activation").cube
    assert local.activation is not None
    later_keys = [bytes.fromhex(k) for k in local.activation.chunk_keys]
    assert kv_b.lookup(later_keys).matched == len(later_keys)
    assert kv_a.lookup(later_keys).matched == 0
    assert kv_a.fetch(later_keys) == []
    redis_a = next(level for level in kv_a.stats().levels if level.kind == "redis")
    assert not redis_a.available
