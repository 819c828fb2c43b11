"""SIGKILL a process while it puts and updates: every acknowledged write survives, and no cube
ever has two latest versions (counted in the raw table, before any repair could run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import lancedb
import pytest

from memos.config import PlaintextSettings
from memos.embed import Embedder
from memos.tiers.plaintext import CubeFilter, PlaintextStore

REPO = Path(__file__).resolve().parents[2]
PUT_ACKS = 80
UPDATE_ACKS = 30


@dataclass
class Killed:
    path: Path
    ready: list[str]
    puts: list[str]
    updates: dict[str, int]  # the highest acknowledged version per id
    latest_rows: Counter[str]  # is_latest rows per id, straight from LanceDB


def run_and_kill(path: Path, timeout: float = 240.0) -> list[str]:
    """Start the worker, read its acknowledgements, SIGKILL it once it has made enough."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.plaintext.crash_worker", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    puts = updates = 0
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            puts += line.startswith("put ")
            updates += line.startswith("update ")
            if puts >= PUT_ACKS and updates >= UPDATE_ACKS:
                break
            assert time.monotonic() < deadline, "the worker is too slow"
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    # Whatever it printed before dying was acknowledged too.
    lines.extend(x.strip() for x in rest.splitlines() if x.strip())
    assert proc.returncode == -signal.SIGKILL
    return lines


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Killed:
    path = tmp_path_factory.mktemp("crash") / "plaintext"
    lines = run_and_kill(path)
    updates: dict[str, int] = {}
    for line in lines:
        if line.startswith("update "):
            _, cube_id, version = line.split()
            updates[cube_id] = max(updates.get(cube_id, 0), int(version))
    table = lancedb.connect(str(path)).open_table("cubes")
    rows = table.search().where("is_latest").select(["id"]).to_arrow()
    return Killed(
        path=path,
        ready=[x.split()[1] for x in lines if x.startswith("ready ")],
        puts=[x.split()[1] for x in lines if x.startswith("put ")],
        updates=updates,
        latest_rows=Counter(rows["id"].to_pylist()),
    )


def reopen(killed: Killed, embedder: Embedder) -> PlaintextStore:
    return PlaintextStore(str(killed.path), embedder=embedder, settings=PlaintextSettings())


def test_acknowledged_puts_survive_sigkill(killed: Killed, minilm: Embedder) -> None:
    assert len(killed.puts) >= PUT_ACKS
    assert all(killed.latest_rows[i] == 1 for i in killed.puts)
    store = reopen(killed, minilm)
    try:
        for cube_id in killed.puts:
            got = store.get("acme", cube_id)
            assert got is not None and got.text.startswith("worker ")
    finally:
        store.close()


def test_kill_mid_update_leaves_exactly_one_latest_version(
    killed: Killed, minilm: Embedder
) -> None:
    assert len(killed.ready) == 5 and sum(killed.updates.values()) >= UPDATE_ACKS
    assert set(killed.latest_rows.values()) == {1}
    assert set(killed.ready) <= set(killed.latest_rows)
    store = reopen(killed, minilm)
    try:
        listed, _ = store.list("acme", CubeFilter(), page_size=1000, page_token=None)
        listed_ids = [c.id for c in listed]
        assert len(listed_ids) == len(set(listed_ids))
        for cube_id in killed.ready:
            latest = store.get("acme", cube_id)
            assert latest is not None and latest.version >= killed.updates.get(cube_id, 1)
            assert latest.tags == ((f"v{latest.version}",) if latest.version > 1 else ())
            history = store.history("acme", cube_id)
            assert [c.version for c in history] == list(range(1, latest.version + 1))
    finally:
        store.close()
