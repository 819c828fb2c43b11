"""A daemon's membership in the cluster: its event bridge, its leader lease, and its share of
the access log."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from memos.cluster.connection import default_replica_id, open_client
from memos.cluster.leader import LeaderLease
from memos.cluster.stream import EventBridge
from memos.config import ActivationSettings, ClusterSettings
from memos.events import EventHub

if TYPE_CHECKING:
    from memos.cluster.accesses import AccessLog, RedisEvictor
    from memos.manager import TierManager
    from memos.tiers.activation.levels.redis import RedisLevel

log = logging.getLogger(__name__)


class ClusterNode:
    """Starts without Redis too: the bridge and the lease keep retrying in the background, and
    the daemon serves its own clients meanwhile."""

    def __init__(self, redis_url: str, settings: ClusterSettings, hub: EventHub) -> None:
        self.replica_id = settings.replica_id or default_replica_id()
        self._ops = open_client(redis_url, settings)
        self._reader = open_client(redis_url, settings, blocking_ms=settings.read_block_ms)
        self.bridge = EventBridge(self._ops, self._reader, hub, self.replica_id, settings)
        self.leader = LeaderLease(self._ops, self.replica_id, settings)
        self.accesses: AccessLog | None = None
        self._settings = settings

    def start(self) -> None:
        self.bridge.start()
        self.leader.start()
        log.info("cluster mode", extra={"replica": self.replica_id})

    def share_accesses(self, manager: TierManager | None, level: RedisLevel | None) -> AccessLog:
        """Publish this replica's page requests and Redis-level accesses to the cluster's
        access log, and feed the other replicas' page requests to ``manager``."""
        from memos.cluster.accesses import AccessLog

        self.accesses = AccessLog(self._ops, self._reader, self.replica_id, self._settings)
        self.accesses.attach(manager, level)
        self.accesses.start()
        return self.accesses

    def redis_evictor(
        self, level: RedisLevel | None, activation: ActivationSettings
    ) -> RedisEvictor | None:
        """The Redis level's evictor (a cluster-wide job), unless there is no Redis level or
        ``activation.redis_policy`` leaves eviction to Redis's maxmemory."""
        if level is None or not activation.redis_policy:
            return None
        from memos.cluster.accesses import RedisEvictor

        return RedisEvictor(self._ops, level, self._settings, activation)

    def close(self) -> None:
        """Release the lease (so another replica takes over at once) and stop the bridge."""
        self.leader.close()
        if self.accesses is not None:
            self.accesses.close()
        self.bridge.close()
        self._ops.close()
        self._reader.close()
