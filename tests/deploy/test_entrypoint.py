"""The container's entry point, run as the image runs it.

The command and environment come from the Dockerfile's runtime stage. Container paths are
mapped onto this machine: the image's virtualenv onto the one running the tests, the data
volume onto a fresh directory, ``/`` onto a read-only directory (the pod's read-only root
filesystem). Root ignores file modes, so when the tests run as root the daemon runs in a user
namespace as the image's USER, where it holds no capability: read-only then means read-only.
The tokens file is mounted as a Secret would be, since the image listens beyond loopback.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.deploy import dockerfile as df
from tests.deploy.invariants import READINESS_SERVICE
from tests.deploy.paths import DOCKERFILE
from tests.fixtures.daemon import free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0


def _remap(value: str, mapping: dict[str, str]) -> str:
    """Replace container path prefixes in a value (and in each entry of a PATH-like list)."""

    def one(path: str) -> str:
        for container, host in mapping.items():
            if path == container or path.startswith(container.rstrip("/") + "/"):
                return host + path[len(container.rstrip("/")) :]
        return path

    return ":".join(one(p) for p in value.split(":"))


@dataclass
class Container:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    volume: Path
    root: Path
    token: str
    grpc_port: int
    metrics_port: int
    wrapper: list[str]
    log: Path


@dataclass
class HealthLog:
    """Every status a grpc.health.v1 Watch stream delivered, with the time it arrived."""

    events: list[tuple[float, int]] = field(default_factory=list)
    serving: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def statuses(self) -> list[int]:
        with self.lock:
            return [s for _, s in self.events]

    def first(self, status: int, after: float = 0.0) -> float | None:
        with self.lock:
            return next((t for t, s in self.events if s == status and t >= after), None)


def _watch(target: str, service: str, log: HealthLog, stop: threading.Event) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            try:
                # No credentials, as the kubelet's gRPC probe sends none.
                for reply in stub.Watch(
                    health_pb2.HealthCheckRequest(service=service),
                    wait_for_ready=True,
                    timeout=START_TIMEOUT_S,
                ):
                    with log.lock:
                        log.events.append((time.monotonic(), reply.status))
                    if reply.status == SERVING:
                        log.serving.set()
                    elif log.serving.is_set():
                        return  # drained: hang up, as a probe would, so the drain can finish
            except grpc.RpcError:
                if log.serving.is_set():
                    return  # the server went away after serving: the stream is over
                time.sleep(0.05)


@pytest.fixture
def container() -> Iterator[Container]:
    runtime = df.load(DOCKERFILE).stage("memosd")
    image_env = df.stage_env(runtime, {"PATH": "/usr/local/bin:/usr/bin:/bin"})
    volumes = [v for i in runtime.all("VOLUME") for v in df.exec_form(i)]
    workdir = runtime.last("WORKDIR")
    user = runtime.last("USER")
    assert len(volumes) == 1 and workdir is not None and user is not None

    base = Path(tempfile.mkdtemp(prefix="memos-entrypoint-"))
    os.chmod(base, 0o755)
    root, volume, tmp, auth = (base / n for n in ("root", "volume", "tmp", "auth"))
    for d in (root, volume, tmp, auth):
        d.mkdir()
    token = secrets.token_hex(16)
    tokens_file = auth / "tokens.toml"
    tokens_file.write_text(
        "[[tokens]]\n"
        f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        'tenant = "acme"\nscopes = ["read", "write"]\n'
    )

    wrapper: list[str] = []
    if os.geteuid() == 0:
        uid, _, gid = user.args.partition(":")
        wrapper = ["unshare", "--user", f"--map-user={uid}", f"--map-group={gid or uid}", "--"]
    os.chmod(tokens_file, 0o440)  # a Secret volume's defaultMode
    os.chmod(root, 0o555)
    os.chmod(auth, 0o555)

    grpc_port, metrics_port = free_port(), free_port()
    mapping = {
        image_env["VIRTUAL_ENV"]: sys.prefix,
        volumes[0]: str(volume),
        "/": str(root),
    }
    env = {k: _remap(v, mapping) if k != "PATH" else v for k, v in image_env.items()}
    env["PATH"] = _remap(image_env["PATH"], {image_env["VIRTUAL_ENV"]: sys.prefix})
    # The container's listen addresses, on free ports of this machine.
    env["MEMOS_LISTEN"] = f"{image_env['MEMOS_LISTEN'].rpartition(':')[0]}:{grpc_port}"
    env["MEMOS_METRICS_LISTEN"] = (
        f"{image_env['MEMOS_METRICS_LISTEN'].rpartition(':')[0]}:{metrics_port}"
    )
    # What the runtime and the manifests add: HOME from the image user, /tmp as an emptyDir,
    # the tokens file from a Secret volume.
    env["HOME"] = str(volume)
    env["TMPDIR"] = str(tmp)
    env["MEMOS_AUTH__TOKENS_FILE"] = str(tokens_file)

    argv = df.command(runtime)
    resolved = shutil.which(argv[0], path=env["PATH"])
    assert resolved is not None, f"{argv[0]} is not on the image's PATH"
    assert Path(resolved).parent == Path(sys.prefix) / "bin"
    yield Container(
        argv=[resolved, *argv[1:]],
        env=env,
        cwd=Path(_remap(workdir.args, mapping)),
        volume=volume,
        root=root,
        token=token,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        wrapper=wrapper,
        log=base / "memosd.log",
    )
    os.chmod(root, 0o755)
    os.chmod(auth, 0o755)
    shutil.rmtree(base, ignore_errors=True)


def _start(c: Container) -> subprocess.Popen[bytes]:
    with c.log.open("wb") as out:
        # unshare execs the daemon in place: the pid below is memosd's, as PID 1 would be.
        return subprocess.Popen(
            [*c.wrapper, *c.argv],
            env=c.env,
            cwd=c.cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _authorized_calls(c: Container) -> tuple[int, int]:
    """A write and a search through the real API: stores open, model loaded, volume writable."""
    from memos.v1 import memcube_pb2, memcube_pb2_grpc

    metadata = (("authorization", f"Bearer {c.token}"),)
    with grpc.insecure_channel(f"127.0.0.1:{c.grpc_port}") as channel:
        stub = memcube_pb2_grpc.MemCubeServiceStub(channel)  # type: ignore[no-untyped-call]
        stub.Put(
            memcube_pb2.PutRequest(cube=memcube_pb2.CubeInput(text="the pod is ready")),
            metadata=metadata,
            timeout=60,
        )
        hits = stub.Search(
            memcube_pb2.SearchRequest(query="is the pod ready?", k=1),
            metadata=metadata,
            timeout=60,
        ).hits
        stats = stub.Stats(memcube_pb2.StatsRequest(), metadata=metadata, timeout=60)
    return len(hits), stats.embedding_dim


@pytest.mark.slow  # ~20 s, most of it the daemon loading its model; .ci/deploy-check runs it
def test_entrypoint_reports_ready_then_drains_on_sigterm(container: Container) -> None:
    c = container
    process = _start(c)
    logs = {name: HealthLog() for name in ("", READINESS_SERVICE)}
    stop = threading.Event()
    watchers = [
        threading.Thread(
            target=_watch, args=(f"127.0.0.1:{c.grpc_port}", name, log, stop), daemon=True
        )
        for name, log in logs.items()
    ]
    for w in watchers:
        w.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(log.serving.is_set() for log in logs.values()):
            assert process.poll() is None, c.log.read_text()
            assert time.monotonic() < deadline, "never SERVING:\n" + c.log.read_text()
            time.sleep(0.1)

        assert _authorized_calls(c) == (1, 384)
        with urllib.request.urlopen(f"http://127.0.0.1:{c.metrics_port}/metrics") as r:
            assert r.status == 200 and b"# TYPE" in r.read()

        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=STOP_TIMEOUT_S)
        exited = time.monotonic()
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
            process.wait()
    for w in watchers:
        w.join(timeout=10)

    output = c.log.read_text()
    assert returncode == 0, output
    for name, log in logs.items():
        statuses = log.statuses()
        serving_at = log.first(SERVING)
        assert serving_at is not None and serving_at < sent, (name, statuses)
        # Before SERVING a probe may see NOT_SERVING (port open, stores opening); once
        # SERVING, nothing else until the SIGTERM.
        with log.lock:
            between = [s for t, s in log.events if serving_at <= t < sent]
        assert set(between) == {SERVING}, (name, statuses)
        drained_at = log.first(NOT_SERVING, after=sent)
        assert drained_at is not None, f"{name!r} never NOT_SERVING after SIGTERM: {statuses}"
        assert drained_at < exited, (name, drained_at, exited)
    # Nothing but the volume was written: the read-only root is still empty.
    assert list(c.root.iterdir()) == []
    assert any(c.volume.iterdir()), "the daemon kept no data on its volume"
