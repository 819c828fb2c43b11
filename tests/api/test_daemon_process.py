"""memosd as a real process: crash durability, graceful drain, development-mode guard."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from memos.v1 import memcube_pb2 as pb
from memos.v1 import memcube_pb2_grpc as pb_grpc
from tests.fixtures.daemon import DaemonProcess, free_port


def test_sigkill_right_after_acknowledged_puts_loses_nothing(
    tmp_path: Path, spawn_daemon: Callable[..., DaemonProcess]
) -> None:
    data = tmp_path / "data"
    daemon = spawn_daemon(data)
    acked: list[str] = []
    with grpc.insecure_channel(daemon.addr) as ch:
        s = pb_grpc.MemCubeServiceStub(ch)
        for i in range(40):
            acked.append(s.Put(pb.PutRequest(cube=pb.CubeInput(text=f"durable fact {i}"))).cube.id)
        batch = s.PutBatch(
            pb.PutBatchRequest(cubes=[pb.CubeInput(text=f"batch fact {i}") for i in range(60)])
        )
        acked.extend(c.id for c in batch.cubes)
        first = acked[0]
        s.Update(pb.UpdateRequest(id=first, text="durable fact 0, revised"))
    daemon.kill()  # no drain, no flush: whatever was acknowledged must already be on disk

    again = spawn_daemon(data)
    with grpc.insecure_channel(again.addr) as ch:
        s = pb_grpc.MemCubeServiceStub(ch)
        for cube_id in acked:
            assert s.Get(pb.GetRequest(id=cube_id)).cube.id == cube_id
        assert s.Get(pb.GetRequest(id=first)).cube.version == 2
        assert s.Stats(pb.StatsRequest()).cubes == len(acked)


def test_sigterm_drains_and_exits_zero(
    tmp_path: Path, spawn_daemon: Callable[..., DaemonProcess]
) -> None:
    daemon = spawn_daemon(tmp_path / "data", env={"MEMOS_DRAIN_NOTICE_S": "0.2"})
    with grpc.insecure_channel(daemon.addr) as ch:
        pb_grpc.MemCubeServiceStub(ch).Put(pb.PutRequest(cube=pb.CubeInput(text="before stop")))
    assert daemon.terminate() == 0
    log = daemon.log()
    assert "draining" in log and "stopped" in log


def test_sigusr1_dumps_every_threads_stack_and_the_daemon_goes_on(
    tmp_path: Path, spawn_daemon: Callable[..., DaemonProcess]
) -> None:
    daemon = spawn_daemon(tmp_path / "data")
    daemon.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 20
    while "Current thread" not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = daemon.log()
    assert "Current thread" in log and 'File "' in log, log[-2000:]
    assert log.count("Thread 0x") >= 2  # the other threads too (commit, embedding, gRPC)
    with grpc.insecure_channel(daemon.addr) as ch:
        cube = pb_grpc.MemCubeServiceStub(ch).Put(pb.PutRequest(cube=pb.CubeInput(text="still on")))
        assert cube.cube.id
    assert daemon.terminate() == 0


def test_the_startup_heap_is_frozen_out_of_the_collector_before_serving(
    tmp_path: Path, spawn_daemon: Callable[..., DaemonProcess]
) -> None:
    daemon = spawn_daemon(tmp_path / "data")
    log = daemon.log()
    frozen = [int(n) for n in re.findall(r"heap settled frozen_objects=(\d+)", log)]
    assert len(frozen) == 1, log[-2000:]
    # The model, torch and LanceDB alone are hundreds of thousands of objects.
    assert frozen[0] > 100_000
    assert log.index("heap settled") < log.index("server: serving")


def test_development_mode_refuses_a_public_address(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "memos.daemon",
            "--data-dir",
            str(tmp_path),
            "--listen",
            f"0.0.0.0:{free_port()}",
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "refuses to listen" in proc.stderr and "tokens" in proc.stderr


def test_dev_mode_is_announced_loudly(
    tmp_path: Path, spawn_daemon: Callable[..., DaemonProcess]
) -> None:
    daemon = spawn_daemon(tmp_path / "data")
    assert "DEVELOPMENT MODE" in daemon.log()


def test_tokens_from_a_toml_config_file(
    tmp_path: Path, spawn_daemon: Callable[..., DaemonProcess]
) -> None:
    import hashlib

    tokens = tmp_path / "tokens.toml"
    digest = hashlib.sha256(b"s3cret").hexdigest()
    tokens.write_text(f'[[tokens]]\ntoken_sha256 = "{digest}"\ntenant = "acme"\n')
    config = tmp_path / "memos.toml"
    config.write_text(f'log_format = "json"\n[auth]\ntokens_file = "{tokens}"\n')
    daemon = spawn_daemon(tmp_path / "data", "--config", str(config))
    with grpc.insecure_channel(daemon.addr) as ch:
        s = pb_grpc.MemCubeServiceStub(ch)
        cube = s.Put(
            pb.PutRequest(cube=pb.CubeInput(text="hello")),
            metadata=[("authorization", "Bearer s3cret")],
        ).cube
        assert cube.tenant == "acme"
        try:
            s.List(pb.ListRequest())
            raise AssertionError("a call without a token must fail")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert '"level": "info"' in daemon.log()  # structured JSON logs


def test_bad_config_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "memos.toml"
    config.write_text('listen = "no-port-here"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "memos.daemon", "--config", str(config)],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "HOST:PORT" in proc.stderr
