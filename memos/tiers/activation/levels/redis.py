"""Redis, shared by every daemon pointed at it: the level through which replicas reuse KV.

What a daemon knows of the others. Nothing is cached locally about Redis's contents: every
lookup asks Redis (one round trip for N keys: a pipeline of EXISTS, or one MGET for a fetch),
so a chunk written by daemon A is visible to daemon B at once, and a chunk Redis has evicted
is a miss for everyone.

Who evicts. A daemon sees only its own requests, so no daemon's policy alone may evict from
this shared level: a per-daemon policy would evict chunks another daemon uses heavily, and
per-daemon budgets do not add up to one shared limit. In cluster mode every daemon appends its
Redis-level accesses (hits and writes, with sizes, and deletes) to the cluster's access log, a
Redis Stream (``memos.cluster.accesses``); the cluster leader replays all of them into one
scheduler policy (``activation.redis_policy``, robust-mark0 by default, bits from a learned
predictor) over ``budget_bytes`` and deletes the policy's victims. A chunk deleted while another
daemon reads it is a miss there (MGET answers nil), never an error.

Redis's own ``maxmemory`` stays the safety net, for what the policy cannot see (key overhead,
writes between two evictor runs, a cluster without a leader): every chunk is written with a TTL
(``SET ... PX``) and, with ``configure_server``, the level sets ``maxmemory`` (to
``maxmemory_bytes``: the daemon sets it above the policy's budget, so the policy evicts first)
and ``maxmemory-policy volatile-lru``. ``volatile-lru`` evicts only keys that carry a TTL, so
anything else sharing the instance (cube metadata, streams, locks: written without a TTL) is
never evicted to make room for KV. A managed Redis that forbids ``CONFIG`` is set up by its
operator, and the level reports what it finds (``maxmemory``, ``used_memory``, ``evicted_keys``)
in its stats. Without the cluster's evictor (a daemon embedded in a process without the server,
or ``activation.redis_policy = ""``) maxmemory is the only eviction.

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

#: Told of every access this daemon makes to the level: ("hit" | "write" | "delete", keys
#: with sizes in bytes). Called in the request's thread: it must only enqueue.
AccessHook = Callable[[str, Sequence[tuple[bytes, int]]], None]


class RedisLevel(Level):
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        budget_bytes: int | None = None,
        configure_server: bool = False,
        maxmemory_bytes: int | None = None,
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
        self._maxmemory = maxmemory_bytes if maxmemory_bytes is not None else budget_bytes
        self._configure = configure_server and self._maxmemory is not None
        self._namespace = namespace
        self._ttl_ms = ttl_s * 1000
        self._retry_after = retry_after_s
        self._down_until = 0.0
        self._configured = False
        self._last_info: dict[str, Any] = {}
        self._state_lock = threading.Lock()
        #: The cluster's access log, when this daemon shares one.
        self.on_access: AccessHook | None = None
        self._policy_evictions = 0
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=op_timeout_s,
            socket_read_size=1 << 20,
        )

    def _rkey(self, key: bytes) -> bytes:
        return self._namespace + key

    @property
    def namespace(self) -> bytes:
        """The prefix of every chunk key this level writes in Redis."""
        return self._namespace

    def redis_key(self, key: bytes) -> bytes:
        return self._rkey(key)

    def level_key(self, redis_key: bytes) -> bytes | None:
        """The level key under ``redis_key``, or None when it is not one of this level's."""
        if not redis_key.startswith(self._namespace):
            return None
        return redis_key[len(self._namespace) :]

    def count_policy_evictions(self, n: int) -> None:
        """Chunks the cluster's evictor deleted from Redis while this daemon led."""
        with self._state_lock:
            self._policy_evictions += n
        self.counters.add(evictions=n)

    def _tell(self, op: str, items: Sequence[tuple[bytes, int]]) -> None:
        hook = self.on_access
        if hook is not None and items:
            hook(op, items)

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
                self._client.config_set("maxmemory", str(self._maxmemory))
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
        found = [(key, len(v)) for key, v in zip(keys, out, strict=True) if v is not None]
        read = sum(size for _, size in found)
        self.counters.add(hits=len(found), misses=len(keys) - len(found), bytes_read=read)
        self._tell("hit", found)
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
        stored = [(key, len(blob)) for (key, blob), d in zip(items, done, strict=True) if d]
        written = sum(size for _, size in stored)
        self.counters.add(
            puts=len(stored), put_failures=len(items) - len(stored), bytes_written=written
        )
        self._tell("write", stored)
        return done

    def delete(self, key: bytes) -> bool:
        removed, _ = self._call(lambda c: c.delete(self._rkey(key)), 0)
        if removed:
            self._tell("delete", [(key, 0)])
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
        # The budget the policy keeps to; the server's maxmemory where none was given.
        budget = self._budget or int(info.get("maxmemory", 0))
        return items, int(info.get("used_memory", 0)), budget, True

    def stats(self) -> LevelStats:
        """Counters are this daemon's; occupancy is the server's (all daemons). Evictions are
        the server's maxmemory evictions (all daemons) plus the policy evictions this daemon
        made as the cluster's leader."""
        base = super().stats()
        info = self._last_info
        if not info:
            return base
        with self._state_lock:
            own = self._policy_evictions
        return replace(base, evictions=int(info["evicted_keys"]) + own)

    def close(self) -> None:
        self._client.close()
