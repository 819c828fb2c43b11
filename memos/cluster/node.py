"""A daemon's membership in the cluster: its event bridge and its leader lease."""

from __future__ import annotations

import logging

from memos.cluster.connection import default_replica_id, open_client
from memos.cluster.leader import LeaderLease
from memos.cluster.stream import EventBridge
from memos.config import ClusterSettings
from memos.events import EventHub

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

    def start(self) -> None:
        self.bridge.start()
        self.leader.start()
        log.info("cluster mode", extra={"replica": self.replica_id})

    def close(self) -> None:
        """Release the lease (so another replica takes over at once) and stop the bridge."""
        self.leader.close()
        self.bridge.close()
        self._ops.close()
        self._reader.close()
