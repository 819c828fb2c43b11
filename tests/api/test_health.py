"""The health service tells Watch streams of a status change without holding its lock: a
stream closing at that moment (its close callback takes the lock, on the server's event thread,
which the send waits for) must not deadlock the daemon's shutdown."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memos.api.health import HealthServicer
from tests.fixtures.daemon import ServerHandle


class _Context:
    """What Watch needs of a servicer context: where to register the close callback."""

    def __init__(self) -> None:
        self.on_close: list[Callable[[], None]] = []

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.on_close.append(callback)
        return True


def test_watchers_are_told_with_the_lock_released() -> None:
    servicer = HealthServicer(experimental_non_blocking=True)
    context = _Context()
    lock_free: list[bool] = []
    seen: list[Any] = []

    def send(response: Any) -> None:
        seen.append(response)
        if len(seen) == 1:
            return  # Watch's first answer, sent under the lock by grpc's own code

        # As the server's event thread would when the stream closes now.
        def close_callback() -> None:
            got = servicer._lock.acquire(timeout=2)
            lock_free.append(got)
            if got:
                servicer._lock.release()

        other = threading.Thread(target=close_callback)
        other.start()
        other.join()

    servicer.Watch(health_pb2.HealthCheckRequest(service="x"), context, send_response_callback=send)
    servicer.set("x", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert [r.status for r in seen] == [
        health_pb2.HealthCheckResponse.SERVICE_UNKNOWN,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    ]
    assert lock_free == [True]
    for close in context.on_close:  # the stream ends: it is told no more
        close()
    servicer.set("x", health_pb2.HealthCheckResponse.SERVING)
    assert len(seen) == 3 and seen[-1] is None


def test_a_watch_over_grpc_sees_the_drain(dev_server: ServerHandle) -> None:
    with grpc.insecure_channel(dev_server.addr) as ch:
        stream = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
        dev_server.server.stop(grace_s=1)
        assert next(stream).status == health_pb2.HealthCheckResponse.NOT_SERVING
