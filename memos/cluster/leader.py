"""One leader at a time for the cluster-wide jobs: a Redis lease with fencing tokens.

The lease is a key set with NX and a TTL, holding a random owner token; the holder extends it
with a compare-and-extend script and deletes it (compare-and-delete) on a clean shutdown. Each
acquisition takes a new fencing token from INCR, so tokens only grow. A replica counts itself
leader only until the moment its last renewal was *sent* plus a little less than the TTL: a
stalled process or a lost connection loses leadership on its own clock before Redis hands the
lease to another replica.

That alone cannot stop a job that was already running when its replica stalled: the job's
commits go through its ``Fence``, which writes to Redis only if the lease still has its owner
and fencing token (one script, so atomically), and raises ``LostLease`` otherwise.
"""

from __future__ import annotations

import contextvars
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from memos.cluster.connection import Outage
from memos.config import ClusterSettings
from memos.jobs import NotLeader

log = logging.getLogger(__name__)

# KEYS: lease, fence. ARGV: owner, ttl ms, lowest acceptable token.
# Returns {token, 0, owner} when acquired, {0, ms left, holder} when another replica holds it.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local n = redis.call('INCR', KEYS[2])
  local floor = tonumber(ARGV[3])
  if n < floor then
    n = floor
    redis.call('SET', KEYS[2], n)
  end
  return {n, 0, ARGV[1]}
end
return {0, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[1])}
"""

# KEYS: lease, fence. ARGV: owner, ttl ms, token.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[3] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lease. ARGV: owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: lease, fence, target. ARGV: owner, token, command, args... (CHECK: no write)
_FENCED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return {0, false}
end
if ARGV[3] == 'CHECK' then
  return {1, 1}
end
return {1, redis.call(ARGV[3], KEYS[3], unpack(ARGV, 4))}
"""

# Writes a fenced commit may make: each names its one key first.
FENCED_COMMANDS = frozenset({"SET", "DEL", "HSET", "XADD", "RPUSH", "INCRBY", "EXPIRE"})

# A replica's clock and Redis's may drift apart a little while a lease runs.
_DRIFT = 0.1


class LostLease(Exception):
    """The job's lease has passed to another replica (or expired): its commit was refused."""


_CURRENT: contextvars.ContextVar[Fence | None] = contextvars.ContextVar(
    "memos_cluster_fence", default=None
)


def current_fence() -> Fence | None:
    """The fence of the cluster-wide job running on this thread, if any: what its commits
    must go through."""
    return _CURRENT.get()


@dataclass(frozen=True, slots=True)
class Fence:
    """A leadership term: the fencing token it was granted, and the means to commit under it."""

    token: int
    lease: LeaderLease

    def call(self, command: str, key: str | bytes, *args: str | int | float | bytes) -> Any:
        """Run one write on ``key`` iff this term still holds the lease; else raise LostLease."""
        return self.lease.fenced(self.token, command, key, *args)

    def check(self) -> None:
        """Raise LostLease unless this term still holds the lease. For commits outside Redis
        it narrows the window to one round trip; it cannot close it."""
        self.lease.fenced(self.token, "CHECK", self.lease.fence_key)


