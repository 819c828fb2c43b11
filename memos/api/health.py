"""The gRPC health service (``grpc.health.v1``), with a deadlock of grpc's own removed.

grpc's ``HealthServicer`` in its default non-blocking mode sends a status change to every
Watch stream while holding its lock, and each send waits until the server's event thread has
written it. When a Watch stream ends at that moment, the same event thread runs the stream's
close callback, which takes that lock first: neither moves again. memosd hung that way on
SIGTERM (setting NOT_SERVING as a watching client went away); the shutdown watchdog's stacks
showed both threads. Here the sends happen after the lock is released. Non-blocking mode stays:
in blocking mode every open Watch holds one of the server's worker threads, which any client
could use up.
"""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health, health_pb2


class HealthServicer(health.HealthServicer):  # type: ignore[misc]
    def set(self, service: str, status: Any) -> None:
        """Set ``service``'s status, then tell its watchers (outside the lock)."""
        with self._lock:
            if self._gracefully_shutting_down:
                return
            self._server_status[service] = status
            watchers = list(self._send_response_callbacks.get(service, ()))
        for send in watchers:
            send(health_pb2.HealthCheckResponse(status=status))
