"""Two daemon processes share Redis: A stores, B serves; without Redis each keeps its levels."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.redis_server import RedisServer

TEXT_1 = "Memories shared between replicas: the first daemon computes, the second reuses. " * 2
TEXT_2 = "Written while Redis is down, this one stays where its writer put it. " * 2
REPO = Path(__file__).resolve().parents[2]


class Daemon:
    def __init__(self, model_dir: Path, disk: Path, redis_url: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.activation._daemon_worker",
                str(model_dir),
                str(disk),
                redis_url,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
        )

    def wait_ready(self) -> None:
        assert self._read() == {"ready": True}

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.proc.wait()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, op: str, text: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "text": text}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write('{"op": "quit"}\n')
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemons(
    tiny_model_dir: Path, tmp_path: Path, fresh_redis_server: RedisServer
) -> Iterator[tuple[Daemon, Daemon]]:
    a = Daemon(tiny_model_dir, tmp_path / "disk-a", fresh_redis_server.url)
    b = Daemon(tiny_model_dir, tmp_path / "disk-b", fresh_redis_server.url)
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.close()
        b.close()


def test_a_stores_b_serves_and_both_survive_redis_loss(
    daemons: tuple[Daemon, Daemon], fresh_redis_server: RedisServer
) -> None:
    a, b = daemons
    saved = a.ask("save", TEXT_1)
    n = saved["chunks"]
    assert n >= 8 and saved["written"] == n

    served = b.ask("check", TEXT_1)
    assert served["chunks"] == n and served["allclose"]
    assert served["hits"]["redis"] == n, "B had nothing of its own: Redis served every chunk"

    fresh_redis_server.stop()

    from_a = a.ask("check", TEXT_1)
    assert from_a["chunks"] == n and from_a["allclose"] and from_a["hits"]["ram"] == n
    from_b = b.ask("check", TEXT_1)
    assert from_b["chunks"] == n and from_b["allclose"], "B promoted what Redis gave it"
    assert from_b["hits"]["ram"] == n and from_b["hits"]["redis"] == 0

    # Writes while Redis is down stay local and fail nobody.
    local = a.ask("save", TEXT_2)
    assert local["written"] == local["chunks"] > 0
    assert a.ask("check", TEXT_2)["chunks"] == local["chunks"]
    unseen = b.ask("check", TEXT_2)
    assert unseen["chunks"] == 0 and unseen["allclose"], "B recomputes what it cannot reach"
