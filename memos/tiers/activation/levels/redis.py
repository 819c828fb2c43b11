"""Redis, shared by every daemon pointed at it: the level through which replicas reuse KV.

What a daemon knows of the others. Nothing is cached locally about Redis's contents: every
lookup asks Redis (one round trip for N keys: a pipeline of EXISTS, or one MGET for a fetch),
so a chunk written by daemon A is visible to daemon B at once, and a chunk Redis has evicted
is a miss for everyone.

Who evicts, and why Redis does. A daemon sees only its own requests. A per-daemon policy over
the shared keys would evict chunks that another daemon is using heavily, and per-daemon budgets
do not add up to one shared limit. Redis is the one party that sees every read and write from
every daemon, so the budget is Redis's own ``maxmemory``, enforced with
``maxmemory-policy volatile-lru``, and every chunk is written with a TTL (``SET ... PX``).
``volatile-lru`` evicts only keys that carry a TTL, so anything else sharing the instance (cube
metadata, streams, locks: written without a TTL) is never evicted to make room for KV. Redis's
LRU is sampled (``maxmemory-samples``), which is fine for a cache. With ``configure_server``
the level sets both settings when it first connects (tests, the embedded mode, a Redis
dedicated to KV); a managed Redis that forbids ``CONFIG`` is set up by its operator, and the
level reports what it finds (``maxmemory``, ``used_memory``, ``evicted_keys``) in its stats.
The scheduler's policies run the per-daemon levels (RAM, disk). Driving this shared level by a
scheduler policy too needs the cluster's access stream: each daemon appends its hits and writes
to a Redis Stream and one leader-elected evictor replays it into the policy and deletes the
victims; that is the planned step once the one-bit policies should see Redis traffic.

Failure. Any Redis error (refused connection, timeout, a server going away mid-reply) is a miss
or a refused write, never an exception to the caller. After a failure the level stops trying
for ``retry_after_s`` so that a dead Redis costs nothing per request, then tries again: a
restarted Redis is picked up without a restart of the daemon.

Reads use hiredis when installed and a 1 MiB socket read size: with redis-py's pure-Python
parser and its 64 KiB default, a 4 MiB chunk reads at a third of the server's rate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import redis

from memos.tiers.activation.levels.base import Level, LevelStats

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_NAMESPACE = b"memos:kv:"
DEFAULT_TTL_S = 7 * 24 * 3600


class RedisLevel(Level):
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        budget_bytes: int | None = None,
        configure_server: bool = False,
        namespace: bytes = DEFAULT_NAMESPACE,
        ttl_s: int = DEFAULT_TTL_S,
        connect_timeout_s: float = 0.5,
        op_timeout_s: float = 5.0,
        retry_after_s: float = 1.0,
        name: str = "redis",
    ) -> None:
        super().__init__(name)
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive: volatile-lru only evicts keys with a TTL")
        self.url = url
        self._budget = budget_bytes
        self._configure = configure_server and budget_bytes is not None
        self._namespace = namespace
        self._ttl_ms = ttl_s * 1000
        self._retry_after = retry_after_s
        self._down_until = 0.0
        self._configured = False
        self._last_info: dict[str, Any] = {}
        self._state_lock = threading.Lock()
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=op_timeout_s,
            socket_read_size=1 << 20,
        )

    def _rkey(self, key: bytes) -> bytes:
        return self._namespace + key

    def _call(self, op: Callable[[Any], T], default: T) -> tuple[T, bool]:
        """Run ``op(client)``; on any Redis failure return ``default`` and back off."""
        if time.monotonic() < self._down_until:
            return default, False
        try:
            if not self._configured:
                self._configure_server()
            return op(self._client), True
        except (redis.RedisError, OSError) as exc:
            with self._state_lock:
                first = self._down_until == 0.0 or time.monotonic() >= self._down_until
                self._down_until = time.monotonic() + self._retry_after
                self._configured = False
            if first:
                log.warning("redis level %s unavailable (%s); serving misses", self.name, exc)
            self.counters.add(errors=1)
            return default, False

    def _configure_server(self) -> None:
        if self._configure:
            try:
                self._client.config_set("maxmemory", str(self._budget))
                self._client.config_set("maxmemory-policy", "volatile-lru")
            except redis.ResponseError as exc:
                log.warning("redis level %s: cannot CONFIG SET (%s); using as is", self.name, exc)
        self._configured = True

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        rkeys = [self._rkey(k) for k in keys]
        values, ok = self._call(lambda c: c.mget(rkeys), None)
        if not ok or values is None:
            self.counters.add(misses=len(keys))
            return [None] * len(keys)
        out: list[bytes | None] = [v if isinstance(v, bytes) else None for v in values]
        hits = sum(1 for v in out if v is not None)
        read = sum(len(v) for v in out if v is not None)
        self.counters.add(hits=hits, misses=len(keys) - hits, bytes_read=read)
        return out

    def contains_many(self, keys: Sequence[bytes]) -> list[bool]:
        if not keys:
            return []

        def exists(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.exists(self._rkey(key))
            return list(pipe.execute())

        found: list[Any]
        found, ok = self._call(exists, [])
        if not ok:
            return [False] * len(keys)
        return [bool(n) for n in found]

    def put(self, key: bytes, blob: bytes) -> bool:
        return self.put_many([(key, blob)])[0]

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        if not items:
            return []

        def write(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key, blob in items:
                pipe.set(self._rkey(key), blob, px=self._ttl_ms)
            return list(pipe.execute(raise_on_error=False))

        replies: list[Any]
        replies, ok = self._call(write, [])
        if not ok:
            self.counters.add(put_failures=len(items))
            return [False] * len(items)
        # A full Redis with nothing evictable answers OOM to that one SET: a refused write.
        done = [reply is True for reply in replies]
        written = sum(len(blob) for (_, blob), d in zip(items, done, strict=True) if d)
        self.counters.add(
            puts=sum(done), put_failures=len(items) - sum(done), bytes_written=written
        )
        return done

    def delete(self, key: bytes) -> bool:
        removed, _ = self._call(lambda c: c.delete(self._rkey(key)), 0)
        return bool(removed)

    def _server_memory(self) -> dict[str, Any]:
        info: dict[str, Any]
        info, ok = self._call(lambda c: dict(c.info("memory")) | dict(c.info("stats")), {})
        return info if ok else {}

    def occupancy(self) -> tuple[int, int, int, bool]:
        info = self._server_memory()
        self._last_info = info
        if not info:
            return 0, 0, self._budget or 0, False
        items, _ = self._call(lambda c: int(c.dbsize()), 0)
        budget = int(info.get("maxmemory", 0)) or (self._budget or 0)
        return items, int(info.get("used_memory", 0)), budget, True

    def stats(self) -> LevelStats:
        """Counters are this daemon's; occupancy and evictions are the server's (all daemons)."""
        base = super().stats()
        info = self._last_info
        return replace(base, evictions=int(info["evicted_keys"])) if info else base

    def close(self) -> None:
        self._client.close()
