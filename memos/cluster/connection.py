"""Redis clients for cluster mode, and the loud-once log of a Redis outage."""

from __future__ import annotations

import logging
import os
import queue
import socket
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from memos.config import ClusterSettings

log = logging.getLogger(__name__)


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def open_client(url: str, settings: ClusterSettings, *, blocking_ms: int = 0) -> redis.Redis:
    """A client that fails fast: the callers loop and retry themselves, so redis-py's own
    retries would only delay noticing an outage (and a lease must notice it in time)."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=settings.connect_timeout_s,
        socket_timeout=settings.connect_timeout_s + blocking_ms / 1000,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


class Outage:
    """Logs the start of an outage once, as an error naming what stops working, and its end."""

    def __init__(self, what: str, consequence: str) -> None:
        self.what = what
        self.consequence = consequence
        self.down = False

    def failed(self, exc: Exception) -> None:
        if not self.down:
            self.down = True
            log.error(
                f"Redis unreachable ({self.what}): {self.consequence}; retrying",
                extra={"error": f"{type(exc).__name__}: {exc}"},
            )

    def recovered(self) -> None:
        if self.down:
            self.down = False
            log.warning(f"Redis reachable again ({self.what})")


T = TypeVar("T")


def take_batch(outbox: queue.Queue[T], limit: int, wait_s: float = 0.2) -> list[T]:
    """Up to ``limit`` queued items for one pipelined write: waits ``wait_s`` for the first
    (so a writer thread idles without spinning), then takes what is already there."""
    try:
        batch = [outbox.get(timeout=wait_s)]
    except queue.Empty:
        return []
    while len(batch) < limit:
        try:
            batch.append(outbox.get_nowait())
        except queue.Empty:
            break
    return batch
