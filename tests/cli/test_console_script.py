"""The installed `memosctl` script, run as the README's Quickstart runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memos.client import MemosClient
from tests.fixtures.daemon import ServerHandle


def memosctl() -> str:
    beside = Path(sys.executable).parent / "memosctl"
    found = str(beside) if beside.exists() else shutil.which("memosctl")
    if found is None:
        pytest.skip("the memosctl console script is not installed (pip install -e .)")
    return found


def run(addr: str, *args: str) -> subprocess.CompletedProcess[str]:
    # MEMOS_ADDR stands in for the default address, which a test must not take.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOS_")}
    env["MEMOS_ADDR"] = addr
    return subprocess.run(
        [memosctl(), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_quickstart_lines_work_as_written(dev_server: ServerHandle) -> None:
    put = run(dev_server.addr, "put", "The deploy key rotates every Monday", "--tags", "ops")
    assert put.returncode == 0, put.stderr
    assert put.stdout.startswith("stored ")
    found = run(dev_server.addr, "search", "when do we rotate keys?")
    assert found.returncode == 0, found.stderr
    assert "The deploy key rotates every Monday" in found.stdout
    as_json = run(dev_server.addr, "search", "when do we rotate keys?", "--json")
    first = json.loads(as_json.stdout)["results"][0]
    assert first["text"] == "The deploy key rotates every Monday" and first["tags"] == ["ops"]


def test_a_failure_is_one_line_on_stderr_and_a_code(dev_server: ServerHandle) -> None:
    result = run(dev_server.addr, "get", "01JDZ8Q3V2X7G4M5N6P7R8S9T0")
    assert result.returncode == 4
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("memosctl: error")


def test_tail_follows_until_the_daemon_ends_the_stream(server: ServerHandle) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOS_")}
    env["MEMOS_TOKEN"] = server.tokens["acme"]
    tail = subprocess.Popen(
        [memosctl(), "tail", "--addr", server.addr],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None
        # tail says so on stderr once the daemon has subscribed it.
        assert "following changes" in tail.stderr.readline()
        with MemosClient(server.addr, token=server.tokens["acme"]) as writer:
            cube = writer.put("seen by the tail")
        server.server.stop(grace_s=1)
        out, err = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait(10)
    assert tail.returncode == 10
    assert cube.id in out and "PUT" in out and "seen by the tail" in out
    assert "ended the watch" in err and server.addr in err