class LeaderLease:
    def __init__(self, client: redis.Redis, replica_id: str, settings: ClusterSettings) -> None:
        self.replica_id = replica_id
        self.owner = f"{replica_id}:{secrets.token_hex(8)}"
        self.lease_key = f"{settings.key_prefix}leader"
        self.fence_key = f"{settings.key_prefix}fence"
        self.runs_key = f"{settings.key_prefix}runs"
        self._client = client
        self._settings = settings
        self._ttl_ms = max(1, int(settings.lease_ttl_s * 1000))
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._fenced = client.register_script(_FENCED)
        self._lock = threading.Lock()
        self._token: int | None = None
        self._valid_until = 0.0
        self._highest_seen = 0
        self._holder: str | None = None
        self._outage = Outage(
            "leader lease", "cluster-wide jobs run on NO replica until it is back"
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cluster-lease", daemon=True)

    # ------------------------------------------------------------------ state

    @property
    def holder(self) -> str | None:
        """The replica id that held the lease at the last look (this one when leader)."""
        return self.replica_id if self.fence() is not None else self._holder

    def fence(self) -> Fence | None:
        """This replica's current term, or None when it is not (surely) the leader."""
        with self._lock:
            if self._token is None or time.monotonic() >= self._valid_until:
                return None
            return Fence(self._token, self)

    def is_leader(self) -> bool:
        return self.fence() is not None

    # ------------------------------------------------------------------ lease

    def tick(self) -> float:
        """Acquire or renew once; returns the seconds until the next attempt."""
        interval = self._settings.renew_interval_s
        sent = time.monotonic()
        with self._lock:
            token = self._token
        if token is not None and sent >= self._valid_until:
            # The term ran out before a renewal got through: acquire afresh (a new token).
            self._lost("it ran out before a renewal got through")
            token = None
        try:
            if token is None:
                got, left_ms, holder = self._acquire(
                    keys=[self.lease_key, self.fence_key],
                    args=[self.owner, self._ttl_ms, self._highest_seen + 1],
                )
                if got:
                    self._granted(int(got), sent)
                    log.info("cluster leader: this replica", extra={"fence": int(got)})
                    wait = interval
                else:
                    self._holder = _replica_of(holder)
                    # Try again just after the holder's lease would expire, not a full interval
                    # later: a crashed leader is replaced within the lease TTL.
                    left = int(left_ms) / 1000 if int(left_ms) > 0 else 0.0
                    wait = min(interval, left + 0.01)
            elif self._renew(
                keys=[self.lease_key, self.fence_key],
                args=[self.owner, self._ttl_ms, token],
            ):
                self._granted(token, sent)
                wait = interval
            else:
                self._lost("the lease expired or was taken over")
                wait = 0.0
            self._outage.recovered()
            return wait
        except redis.RedisError as exc:
            self._outage.failed(exc)
            # Leadership runs out on its own at _valid_until; nothing to undo here.
            return min(interval, self._settings.retry_s)

    def _granted(self, token: int, sent: float) -> None:
        with self._lock:
            self._token = token
            self._highest_seen = max(self._highest_seen, token)
            self._valid_until = sent + self._settings.lease_ttl_s * (1 - _DRIFT)

    def _lost(self, why: str) -> None:
        with self._lock:
            token, self._token = self._token, None
        if token is not None:
            log.warning(f"cluster leader: lost ({why})", extra={"fence": token})

    def fenced(
        self, token: int, command: str, key: str | bytes, *args: str | int | float | bytes
    ) -> Any:
        name = command.upper()
        if name not in FENCED_COMMANDS and name != "CHECK":
            raise ValueError(
                f"{command} is not a fenced write; use one of {sorted(FENCED_COMMANDS)}"
            )
        ok, result = self._fenced(
            keys=[self.lease_key, self.fence_key, key], args=[self.owner, token, name, *args]
        )
        if not ok:
            self._lost("a fenced commit was refused")
            raise LostLease(
                f"fencing token {token} of {self.replica_id} no longer holds the lease: "
                "another replica leads now, so this job's commit was refused"
            )
        return result

    def release(self) -> None:
        with self._lock:
            token, self._token = self._token, None
        if token is None:
            return
        try:
            self._release(keys=[self.lease_key], args=[self.owner])
            log.info("cluster leader: released", extra={"fence": token})
        except redis.RedisError as exc:
            log.warning("cluster leader: could not release; it expires by itself", exc_info=exc)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.tick())

    # ------------------------------------------------------------------ jobs

    def run_if_leader(self, job: str, fn: Callable[[], object]) -> object:
        """Run ``fn`` as a term of this replica's leadership, or raise NotLeader.

        The run's start and end go to a bounded Redis Stream (``runs``) through the fence,
        so the cluster's job history is in one place and a run of a lost term cannot even
        record its end. While ``fn`` runs, ``current_fence()`` gives it the fence for its own
        commits."""
        fence = self.fence()
        if fence is None:
            holder = self._holder
            raise NotLeader(
                f"{holder} leads" if holder and holder != self.replica_id else "no lease held"
            )
        run_id = uuid.uuid4().hex
        try:
            self._record(fence, job, run_id, "start", True)
        except LostLease as exc:
            raise NotLeader(str(exc)) from exc
        except redis.RedisError as exc:
            self._outage.failed(exc)
            raise NotLeader("Redis unreachable") from exc
        reset = _CURRENT.set(fence)
        try:
            result = fn()
        except Exception:
            try:
                self._record(fence, job, run_id, "end", False)
            except (LostLease, redis.RedisError):
                log.warning("could not record a failed cluster job run", extra={"job": job})
            raise
        finally:
            _CURRENT.reset(reset)
        self._record(fence, job, run_id, "end", True)
        return result

    def _record(self, fence: Fence, job: str, run_id: str, phase: str, ok: bool) -> None:
        fence.call(
            "XADD",
            self.runs_key,
            "MAXLEN",
            "~",
            self._settings.runs_maxlen,
            "*",
            "job",
            job,
            "run",
            run_id,
            "phase",
            phase,
            "ok",
            int(ok),
            "replica",
            self.replica_id,
            "fence",
            fence.token,
            "at_us",
            time.time_ns() // 1000,
        )


def _replica_of(owner: object) -> str | None:
    if isinstance(owner, bytes):
        owner = owner.decode()
    if not isinstance(owner, str):
        return None
    return owner.rpartition(":")[0] or owner
