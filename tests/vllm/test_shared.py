"""(f) Engines behind different daemons reuse each other's blocks through a shared Redis.

Two in-process daemons point at one real ``redis-server``. Engine A (daemon 1) saves a
prompt; engine B (daemon 2), started after A is gone, loads it and answers the same, and
saves a second prompt; engine C (daemon 1 again) loads that one. Each daemon has its own RAM
and disk, so what it serves of the other's came through Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.daemon import TOKENS
from tests.fixtures.redis_server import RedisServer
from tests.vllm.engines import (
    BLOCK,
    Daemon,
    build_model,
    connector_config,
    engine,
    prompt,
    start_daemon,
)

pytestmark = pytest.mark.vllm

FIRST = prompt(seed=31, length=6 * BLOCK + 5)
SECOND = prompt(seed=32, length=4 * BLOCK + 7)


@pytest.fixture
def two_daemons(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Daemon, Daemon]]:
    redis_server.client().flushall()
    one = start_daemon(tmp_path / "d1", redis_url=redis_server.url)
    two = start_daemon(tmp_path / "d2", redis_url=redis_server.url)
    yield one, two
    one.stop()
    two.stop()


def test_engines_on_two_daemons_share_blocks_through_redis(
    tmp_path: Path, two_daemons: tuple[Daemon, Daemon]
) -> None:
    model_dir = build_model(tmp_path / "model")
    one, two = two_daemons
    token = TOKENS["acme"]
    with engine(model_dir, connector_config(one.addr, token=token)) as a:
        first = a.generate(FIRST)
        a.wait_for_saves()
    assert first.report["memos.saved_blocks"] == len(FIRST) // BLOCK

    with engine(model_dir, connector_config(two.addr, token=token)) as b:
        first_again = b.generate(FIRST)
        second = b.generate(SECOND)
        b.wait_for_saves()
    assert first_again.loaded_tokens == ((len(FIRST) - 1) // BLOCK) * BLOCK
    assert first_again.token_ids == first.token_ids
    assert second.loaded_tokens == 0
    assert second.report["memos.saved_blocks"] == len(SECOND) // BLOCK

    with engine(model_dir, connector_config(one.addr, token=token)) as c:
        second_again = c.generate(SECOND)
    assert second_again.loaded_tokens == ((len(SECOND) - 1) // BLOCK) * BLOCK
    assert second_again.token_ids == second.token_ids
